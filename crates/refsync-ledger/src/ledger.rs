//! [`Ledger`]: the store and its operations.

use refsync_core::{Error, ErrorKind, NewUser, ReferralKey, ReferrerRef, Result, RewardStatus};
use serde::{Deserialize, Serialize};

use crate::db::{
    Arg, Backend, Db, Row, Tx, args, format_time, is_unique_violation_on, now, redact_url,
};
use crate::model::{
    Campaign, CouponBatch, CouponStats, ListQuery, MetaField, Metric, NewCampaign, NewRewardRule,
    Page, Qualification, QualificationRecord, Recipient, RewardQuery, RewardRecord, RewardRule,
    Trigger, User, UserType, field_error, invalid, parse_status, status_str,
};
use crate::normalize::{new_code, normalize_code, normalize_coupon, normalize_email};
use crate::query::{self, REWARD_FIELDS, USER_FIELDS};

/// The default database of the CLI and of the `ledger` platform settings.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://refsync-ledger.db";

/// Longest accepted name, email, code or value.
const MAX_TEXT: usize = 255;

/// Settings of the `ledger` platform (the `[platform.settings]` of a refsync config).
///
/// `Debug` shows the database URL without its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// `sqlite://PATH` (created if missing), `sqlite::memory:` or `postgres://...`.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Default base of referral links for campaigns created without one
    /// (`https://example.com/r` gives links `https://example.com/r/<code>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_base_url: Option<String>,
}

fn default_database_url() -> String {
    DEFAULT_DATABASE_URL.to_owned()
}

impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSettings")
            .field("database_url", &redact_url(&self.database_url))
            .field("link_base_url", &self.link_base_url)
            .finish()
    }
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            database_url: default_database_url(),
            link_base_url: None,
        }
    }
}

/// The embedded referral ledger: campaigns, users (Person Referring / Person Invited),
/// exactly-once qualification, reward rules and rewards, coupons.
///
/// Cheap to clone (the clones share one connection pool). Every write is one database
/// transaction; a qualification is a single conditional `UPDATE ... WHERE qualified_at IS
/// NULL` in the transaction that also makes its rewards due, and rewards are unique per rule,
/// recipient and referral, so repeated and concurrent qualify calls — from any number of
/// processes sharing the database — give one qualification and one set of rewards.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
    link_base_url: Option<String>,
}

const USER_COLUMNS: &str = "u.id, u.campaign_id, u.referrer_id, u.code, u.first_name, u.email, \
     u.user_type, u.source, u.meta, u.signed_up_at, u.qualified_at, c.link_base_url, \
     (SELECT cp.code FROM coupons cp WHERE cp.user_id = u.id) AS coupon";
const USER_FROM: &str = "FROM users u JOIN campaigns c ON c.id = u.campaign_id";
/// A lookup by email: exactly that email (`$1`, trimmed by the caller) without case, in campaign
/// `$2` (served by the index `users_campaign_email_lower`). The normalized email is only the
/// uniqueness key and the self-referral check, never a lookup key.
const EMAIL_MATCH_U: &str = "LOWER(u.email) = LOWER($1) AND u.campaign_id = $2";
const EMAIL_MATCH_FROM: &str =
    "FROM users u WHERE LOWER(u.email) = LOWER($1) AND u.campaign_id = $2";
const REWARD_COLUMNS: &str = "r.id, r.rule_id, r.campaign_id, r.recipient_id, r.referral_id, \
     r.referrer_id, r.trigger_event, r.metric, r.amount, r.value, r.status, r.created_at, \
     r.issued_at, r.cancelled_at, r.cancel_reason";
/// The same columns for `RETURNING` (no table alias there).
const REWARD_RETURNING: &str = "id, rule_id, campaign_id, recipient_id, referral_id, \
     referrer_id, trigger_event, metric, amount, value, status, created_at, issued_at, \
     cancelled_at, cancel_reason";
const RULE_COLUMNS: &str =
    "id, campaign_id, recipient, trigger_event, metric, amount, value, cap_per_referrer";

/// What a referral key resolves to.
enum Target {
    /// This user (and the coupon that named it, if any).
    User { id: i64, coupon_id: Option<i64> },
    /// No such user: a NotFound error.
    Unknown(String),
    /// A coupon this ledger did not issue: ignored.
    Ignored(String),
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger at `url`: `sqlite://PATH` (the file
    /// is created on first use; WAL journal, foreign keys on, busy timeout), `sqlite::memory:`
    /// or `postgres://user:password@host/db` (feature `postgres`).
    pub async fn open(url: &str) -> Result<Ledger> {
        Ok(Ledger {
            db: Db::open(url, true).await?,
            link_base_url: None,
        })
    }

    /// Like [`Ledger::open`], but never creates a SQLite file: a missing one is a
    /// [`ErrorKind::NotFound`] error naming the path (for read-only tools, which should not
    /// leave an empty ledger behind a mistyped path). PostgreSQL and in-memory URLs open as
    /// with [`Ledger::open`].
    pub async fn open_existing(url: &str) -> Result<Ledger> {
        Ok(Ledger {
            db: Db::open(url, false).await?,
            link_base_url: None,
        })
    }

    /// Opens the ledger described by `settings`.
    pub async fn from_settings(settings: &LedgerSettings) -> Result<Ledger> {
        let link_base_url = match &settings.link_base_url {
            Some(u) => Some(check_link_base(u)?),
            None => None,
        };
        Ok(Ledger::open(&settings.database_url)
            .await?
            .with_link_base_url(link_base_url))
    }

    /// Sets the default link base of campaigns created without one.
    #[must_use]
    pub fn with_link_base_url(mut self, link_base_url: Option<String>) -> Self {
        self.link_base_url = link_base_url.map(|u| u.trim().trim_end_matches('/').to_owned());
        self
    }

    /// Which database backs this ledger.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Closes the connection pool (waits for checked-out connections).
    pub async fn close(&self) {
        self.db.close().await;
    }

    // ----- campaigns -------------------------------------------------------------------

    /// Creates a campaign.
    pub async fn create_campaign(&self, campaign: &NewCampaign) -> Result<Campaign> {
        let name = required_text("name", &campaign.name)?;
        let link = match campaign
            .link_base_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(u) => Some(check_link_base(u)?),
            None => self.link_base_url.clone(),
        };
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_one(
                "INSERT INTO campaigns (name, link_base_url, created_at) VALUES ($1, $2, $3) \
                 RETURNING id, name, link_base_url, created_at",
                &args![name, link, format_time(now())],
            )
            .await?;
        let c = campaign_from_row(&row)?;
        tx.commit().await?;
        tracing::info!(campaign = c.id, name = %c.name, "ledger: campaign created");
        Ok(c)
    }

