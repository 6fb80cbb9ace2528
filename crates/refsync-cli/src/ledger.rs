//! `refsync ledger ...`: the embedded referral ledger from the command line (campaigns, users,
//! manual qualification, rewards).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::table::table;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use refsync::{ErrorKind, NewUser, ReferralKey, ReferrerRef, RewardStatus};
use refsync_ledger::{
    Campaign, DEFAULT_DATABASE_URL, Ledger, ListQuery, Metric, NewCampaign, NewRewardRule,
    Qualification, Recipient, RewardQuery, RewardRecord, RewardRule, Trigger, User,
    redact_database_url, status_str,
};

/// The environment variable that gives `--db` its default (so a PostgreSQL password need not
/// be on the command line).
pub(crate) const DB_ENV: &str = "REFSYNC_LEDGER_DB";

/// `refsync ledger`.
#[derive(Debug, Args)]
pub(crate) struct LedgerArgs {
    /// The ledger database: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB [env:
    /// REFSYNC_LEDGER_DB; default: sqlite://refsync-ledger.db]. Only `campaign create` creates
    /// a missing SQLite file; every other command needs an existing ledger. The password is
    /// never printed.
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Create a campaign, add reward rules or coupons to it.
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// List the campaigns with their reward rules and coupon pools.
    Campaigns,
    /// Add a user (a Person Referring, or with a referrer a Person Invited).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List users: who referred whom, qualified date, rewards (the "Users tab").
    Users {
        /// Only this campaign.
        #[arg(long)]
        campaign: Option<i64>,
    },
    /// Qualify a referral (once: later calls report "already qualified").
    Qualify(KeyArgs),
    /// Revert a qualification (a refund): due rewards it made are cancelled.
    Unqualify(KeyArgs),
    /// List rewards (all, or only due / issued).
    Rewards {
        /// Only rewards due.
        #[arg(long, conflicts_with = "issued")]
        due: bool,
        /// Only issued rewards.
        #[arg(long)]
        issued: bool,
        /// Only this campaign.
        #[arg(long)]
        campaign: Option<i64>,
    },
    /// Issue or cancel a due reward.
    Reward {
        #[command(subcommand)]
        command: RewardCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CampaignCommand {
    /// Create a campaign.
    Create {
        /// Campaign name.
        #[arg(long)]
        name: String,
        /// Base of the referral links: users get <URL>/<code>.
        #[arg(long = "link-base", value_name = "URL")]
        link_base: Option<String>,
    },
    /// Add a reward rule to a campaign.
    RewardRule {
        /// Campaign id.
        #[arg(long)]
        campaign: i64,
        /// Who receives the reward.
        #[arg(long, value_enum)]
        recipient: RecipientArg,
        /// When it becomes due.
        #[arg(long, value_enum, default_value = "when-qualified")]
        trigger: TriggerArg,
        /// What kind of reward.
        #[arg(long, value_enum)]
        metric: MetricArg,
        /// An integer for amount/commission, a code for coupon, a description for custom.
        #[arg(long)]
        value: String,
        /// At most this many referrals of one referrer earn it.
        #[arg(long, value_name = "N")]
        cap: Option<i64>,
    },
    /// Manage a campaign's coupon pool.
    Coupons {
        #[command(subcommand)]
        command: CouponCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CouponCommand {
    /// Add coupon codes: each argument is a code, or a file of codes (one per line or
    /// separated by commas), or `-` for standard input.
    Add {
        /// Campaign id.
        #[arg(long)]
        campaign: i64,
        /// Codes, files or `-`.
        #[arg(required = true, value_name = "FILE|CODE")]
        codes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        /// Campaign id.
        #[arg(long)]
        campaign: i64,
        /// First name.
        #[arg(long = "first-name")]
        first_name: String,
        /// Email (one user per email per campaign).
        #[arg(long)]
        email: String,
        /// Referred by the user with this code.
        #[arg(long = "referrer-code", conflicts_with_all = ["referrer_email", "referrer_id"])]
        referrer_code: Option<String>,
        /// Referred by the user with this email.
        #[arg(long = "referrer-email", conflicts_with = "referrer_id")]
        referrer_email: Option<String>,
        /// Referred by the user with this id.
        #[arg(long = "referrer-id")]
        referrer_id: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum RewardCommand {
    /// Issue a due reward.
    Issue {
        /// Reward id.
        id: i64,
    },
    /// Cancel a due reward.
    Cancel {
        /// Reward id.
        id: i64,
    },
}

/// Which referral: exactly one of --code, --email (with --campaign), --id, --coupon.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").required(true).multiple(false).args(["code", "email", "id", "coupon"])))]
struct KeyArgs {
    /// The referral code.
    #[arg(long)]
    code: Option<String>,
    /// The email (with --campaign).
    #[arg(long, requires = "campaign")]
    email: Option<String>,
    /// The user id.
    #[arg(long)]
    id: Option<i64>,
    /// A coupon assigned to the user.
    #[arg(long)]
    coupon: Option<String>,
    /// Campaign id (for --email).
    #[arg(long)]
    campaign: Option<i64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RecipientArg {
    Referrer,
    Invited,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TriggerArg {
    WhenInvited,
    WhenQualified,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricArg {
    Amount,
    Commission,
    Coupon,
    Custom,
}

/// A failure: exit code and one-line message.
type Failure = (u8, String);

fn fail(e: &refsync::Error) -> Failure {
    let code = match e.kind() {
        ErrorKind::Config => 2,
        _ => 1,
    };
    let message = match e.kind() {
        ErrorKind::Validation | ErrorKind::Conflict | ErrorKind::NotFound | ErrorKind::Config => {
            e.message().to_owned()
        }
        _ => e.to_string(),
    };
    (code, message)
}

/// Runs `refsync ledger ...`.
pub(crate) fn run(args: LedgerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("refsync ledger: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("refsync ledger: {}", message.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}

/// The database URL: `--db`, else `$REFSYNC_LEDGER_DB`, else the default file.
fn database_url(db: Option<String>) -> String {
    db.filter(|u| !u.trim().is_empty())
        .or_else(|| std::env::var(DB_ENV).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Whether `command` may create a missing ledger: only `campaign create`, the first write of a
/// new ledger (every other command needs a campaign, a user or a reward that would not be
/// there, and reading must not leave an empty database behind a mistyped path).
fn creates_ledger(command: &LedgerCommand) -> bool {
    matches!(
        command,
        LedgerCommand::Campaign {
            command: CampaignCommand::Create { .. }
        }
    )
}

async fn execute(args: LedgerArgs) -> Result<String, Failure> {
    let url = database_url(args.db);
    let opened = if creates_ledger(&args.command) {
        Ledger::open(&url).await
    } else {
        Ledger::open_existing(&url).await
    };
    let ledger = opened.map_err(|e| match e.kind() {
        // A missing SQLite file (the message names it): say how to create one. SQLite URLs
        // carry no password; redact anyway.
        ErrorKind::NotFound => (
            1,
            format!(
                "{}; create the ledger with `refsync ledger --db {} campaign create --name NAME`, or point --db (or {DB_ENV}) at an existing one",
                e.message(),
                redact_database_url(&url)
            ),
        ),
        _ => fail(&e),
    })?;
    let out = command(&ledger, args.command).await;
    ledger.close().await;
    out
}

/// Fails with "no campaign N" unless campaign `id` exists.
async fn require_campaign(l: &Ledger, id: Option<i64>) -> Result<(), Failure> {
    if let Some(id) = id {
        if l.campaign(id).await.map_err(|e| fail(&e))?.is_none() {
            return Err((
                1,
                format!("no campaign {id} (`refsync ledger campaigns` lists them)"),
            ));
        }
    }
    Ok(())
}

async fn command(l: &Ledger, command: LedgerCommand) -> Result<String, Failure> {
    let e = |e: refsync::Error| fail(&e);
    match command {
        LedgerCommand::Campaign { command } => match command {
            CampaignCommand::Create { name, link_base } => {
                let c = l
                    .create_campaign(&NewCampaign {
                        name,
                        link_base_url: link_base,
                    })
                    .await
                    .map_err(e)?;
                Ok(format!(
                    "created campaign {} {:?}{}\n",
                    c.id,
                    c.name,
                    c.link_base_url
                        .as_deref()
                        .map(|b| format!(" (referral links {b}/<code>)"))
                        .unwrap_or_default()
                ))
            }
            CampaignCommand::RewardRule {
                campaign,
                recipient,
                trigger,
                metric,
                value,
                cap,
            } => {
                let r = l
                    .add_reward_rule(
                        campaign,
                        &NewRewardRule {
                            recipient: match recipient {
                                RecipientArg::Referrer => Recipient::Referrer,
                                RecipientArg::Invited => Recipient::Invited,
                                RecipientArg::Both => Recipient::Both,
                            },
                            trigger: match trigger {
                                TriggerArg::WhenInvited => Trigger::WhenInvited,
                                TriggerArg::WhenQualified => Trigger::WhenQualified,
                            },
                            metric: match metric {
                                MetricArg::Amount => Metric::Amount,
                                MetricArg::Commission => Metric::Commission,
                                MetricArg::Coupon => Metric::Coupon,
                                MetricArg::Custom => Metric::Custom,
                            },
                            value,
                            cap_per_referrer: cap,
                        },
                    )
                    .await
                    .map_err(e)?;
                Ok(format!(
                    "added reward rule {} to campaign {campaign}: {}\n",
                    r.id,
                    describe_rule(&r)
                ))
            }
            CampaignCommand::Coupons {
                command: CouponCommand::Add { campaign, codes },
            } => {
                let codes = read_codes(&codes)?;
                let batch = l.add_coupons(campaign, &codes).await.map_err(e)?;
                let stats = l.coupon_stats(campaign).await.map_err(e)?;
                let mut out = format!(
                    "added {} coupon(s) to campaign {campaign}; {} unused of {}\n",
                    batch.added,
                    stats.unused(),
                    stats.total
                );
                if !batch.duplicates.is_empty() {
                    out.push_str(&format!(
                        "skipped {} already present: {}\n",
                        batch.duplicates.len(),
                        batch.duplicates.join(", ")
                    ));
                }
                Ok(out)
            }
        },
        LedgerCommand::Campaigns => campaigns(l).await.map_err(e),
        LedgerCommand::User {
            command:
                UserCommand::Add {
                    campaign,
                    first_name,
                    email,
                    referrer_code,
                    referrer_email,
                    referrer_id,
                },
        } => {
            let referrer = match (referrer_code, referrer_email, referrer_id) {
                (Some(c), _, _) => Some(ReferrerRef::Code(c)),
                (_, Some(m), _) => Some(ReferrerRef::Email(m)),
                (_, _, Some(i)) => Some(ReferrerRef::Id(i.to_string())),
                _ => None,
            };
            let u = l
                .add_user_with_source(
                    &NewUser {
                        campaign_id: campaign.to_string(),
                        first_name,
                        email,
                        referrer,
                        meta: Default::default(),
                        notify: false,
                    },
                    "Added",
                )
                .await
                .map_err(e)?;
            let mut out = format!(
                "added user {} ({}): {} <{}>, code {}",
                u.id,
                u.user_type.label(),
                u.first_name,
                u.email,
                u.code
            );
            if let Some(url) = &u.url {
                out.push_str(&format!(", link {url}"));
            }
            if let Some(r) = u.referrer_id {
                let name = match l.user_by_id(r).await.map_err(e)? {
                    Some(r) => person(&r),
                    None => format!("user {r}"),
                };
                out.push_str(&format!(", referred by {name}"));
            }
            if let Some(c) = &u.coupon {
                out.push_str(&format!(", coupon {c}"));
            }
            out.push('\n');
            if u.referrer_id.is_some() && u.coupon.is_none() {
                let stats = l.coupon_stats(campaign).await.map_err(e)?;
                if stats.total > 0 {
                    out.push_str(&format!(
                        "warning: campaign {campaign}'s coupon pool is exhausted ({} of {} assigned); add more with `refsync ledger campaign coupons add`\n",
                        stats.assigned, stats.total
                    ));
                }
            }
            Ok(out)
        }
        LedgerCommand::Users { campaign } => {
            require_campaign(l, campaign).await?;
            users(l, campaign).await.map_err(e)
        }
        LedgerCommand::Qualify(key) => {
            let q = l.qualify(&referral_key(&key)).await.map_err(e)?;
            Ok(describe_qualification(l, &q).await)
        }
        LedgerCommand::Unqualify(key) => {
            let q = l.unqualify(&referral_key(&key)).await.map_err(e)?;
            Ok(describe_qualification(l, &q).await)
        }
        LedgerCommand::Rewards {
            due,
            issued,
            campaign,
        } => {
            let status = if due {
                Some(RewardStatus::Due)
            } else if issued {
                Some(RewardStatus::Issued)
            } else {
                None
            };
            require_campaign(l, campaign).await?;
            rewards(l, status, campaign).await.map_err(e)
        }
        LedgerCommand::Reward { command } => {
            let (r, verb) = match command {
                RewardCommand::Issue { id } => (l.issue_reward(id).await.map_err(e)?, "issued"),
                RewardCommand::Cancel { id } => {
                    (l.cancel_reward(id).await.map_err(e)?, "cancelled")
                }
            };
            let to = match l.user_by_id(r.recipient_id).await.map_err(e)? {
                Some(u) => person(&u),
                None => format!("user {}", r.recipient_id),
            };
            Ok(format!(
                "{verb} reward {}: {} to {to}\n",
                r.id,
                r.describe()
            ))
        }
    }
}

fn referral_key(k: &KeyArgs) -> ReferralKey {
    if let Some(code) = &k.code {
        ReferralKey::Code { code: code.clone() }
    } else if let Some(email) = &k.email {
        ReferralKey::Email {
            email: email.clone(),
            campaign: k.campaign.map(|c| c.to_string()).unwrap_or_default(),
        }
    } else if let Some(id) = k.id {
        ReferralKey::Id { id: id.to_string() }
    } else {
        ReferralKey::Coupon {
            coupon: k.coupon.clone().unwrap_or_default(),
        }
    }
}

fn read_codes(args: &[String]) -> Result<Vec<String>, Failure> {
    let mut codes = Vec::new();
    let mut split = |text: &str| {
        codes.extend(
            text.split(['\n', ',', '\r'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    };
    for a in args {
        if a == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| (1, format!("reading standard input: {e}")))?;
            split(&text);
        } else if Path::new(a).is_file() {
            let text =
                std::fs::read_to_string(a).map_err(|e| (1, format!("cannot read {a}: {e}")))?;
            split(&text);
        } else {
            split(a);
        }
    }
    if codes.is_empty() {
        return Err((2, "no coupon codes given".to_owned()));
    }
    Ok(codes)
}

fn person(u: &User) -> String {
    format!("{} <{}>", u.first_name, u.email)
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn describe_rule(r: &RewardRule) -> String {
    let what = match (r.metric, r.amount, &r.value) {
        (m, Some(a), _) => format!("{m} {a}"),
        (m, None, Some(v)) => format!("{m} {v}"),
        (m, None, None) => m.to_string(),
    };
    let who = match r.recipient {
        Recipient::Referrer => "referrer gets",
        Recipient::Invited => "invited user gets",
        Recipient::Both => "referrer and invited user each get",
    };
    let when = match r.trigger {
        Trigger::WhenInvited => "when invited",
        Trigger::WhenQualified => "when qualified",
    };
    let cap = r
        .cap_per_referrer
        .map(|c| format!(" (at most {c} referrals per referrer)"))
        .unwrap_or_default();
    format!("{who} {what} {when}{cap}")
}

fn describe_reward(r: &RewardRecord, names: &HashMap<i64, String>) -> String {
    let to = names
        .get(&r.recipient_id)
        .cloned()
        .unwrap_or_else(|| format!("user {}", r.recipient_id));
    format!("{} for {to} (reward {})", r.describe(), r.id)
}

async fn describe_qualification(l: &Ledger, q: &Qualification) -> String {
    match q {
        Qualification::Qualified { user, rewards } => {
            let mut names = HashMap::new();
            for r in rewards {
                if let std::collections::hash_map::Entry::Vacant(v) = names.entry(r.recipient_id) {
                    if let Ok(Some(u)) = l.user_by_id(r.recipient_id).await {
                        v.insert(person(&u));
                    }
                }
            }
            let due = if rewards.is_empty() {
                "no rewards due".to_owned()
            } else {
                format!(
                    "rewards due: {}",
                    rewards
                        .iter()
                        .map(|r| describe_reward(r, &names))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            format!(
                "qualified user {} ({}) at {}; {due}\n",
                user.id,
                person(user),
                user.qualified_at.map(date).unwrap_or_default()
            )
        }
        Qualification::AlreadyQualified { user } => format!(
            "already qualified: user {} ({}) qualified at {}; nothing changed\n",
            user.id,
            person(user),
            user.qualified_at.map(date).unwrap_or_default()
        ),
        Qualification::Unqualified { user, cancelled } => format!(
            "unqualified user {} ({}); {} due reward(s) cancelled\n",
            user.id,
            person(user),
            cancelled.len()
        ),
        Qualification::NotQualified { user } => format!(
            "not qualified: user {} ({}) is pending; nothing changed\n",
            user.id,
            person(user)
        ),
        Qualification::Ignored { reason } => format!("ignored: {reason}\n"),
    }
}

async fn campaigns(l: &Ledger) -> refsync::Result<String> {
    let list: Vec<Campaign> = l.campaigns().await?;
    if list.is_empty() {
        return Ok(
            "no campaigns yet: create one with `refsync ledger campaign create --name NAME`\n"
                .to_owned(),
        );
    }
    let mut rows = vec![vec![
        "ID".to_owned(),
        "NAME".to_owned(),
        "LINK BASE".to_owned(),
        "USERS".to_owned(),
        "COUPONS (UNUSED/TOTAL)".to_owned(),
        "REWARD RULES".to_owned(),
    ]];
    for c in &list {
        let users = l
            .users(
                Some(c.id),
                &ListQuery {
                    page: Some(refsync_ledger::Pagination {
                        page: 1,
                        per_page: 1,
                    }),
                    ..ListQuery::default()
                },
            )
            .await?
            .total;
        let stats = l.coupon_stats(c.id).await?;
        let rules = l.reward_rules(c.id).await?;
        rows.push(vec![
            c.id.to_string(),
            c.name.clone(),
            c.link_base_url.clone().unwrap_or_else(|| "-".into()),
            users.to_string(),
            format!("{}/{}", stats.unused(), stats.total),
            if rules.is_empty() {
                "-".into()
            } else {
                rules
                    .iter()
                    .map(|r| format!("#{} {}", r.id, describe_rule(r)))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ]);
    }
    Ok(table(&rows))
}

pub(crate) async fn users(l: &Ledger, campaign: Option<i64>) -> refsync::Result<String> {
    let page = l.users(campaign, &ListQuery::default()).await?;
    if page.items.is_empty() {
        return Ok("no users\n".to_owned());
    }
    let mut by_id: HashMap<i64, User> = page.items.iter().map(|u| (u.id, u.clone())).collect();
    for id in page.items.iter().filter_map(|u| u.referrer_id) {
        if let std::collections::hash_map::Entry::Vacant(v) = by_id.entry(id) {
            if let Some(u) = l.user_by_id(id).await? {
                v.insert(u);
            }
        }
    }
    let ids: Vec<i64> = page.items.iter().map(|u| u.id).collect();
    let rewards = l.rewards_involving(&ids).await?;
    let mut rows = vec![vec![
        "ID".to_owned(),
        "NAME".to_owned(),
        "EMAIL".to_owned(),
        "CODE".to_owned(),
        "TYPE".to_owned(),
        "REFERRED BY".to_owned(),
        "QUALIFIED".to_owned(),
        "COUPON".to_owned(),
        "REWARDS".to_owned(),
    ]];
    for u in &page.items {
        let referred_by = u
            .referrer_id
            .map(|r| by_id.get(&r).map_or_else(|| format!("user {r}"), person))
            .unwrap_or_else(|| "-".into());
        let qualified = match (u.qualified_at, u.referrer_id) {
            (Some(t), _) => date(t),
            (None, Some(_)) => "pending".into(),
            (None, None) => "-".into(),
        };
        let mine: Vec<String> = rewards
            .iter()
            .filter(|r| r.recipient_id == u.id)
            .map(|r| {
                let mut s = format!("{} {}", r.describe(), status_str(r.status));
                if r.referral_id != u.id {
                    s.push_str(&format!(" (referral {})", r.referral_id));
                }
                s
            })
            .collect();
        rows.push(vec![
            u.id.to_string(),
            u.first_name.clone(),
            u.email.clone(),
            u.code.clone(),
            u.user_type.label().to_owned(),
            referred_by,
            qualified,
            u.coupon.clone().unwrap_or_else(|| "-".into()),
            if mine.is_empty() {
                "-".into()
            } else {
                mine.join("; ")
            },
        ]);
    }
    Ok(table(&rows))
}

pub(crate) async fn rewards(
    l: &Ledger,
    status: Option<RewardStatus>,
    campaign: Option<i64>,
) -> refsync::Result<String> {
    let page = l
        .rewards(&RewardQuery {
            status,
            campaign_id: campaign,
            ..RewardQuery::default()
        })
        .await?;
    if page.items.is_empty() {
        return Ok(match status {
            Some(s) => format!("no {} rewards\n", status_str(s)),
            None => "no rewards\n".to_owned(),
        });
    }
    let mut names: HashMap<i64, String> = HashMap::new();
    for id in page
        .items
        .iter()
        .flat_map(|r| [r.recipient_id, r.referral_id])
    {
        if let std::collections::hash_map::Entry::Vacant(v) = names.entry(id) {
            if let Some(u) = l.user_by_id(id).await? {
                v.insert(person(&u));
            }
        }
    }
    let name = |id: i64| {
        names
            .get(&id)
            .map_or_else(|| format!("user {id}"), |n| format!("{id} {n}"))
    };
    let mut rows = vec![vec![
        "ID".to_owned(),
        "RECIPIENT".to_owned(),
        "REFERRAL".to_owned(),
        "REWARD".to_owned(),
        "STATUS".to_owned(),
        "DUE SINCE".to_owned(),
        "ISSUED/CANCELLED".to_owned(),
    ]];
    for r in &page.items {
        rows.push(vec![
            r.id.to_string(),
            name(r.recipient_id),
            name(r.referral_id),
            r.describe(),
            status_str(r.status).to_owned(),
            date(r.created_at),
            r.issued_at
                .or(r.cancelled_at)
                .map(date)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    Ok(table(&rows))
}