    /// The campaign `id`.
    pub async fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        self.db
            .fetch_optional(
                "SELECT id, name, link_base_url, created_at FROM campaigns WHERE id = $1",
                &args![id],
            )
            .await?
            .as_ref()
            .map(campaign_from_row)
            .transpose()
    }

    /// Every campaign, oldest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        self.db
            .fetch_all(
                "SELECT id, name, link_base_url, created_at FROM campaigns ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(campaign_from_row)
            .collect()
    }

    /// Adds a reward rule to campaign `campaign_id`.
    pub async fn add_reward_rule(
        &self,
        campaign_id: i64,
        rule: &NewRewardRule,
    ) -> Result<RewardRule> {
        let (amount, value) = match rule.metric {
            Metric::Amount | Metric::Commission => {
                let v = rule.value.trim();
                let a: i64 = v.parse().map_err(|_| {
                    invalid(
                        "value",
                        format!(
                            "the value of a {} reward must be an integer (minor units or points), not {v:?}",
                            rule.metric
                        ),
                    )
                })?;
                if a < 0 {
                    return Err(invalid("value", "the value must not be negative"));
                }
                (Some(a), None)
            }
            Metric::Coupon | Metric::Custom => (None, Some(required_text("value", &rule.value)?)),
        };
        if let Some(cap) = rule.cap_per_referrer {
            if cap < 1 {
                return Err(invalid(
                    "cap_per_referrer",
                    "the cap must be at least 1 (leave it out for no cap)",
                ));
            }
        }
        let mut tx = self.db.begin().await?;
        require_campaign(&mut tx, campaign_id).await?;
        let row = tx
            .fetch_one(
                &format!(
                    "INSERT INTO reward_rules (campaign_id, recipient, trigger_event, metric, amount, value, cap_per_referrer, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {RULE_COLUMNS}"
                ),
                &args![
                    campaign_id,
                    rule.recipient.as_str(),
                    rule.trigger.as_str(),
                    rule.metric.as_str(),
                    amount,
                    value,
                    rule.cap_per_referrer,
                    format_time(now()),
                ],
            )
            .await?;
        let r = rule_from_row(&row)?;
        tx.commit().await?;
        Ok(r)
    }

    /// The reward rules of campaign `campaign_id`, in the order they were added.
    pub async fn reward_rules(&self, campaign_id: i64) -> Result<Vec<RewardRule>> {
        self.db
            .fetch_all(
                &format!(
                    "SELECT {RULE_COLUMNS} FROM reward_rules WHERE campaign_id = $1 ORDER BY id"
                ),
                &args![campaign_id],
            )
            .await?
            .iter()
            .map(rule_from_row)
            .collect()
    }

    /// Adds coupon codes to the pool of campaign `campaign_id`; they are assigned, oldest
    /// first, to new Person Invited users. Codes are unique across the ledger
    /// (case-insensitively): existing ones are skipped and reported.
    pub async fn add_coupons(&self, campaign_id: i64, codes: &[String]) -> Result<CouponBatch> {
        let mut clean = Vec::new();
        for c in codes {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            if c.chars().any(char::is_whitespace) || c.len() > MAX_TEXT {
                return Err(invalid(
                    "coupons",
                    format!("coupon {c:?} is not valid: no spaces, at most {MAX_TEXT} characters"),
                ));
            }
            clean.push(c.to_owned());
        }
        let mut tx = self.db.begin().await?;
        require_campaign(&mut tx, campaign_id).await?;
        let mut batch = CouponBatch::default();
        let created = format_time(now());
        for c in clean {
            let n = tx
                .execute(
                    "INSERT INTO coupons (campaign_id, code, code_normalized, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (code_normalized) DO NOTHING",
                    &args![campaign_id, c.as_str(), normalize_coupon(&c), created.as_str()],
                )
                .await?;
            if n == 0 {
                batch.duplicates.push(c);
            } else {
                batch.added += 1;
            }
        }
        tx.commit().await?;
        Ok(batch)
    }

    /// Coupon pool usage of campaign `campaign_id`.
    pub async fn coupon_stats(&self, campaign_id: i64) -> Result<CouponStats> {
        let row = self
            .db
            .fetch_one(
                "SELECT COUNT(*) AS total, COUNT(user_id) AS assigned, COUNT(redeemed_at) AS redeemed \
                 FROM coupons WHERE campaign_id = $1",
                &args![campaign_id],
            )
            .await?;
        Ok(CouponStats {
            total: row.int("total")?,
            assigned: row.int("assigned")?,
            redeemed: row.int("redeemed")?,
        })
    }

    // ----- users -----------------------------------------------------------------------

    /// Adds a user (source `Api`). With a referrer (by id, code or email — the exact email,
    /// without case — in the same campaign) the user is a Person Invited: the next unused
    /// coupon of the campaign is assigned and `when_invited` rewards become due.
    ///
    /// Errors: [`ErrorKind::Conflict`] "email already exists" when the campaign has a user
    /// with the same normalized email; [`ErrorKind::Validation`] for a missing field, an
    /// invalid email, an unknown campaign or referrer, and self-referral (the referrer's
    /// normalized email). Errors carry a [`crate::FieldError`] naming the field.
    pub async fn add_user(&self, user: &NewUser) -> Result<User> {
        self.add_user_with_source(user, "Api").await
    }

    /// [`Ledger::add_user`] with another source label (`Added` for the CLI...).
    pub async fn add_user_with_source(&self, user: &NewUser, source: &str) -> Result<User> {
        let first_name = required_text("first_name", &user.first_name)?;
        let email = required_text("email", &user.email)?;
        let normalized = normalize_email(&email)
            .ok_or_else(|| invalid("email", "The email must be a valid email address."))?;
        let campaign_id = parse_id(&user.campaign_id)
            .ok_or_else(|| invalid("campaign_id", "The selected campaign id is invalid."))?;
        let meta: Vec<MetaField> = user
            .meta
            .iter()
            .map(|(field, value)| MetaField {
                field: field.clone(),
                value: value.clone(),
            })
            .collect();
        let meta = serde_json::to_string(&meta)
            .map_err(|e| Error::unexpected(format!("meta does not serialize: {e}")))?;

        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .try_add_user(
                    user,
                    campaign_id,
                    &first_name,
                    &email,
                    &normalized,
                    &meta,
                    source,
                )
                .await
            {
                Err(e) if is_unique_violation_on(&e, "code") && attempts < 5 => continue,
                Err(e) if is_unique_violation_on(&e, "email") => {
                    return Err(email_exists());
                }
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_add_user(
        &self,
        user: &NewUser,
        campaign_id: i64,
        first_name: &str,
        email: &str,
        normalized: &str,
        meta: &str,
        source: &str,
    ) -> Result<User> {
        let mut tx = self.db.begin().await?;
        if tx
            .fetch_optional(
                "SELECT id FROM campaigns WHERE id = $1",
                &args![campaign_id],
            )
            .await?
            .is_none()
        {
            return Err(invalid(
                "campaign_id",
                format!("The selected campaign id is invalid: there is no campaign {campaign_id}."),
            ));
        }
        let referrer = match &user.referrer {
            None => None,
            Some(r) => Some(resolve_referrer(&mut tx, campaign_id, r).await?),
        };
        if let Some((_, referrer_email)) = &referrer {
            if referrer_email == normalized {
                return Err(invalid(
                    "email",
                    "Self-referral is not allowed: the email is the referrer's own (compared without case, +tags and Gmail dots).",
                ));
            }
        }
        if tx
            .fetch_optional(
                "SELECT id FROM users WHERE campaign_id = $1 AND email_normalized = $2",
                &args![campaign_id, normalized],
            )
            .await?
            .is_some()
        {
            return Err(email_exists());
        }
        let user_type = if referrer.is_some() {
            UserType::PersonInvited
        } else {
            UserType::PersonReferring
        };
        let at = now();
        let id = tx
            .fetch_one(
                "INSERT INTO users (campaign_id, referrer_id, code, first_name, email, email_normalized, user_type, source, meta, signed_up_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                &args![
                    campaign_id,
                    referrer.as_ref().map(|r| r.0),
                    new_code(),
                    first_name,
                    email,
                    normalized,
                    user_type.as_str(),
                    source,
                    meta,
                    format_time(at),
                ],
            )
            .await?
            .int("id")?;
        if let Some((referrer_id, _)) = referrer {
            let lock = match self.backend() {
                Backend::Postgres => " FOR UPDATE SKIP LOCKED",
                Backend::Sqlite => "",
            };
            let assigned = tx
                .execute(
                    &format!(
                        "UPDATE coupons SET user_id = $1, assigned_at = $2 WHERE id = \
                         (SELECT id FROM coupons WHERE campaign_id = $3 AND user_id IS NULL ORDER BY id LIMIT 1{lock})"
                    ),
                    &args![id, format_time(at), campaign_id],
                )
                .await?;
            if assigned == 0
                && tx
                    .fetch_optional(
                        "SELECT id FROM coupons WHERE campaign_id = $1 LIMIT 1",
                        &args![campaign_id],
                    )
                    .await?
                    .is_some()
            {
                tracing::warn!(
                    campaign = campaign_id,
                    user = id,
                    "ledger: the campaign's coupon pool is exhausted; the new user has no coupon"
                );
            }
            make_due(
                &mut tx,
                self.backend(),
                Trigger::WhenInvited,
                id,
                referrer_id,
                at,
            )
            .await?;
        }
        let created = load_user(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(
            user = id,
            campaign = campaign_id,
            kind = user_type.as_str(),
            "ledger: user added"
        );
        Ok(created)
    }

    /// The user with id `id`.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let row = self
            .db
            .fetch_optional(
                &format!("SELECT {USER_COLUMNS} {USER_FROM} WHERE u.id = $1"),
                &args![id],
            )
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user a referral key names (id, code, email in a campaign, or assigned coupon).
    ///
    /// An email matches exactly, without case (trimmed): `ann+crm@example.com` does not find
    /// `ann@example.com`, although the two are one person for the uniqueness check.
    pub async fn user(&self, key: &ReferralKey) -> Result<Option<User>> {
        let (cond, arg): (&str, Vec<Arg>) = match key {
            ReferralKey::Id { id } => match parse_id(id) {
                Some(id) => ("u.id = $1", args![id].to_vec()),
                None => return Ok(None),
            },
            ReferralKey::Code { code } => ("u.code = $1", args![normalize_code(code)].to_vec()),
            ReferralKey::Email { email, campaign } => match parse_id(campaign) {
                Some(c) => (EMAIL_MATCH_U, args![email.trim(), c].to_vec()),
                None => return Ok(None),
            },
            ReferralKey::Coupon { coupon } => (
                "u.id = (SELECT cp.user_id FROM coupons cp WHERE cp.code_normalized = $1)",
                args![normalize_coupon(coupon)].to_vec(),
            ),
        };
        let row = self
            .db
            .fetch_optional(
                &format!("SELECT {USER_COLUMNS} {USER_FROM} WHERE {cond}"),
                &arg,
            )
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Looks a user up by Referral Factory's `{identifier}`: an id (digits), an email
    /// (contains `@`; matched exactly without case; `campaign_id` needed when several campaigns
    /// have it) or a code.
    pub async fn find_user(
        &self,
        identifier: &str,
        campaign_id: Option<i64>,
    ) -> Result<Option<User>> {
        let identifier = identifier.trim();
        if let Some(id) = parse_id(identifier) {
            let user = self.user_by_id(id).await?;
            return Ok(user.filter(|u| campaign_id.is_none_or(|c| u.campaign_id == c)));
        }
        if identifier.contains('@') {
            // Exactly that email, without case (as Referral Factory matches it).
            let mut sql =
                format!("SELECT {USER_COLUMNS} {USER_FROM} WHERE LOWER(u.email) = LOWER($1)");
            let mut a = args![identifier].to_vec();
            if let Some(c) = campaign_id {
                sql.push_str(" AND u.campaign_id = $2");
                a.push(Arg::Int(c));
            }
            sql.push_str(" ORDER BY u.id LIMIT 2");
            let rows = self.db.fetch_all(&sql, &a).await?;
            if rows.len() > 1 {
                return Err(invalid(
                    "campaign_id",
                    "Several campaigns have a user with this email: give campaign_id.",
                ));
            }
            return rows.first().map(user_from_row).transpose();
        }
        let user = self
            .user(&ReferralKey::Code {
                code: identifier.to_owned(),
            })
            .await?;
        Ok(user.filter(|u| campaign_id.is_none_or(|c| u.campaign_id == c)))
    }

    /// Lists users (of one campaign, or all) with filters on `id, campaign_id, referrer_id,
    /// code, first_name, email, source, type, signed_up_at, qualified_at, coupon`, ordering and
    /// pagination.
    pub async fn users(&self, campaign_id: Option<i64>, list: &ListQuery) -> Result<Page<User>> {
        let mut q = query::Select::new(USER_FIELDS, "u.id");
        if let Some(c) = campaign_id {
            q.push_condition("u.campaign_id = {}", Arg::Int(c));
        }
        q.apply(list)?;
        let total = self
            .db
            .fetch_one(
                &format!("SELECT COUNT(*) AS n FROM users u{}", q.where_sql()),
                &q.args,
            )
            .await?
            .int("n")?;
        let (sql, args) = q.select_sql(&format!("SELECT {USER_COLUMNS} {USER_FROM}"), list);
        let items = self
            .db
            .fetch_all(&sql, &args)
            .await?
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, total, list))
    }

    // ----- qualification ---------------------------------------------------------------

    /// Qualifies the referral `key` names, once: the first call sets `qualified_at` and makes
    /// the campaign's `when_qualified` rewards due in the same transaction; later or
    /// concurrent calls answer [`Qualification::AlreadyQualified`] with the original time.
    ///
    /// An unknown id, code or email is a [`ErrorKind::NotFound`] error; an unknown (or
    /// unassigned) coupon is [`Qualification::Ignored`], as Referral Factory ignores coupons it
    /// did not issue. A Person Referring cannot qualify ([`ErrorKind::Validation`]).
    pub async fn qualify(&self, key: &ReferralKey) -> Result<Qualification> {
        let mut tx = self.db.begin().await?;
        let (id, coupon_id) = match resolve(&mut tx, key).await? {
            Target::User { id, coupon_id } => (id, coupon_id),
            Target::Unknown(msg) => return Err(Error::new(ErrorKind::NotFound, msg)),
            Target::Ignored(reason) => return Ok(Qualification::Ignored { reason }),
        };
        let row = tx
            .fetch_one(
                "SELECT user_type, referrer_id FROM users WHERE id = $1",
                &args![id],
            )
            .await?;
        let referrer_id = match (row.text("user_type")?.parse()?, row.opt_int("referrer_id")?) {
            (UserType::PersonInvited, Some(r)) => r,
            _ => {
                return Err(field_error(
                    ErrorKind::Validation,
                    key_field(key),
                    format!(
                        "user {id} is a Person Referring: only referred users (Person Invited) qualify"
                    ),
                ));
            }
        };
        let at = now();
        // The exactly-once step: only the first of any number of concurrent calls changes
        // the row (PostgreSQL re-checks the condition after waiting for the row lock; SQLite
        // runs write transactions one at a time).
        let changed = tx
            .execute(
                "UPDATE users SET qualified_at = $1 WHERE id = $2 AND qualified_at IS NULL",
                &args![format_time(at), id],
            )
            .await?;
        if changed == 0 {
            let user = load_user(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(Qualification::AlreadyQualified { user });
        }
        tx.execute(
            "INSERT INTO qualifications (user_id, qualified_at, via) VALUES ($1, $2, $3)",
            &args![id, format_time(at), key_field(key)],
        )
        .await?;
        if let Some(coupon_id) = coupon_id {
            tx.execute(
                "UPDATE coupons SET redeemed_at = $1 WHERE id = $2 AND redeemed_at IS NULL",
                &args![format_time(at), coupon_id],
            )
            .await?;
        }
        let rewards = make_due(
            &mut tx,
            self.backend(),
            Trigger::WhenQualified,
            id,
            referrer_id,
            at,
        )
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(
            user = id,
            via = key_field(key),
            rewards = rewards.len(),
            "ledger: referral qualified"
        );
        Ok(Qualification::Qualified { user, rewards })
    }

    /// Reverts a qualification (a refund): the user is pending again and the rewards its
    /// qualification made due are cancelled, unless already issued (issued rewards are never
    /// taken back). A later qualify makes the cancelled rewards due again.
    pub async fn unqualify(&self, key: &ReferralKey) -> Result<Qualification> {
        let mut tx = self.db.begin().await?;
        let id = match resolve(&mut tx, key).await? {
            Target::User { id, .. } => id,
            Target::Unknown(msg) => return Err(Error::new(ErrorKind::NotFound, msg)),
            Target::Ignored(reason) => return Ok(Qualification::Ignored { reason }),
        };
        let at = format_time(now());
        let changed = tx
            .execute(
                "UPDATE users SET qualified_at = NULL WHERE id = $1 AND qualified_at IS NOT NULL",
                &args![id],
            )
            .await?;
        if changed == 0 {
            let user = load_user(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(Qualification::NotQualified { user });
        }
        tx.execute(
            "UPDATE qualifications SET unqualified_at = $1 WHERE user_id = $2 AND unqualified_at IS NULL",
            &args![at.as_str(), id],
        )
        .await?;
        let cancelled = tx
            .fetch_all(
                &format!(
                    "UPDATE rewards SET status = 'cancelled', cancelled_at = $1, cancel_reason = 'unqualified' \
                     WHERE referral_id = $2 AND status = 'due' AND trigger_event = 'when_qualified' \
                     RETURNING {REWARD_RETURNING}"
                ),
                &args![at.as_str(), id],
            )
            .await?
            .iter()
            .map(reward_from_row)
            .collect::<Result<Vec<_>>>()?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(
            user = id,
            cancelled = cancelled.len(),
            "ledger: referral unqualified"
        );
        Ok(Qualification::Unqualified { user, cancelled })
    }

    /// The qualification history of user `user_id`, oldest first.
    pub async fn qualifications(&self, user_id: i64) -> Result<Vec<QualificationRecord>> {
        self.db
            .fetch_all(
                "SELECT id, user_id, qualified_at, via, unqualified_at FROM qualifications WHERE user_id = $1 ORDER BY id",
                &args![user_id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(QualificationRecord {
                    id: r.int("id")?,
                    user_id: r.int("user_id")?,
                    qualified_at: r.time("qualified_at")?,
                    via: r.text("via")?,
                    unqualified_at: r.opt_time("unqualified_at")?,
                })
            })
            .collect()
    }

    // ----- rewards ---------------------------------------------------------------------

    /// Lists rewards with filters on `id, reward_id, campaign_id, recipient_id, referral_id,
    /// referrer_id, metric, amount, coupon, value, status, trigger, created_at, issued_at,
    /// cancelled_at`, ordering and pagination.
    pub async fn rewards(&self, query: &RewardQuery) -> Result<Page<RewardRecord>> {
        let mut q = query::Select::new(REWARD_FIELDS, "r.id");
        if let Some(s) = query.status {
            q.push_condition("r.status = {}", Arg::Text(status_str(s).to_owned()));
        }
        if let Some(m) = query.metric {
            q.push_condition("r.metric = {}", Arg::Text(m.as_str().to_owned()));
        }
        if let Some(c) = query.campaign_id {
            q.push_condition("r.campaign_id = {}", Arg::Int(c));
        }
        if let Some(u) = query.user_id {
            q.push_condition2("(r.recipient_id = {} OR r.referral_id = {})", Arg::Int(u));
        }
        q.apply(&query.list)?;
        let total = self
            .db
            .fetch_one(
                &format!("SELECT COUNT(*) AS n FROM rewards r{}", q.where_sql()),
                &q.args,
            )
            .await?
            .int("n")?;
        let (sql, args) = q.select_sql(
            &format!("SELECT {REWARD_COLUMNS} FROM rewards r"),
            &query.list,
        );
        let items = self
            .db
            .fetch_all(&sql, &args)
            .await?
            .iter()
            .map(reward_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, total, &query.list))
    }

    /// Rewards received by, or made due by, any of `user_ids`, by id. Any number of ids: they
    /// travel as one JSON array parameter, not one parameter each (SQLite takes at most 32,766
    /// parameters, PostgreSQL 65,535).
    pub async fn rewards_involving(&self, user_ids: &[i64]) -> Result<Vec<RewardRecord>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = match self.backend() {
            Backend::Sqlite => "SELECT CAST(j.value AS INTEGER) FROM json_each($1) j",
            Backend::Postgres => {
                "SELECT CAST(j AS BIGINT) FROM jsonb_array_elements_text(CAST($1 AS JSONB)) j"
            }
        };
        let list = serde_json::to_string(user_ids)
            .map_err(|e| Error::unexpected(format!("user ids do not serialize: {e}")))?;
        self.db
            .fetch_all(
                &format!(
                    "SELECT {REWARD_COLUMNS} FROM rewards r WHERE r.recipient_id IN ({ids}) OR r.referral_id IN ({ids}) ORDER BY r.id"
                ),
                &args![list],
            )
            .await?
            .iter()
            .map(reward_from_row)
            .collect()
    }

    /// The reward `id`.
    pub async fn reward(&self, id: i64) -> Result<Option<RewardRecord>> {
        self.db
            .fetch_optional(
                &format!("SELECT {REWARD_COLUMNS} FROM rewards r WHERE r.id = $1"),
                &args![id],
            )
            .await?
            .as_ref()
            .map(reward_from_row)
            .transpose()
    }

    /// Issues a due reward. An issued reward is a [`ErrorKind::Conflict`]; a cancelled one
    /// a [`ErrorKind::Validation`] error; an unknown id [`ErrorKind::NotFound`].
    pub async fn issue_reward(&self, id: i64) -> Result<RewardRecord> {
        self.transition(id, RewardStatus::Issued).await
    }

    /// Cancels a due reward. A cancelled reward is a [`ErrorKind::Conflict`]; an issued one a
    /// [`ErrorKind::Validation`] error (issued rewards are not taken back); an unknown id
    /// [`ErrorKind::NotFound`].
    pub async fn cancel_reward(&self, id: i64) -> Result<RewardRecord> {
        self.transition(id, RewardStatus::Cancelled).await
    }

    async fn transition(&self, id: i64, to: RewardStatus) -> Result<RewardRecord> {
        let at = format_time(now());
        let sql = match to {
            RewardStatus::Issued => format!(
                "UPDATE rewards SET status = 'issued', issued_at = $1 WHERE id = $2 AND status = 'due' RETURNING {REWARD_RETURNING}"
            ),
            _ => format!(
                "UPDATE rewards SET status = 'cancelled', cancelled_at = $1, cancel_reason = 'cancelled' \
                 WHERE id = $2 AND status = 'due' RETURNING {REWARD_RETURNING}"
            ),
        };
        let mut tx = self.db.begin().await?;
        if let Some(row) = tx.fetch_optional(&sql, &args![at, id]).await? {
            let r = reward_from_row(&row)?;
            tx.commit().await?;
            tracing::info!(
                reward = id,
                status = status_str(to),
                "ledger: reward updated"
            );
            return Ok(r);
        }
        let current = tx
            .fetch_optional("SELECT status FROM rewards WHERE id = $1", &args![id])
            .await?;
        let Some(current) = current else {
            return Err(Error::new(ErrorKind::NotFound, format!("no reward {id}")));
        };
        let current = parse_status(&current.text("status")?)?;
        let verb = if to == RewardStatus::Issued {
            "issued"
        } else {
            "cancelled"
        };
        Err(if current == to {
            field_error(
                ErrorKind::Conflict,
                "id",
                format!("reward {id} is already {verb}"),
            )
        } else {
            field_error(
                ErrorKind::Validation,
                "id",
                format!(
                    "reward {id} is {} and cannot be {verb}: only due rewards can",
                    status_str(current)
                ),
            )
        })
    }
}

// ----- helpers ---------------------------------------------------------------------------

fn email_exists() -> Error {
    field_error(ErrorKind::Conflict, "email", "email already exists")
}

fn required_text(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(
            field,
            format!("The {} field is required.", field.replace('_', " ")),
        ));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(invalid(
            field,
            format!(
                "The {} may not be greater than {MAX_TEXT} characters.",
                field.replace('_', " ")
            ),
        ));
    }
    Ok(v.to_owned())
}

fn check_link_base(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(char::is_whitespace) {
        return Err(invalid(
            "link_base_url",
            format!(
                "the link base must be an http(s) URL such as https://example.com/r, not {url:?}"
            ),
        ));
    }
    Ok(u.to_owned())
}

/// A positive integer id, or `None`.
pub(crate) fn parse_id(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&i: &i64| i > 0)
}

fn key_field(key: &ReferralKey) -> &'static str {
    match key {
        ReferralKey::Id { .. } => "id",
        ReferralKey::Code { .. } => "code",
        ReferralKey::Email { .. } => "email",
        ReferralKey::Coupon { .. } => "coupon",
    }
}

async fn require_campaign(tx: &mut Tx, campaign_id: i64) -> Result<()> {
    if tx
        .fetch_optional(
            "SELECT id FROM campaigns WHERE id = $1",
            &args![campaign_id],
        )
        .await?
        .is_none()
    {
        return Err(field_error(
            ErrorKind::NotFound,
            "campaign_id",
            format!("no campaign {campaign_id}"),
        ));
    }
    Ok(())
}

/// The referrer's id and normalized email (for the self-referral check), in `campaign_id`.
async fn resolve_referrer(tx: &mut Tx, campaign_id: i64, r: &ReferrerRef) -> Result<(i64, String)> {
    let (cond, arg, what) = match r {
        ReferrerRef::Id(v) => match parse_id(v) {
            Some(id) => ("id = $1", Arg::Int(id), format!("id {v}")),
            None => ("id = $1", Arg::Int(0), format!("id {v:?}")),
        },
        ReferrerRef::Code(v) => (
            "code = $1",
            Arg::Text(normalize_code(v)),
            format!("code {v}"),
        ),
        // Exactly that email, without case, like every lookup by email.
        ReferrerRef::Email(v) => (
            "LOWER(email) = LOWER($1)",
            Arg::Text(v.trim().to_owned()),
            format!("email {v}"),
        ),
    };
    let row = tx
        .fetch_optional(
            &format!("SELECT id, email_normalized FROM users WHERE {cond} AND campaign_id = $2"),
            &[arg, Arg::Int(campaign_id)],
        )
        .await?;
    match row {
        Some(row) => Ok((row.int("id")?, row.text("email_normalized")?)),
        None => Err(invalid(
            "referrer",
            format!(
                "The selected referrer is invalid: campaign {campaign_id} has no user with {what}."
            ),
        )),
    }
}

async fn resolve(tx: &mut Tx, key: &ReferralKey) -> Result<Target> {
    let found = |row: Option<Row>| -> Result<Option<i64>> { row.map(|r| r.int("id")).transpose() };
    Ok(match key {
        ReferralKey::Id { id } => {
            let row = match parse_id(id) {
                Some(n) => {
                    tx.fetch_optional("SELECT id FROM users WHERE id = $1", &args![n])
                        .await?
                }
                None => None,
            };
            match found(row)? {
                Some(id) => Target::User {
                    id,
                    coupon_id: None,
                },
                None => Target::Unknown(format!("no user with id {id}")),
            }
        }
        ReferralKey::Code { code } => {
            let row = tx
                .fetch_optional(
                    "SELECT id FROM users WHERE code = $1",
                    &args![normalize_code(code)],
                )
                .await?;
            match found(row)? {
                Some(id) => Target::User {
                    id,
                    coupon_id: None,
                },
                None => Target::Unknown(format!("no user with code {code}")),
            }
        }
        ReferralKey::Email { email, campaign } => {
            let row = match parse_id(campaign) {
                Some(c) => {
                    tx.fetch_optional(
                        &format!("SELECT u.id {EMAIL_MATCH_FROM}"),
                        &args![email.trim(), c],
                    )
                    .await?
                }
                None => None,
            };
            match found(row)? {
                Some(id) => Target::User {
                    id,
                    coupon_id: None,
                },
                None => {
                    Target::Unknown(format!("no user with email {email} in campaign {campaign}"))
                }
            }
        }
        ReferralKey::Coupon { coupon } => {
            let row = tx
                .fetch_optional(
                    "SELECT id, user_id FROM coupons WHERE code_normalized = $1",
                    &args![normalize_coupon(coupon)],
                )
                .await?;
            match row {
                Some(r) => match r.opt_int("user_id")? {
                    Some(user) => Target::User {
                        id: user,
                        coupon_id: Some(r.int("id")?),
                    },
                    None => Target::Ignored(format!(
                        "coupon {coupon} has not been assigned to anyone; nothing qualified"
                    )),
                },
                None => Target::Ignored(format!(
                    "coupon {coupon} was not issued by this ledger; nothing qualified"
                )),
            }
        }
    })
}

/// Makes the rewards of the campaign's `trigger` rules due for `referral_id` (referred by
/// `referrer_id`), honouring caps; restores rewards an unqualify cancelled. Returns the rewards
/// that became due.
async fn make_due(
    tx: &mut Tx,
    backend: Backend,
    trigger: Trigger,
    referral_id: i64,
    referrer_id: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RewardRecord>> {
    let rules = tx
        .fetch_all(
            &format!(
                "SELECT {RULE_COLUMNS} FROM reward_rules WHERE campaign_id = (SELECT campaign_id FROM users WHERE id = $1) \
                 AND trigger_event = $2 ORDER BY id"
            ),
            &args![referral_id, trigger.as_str()],
        )
        .await?
        .iter()
        .map(rule_from_row)
        .collect::<Result<Vec<_>>>()?;
    if rules.iter().any(|r| r.cap_per_referrer.is_some()) && backend == Backend::Postgres {
        // Caps count the referrer's rewarded referrals: serialize concurrent qualifications
        // and sign-ups of one referrer's referrals (SQLite write transactions are serialized
        // already). `FOR NO KEY UPDATE`, not `FOR UPDATE`: a sign-up already holds the `FOR KEY
        // SHARE` lock its `referrer_id` foreign key takes on this row, which `FOR UPDATE` would
        // wait for in every other concurrent sign-up — a deadlock. `NO KEY UPDATE` coexists
        // with key-share locks and still excludes itself, so the cap count below (a new
        // snapshot, after the wait) sees every reward the previous holder committed.
        tx.execute(
            "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE",
            &args![referrer_id],
        )
        .await?;
    }
    let at = format_time(at);
    let mut due = Vec::new();
    for rule in rules {
        if let Some(cap) = rule.cap_per_referrer {
            let used = tx
                .fetch_one(
                    "SELECT COUNT(DISTINCT referral_id) AS n FROM rewards \
                     WHERE rule_id = $1 AND referrer_id = $2 AND status <> 'cancelled' AND referral_id <> $3",
                    &args![rule.id, referrer_id, referral_id],
                )
                .await?
                .int("n")?;
            if used >= cap {
                tracing::info!(
                    rule = rule.id,
                    referrer = referrer_id,
                    cap,
                    "ledger: reward cap reached"
                );
                continue;
            }
        }
        let recipients: &[i64] = match rule.recipient {
            Recipient::Referrer => &[referrer_id],
            Recipient::Invited => &[referral_id],
            Recipient::Both => &[referrer_id, referral_id],
        };
        for &recipient in recipients {
            let row = tx
                .fetch_optional(
                    &format!(
                        "INSERT INTO rewards (rule_id, campaign_id, recipient_id, referral_id, referrer_id, trigger_event, metric, amount, value, status, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'due', $10) \
                         ON CONFLICT (rule_id, recipient_id, referral_id) DO UPDATE \
                         SET status = 'due', created_at = excluded.created_at, cancelled_at = NULL, cancel_reason = NULL \
                         WHERE rewards.status = 'cancelled' AND rewards.cancel_reason = 'unqualified' \
                         RETURNING {REWARD_RETURNING}"
                    ),
                    &args![
                        rule.id,
                        rule.campaign_id,
                        recipient,
                        referral_id,
                        referrer_id,
                        rule.trigger.as_str(),
                        rule.metric.as_str(),
                        rule.amount,
                        rule.value.clone(),
                        at.as_str(),
                    ],
                )
                .await?;
            if let Some(row) = row {
                due.push(reward_from_row(&row)?);
            }
        }
    }
    Ok(due)
}

async fn load_user(tx: &mut Tx, id: i64) -> Result<User> {
    let row = tx
        .fetch_one(
            &format!("SELECT {USER_COLUMNS} {USER_FROM} WHERE u.id = $1"),
            &args![id],
        )
        .await?;
    user_from_row(&row)
}

fn page_of<T>(items: Vec<T>, total: i64, list: &ListQuery) -> Page<T> {
    match list.page.map(crate::model::Pagination::clamped) {
        Some(p) => Page {
            items,
            total,
            page: p.page,
            per_page: p.per_page,
        },
        None => {
            let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
            Page {
                items,
                total,
                page: 1,
                per_page: n.max(1),
            }
        }
    }
}

fn campaign_from_row(r: &Row) -> Result<Campaign> {
    Ok(Campaign {
        id: r.int("id")?,
        name: r.text("name")?,
        link_base_url: r.opt_text("link_base_url")?,
        created_at: r.time("created_at")?,
    })
}

fn rule_from_row(r: &Row) -> Result<RewardRule> {
    Ok(RewardRule {
        id: r.int("id")?,
        campaign_id: r.int("campaign_id")?,
        recipient: r.text("recipient")?.parse()?,
        trigger: r.text("trigger_event")?.parse()?,
        metric: r.text("metric")?.parse()?,
        amount: r.opt_int("amount")?,
        value: r.opt_text("value")?,
        cap_per_referrer: r.opt_int("cap_per_referrer")?,
    })
}

fn user_from_row(r: &Row) -> Result<User> {
    let code = r.text("code")?;
    let url = r
        .opt_text("link_base_url")?
        .map(|base| format!("{}/{code}", base.trim_end_matches('/')));
    let meta: Vec<MetaField> = serde_json::from_str(&r.text("meta")?).unwrap_or_default();
    Ok(User {
        id: r.int("id")?,
        campaign_id: r.int("campaign_id")?,
        referrer_id: r.opt_int("referrer_id")?,
        code,
        url,
        first_name: r.text("first_name")?,
        email: r.text("email")?,
        user_type: r.text("user_type")?.parse()?,
        source: r.text("source")?,
        meta,
        signed_up_at: r.time("signed_up_at")?,
        qualified_at: r.opt_time("qualified_at")?,
        coupon: r.opt_text("coupon")?,
    })
}

fn reward_from_row(r: &Row) -> Result<RewardRecord> {
    Ok(RewardRecord {
        id: r.int("id")?,
        rule_id: r.int("rule_id")?,
        campaign_id: r.int("campaign_id")?,
        recipient_id: r.int("recipient_id")?,
        referral_id: r.int("referral_id")?,
        referrer_id: r.int("referrer_id")?,
        trigger: r.text("trigger_event")?.parse()?,
        metric: r.text("metric")?.parse()?,
        amount: r.opt_int("amount")?,
        value: r.opt_text("value")?,
        status: parse_status(&r.text("status")?)?,
        created_at: r.time("created_at")?,
        issued_at: r.opt_time("issued_at")?,
        cancelled_at: r.opt_time("cancelled_at")?,
        cancel_reason: r.opt_text("cancel_reason")?,
    })
}
