//! Properties, on SQLite and on PostgreSQL, through two independent connection pools:
//!
//! - any interleaving of repeated and concurrent qualify calls for one referral — by code,
//!   email, id or coupon — gives exactly one qualification and exactly one set of due rewards;
//! - concurrent sign-ups for one referrer, then any interleaving of concurrent qualify,
//!   unqualify, requalify and issue calls on several of its referrals keep: at most one open
//!   qualification per user (and one record per successful qualify), one reward per rule,
//!   recipient and referral (a requalify restores it, never duplicates it), and no capped rule
//!   with more rewarded (due or issued) referrals than its cap — reached exactly once enough
//!   referrals qualify.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use refsync_core::{ErrorKind, NewUser, ReferralKey, ReferrerRef, RewardStatus};
use refsync_ledger::{
    Filter, FilterOp, Ledger, ListQuery, Metric, NewCampaign, NewRewardRule, Qualification,
    Recipient, RewardQuery, RewardRecord, RewardRule, Trigger, User,
};

#[derive(Debug, Clone, Copy)]
enum By {
    Code,
    Email,
    Id,
    Coupon,
}

/// One call: how it names the referral, and which pool sends it.
type Call = (By, bool);

fn calls() -> impl Strategy<Value = Vec<Vec<Call>>> {
    let by = prop_oneof![
        Just(By::Code),
        Just(By::Email),
        Just(By::Id),
        Just(By::Coupon)
    ];
    // Waves run one after another; the calls of a wave run concurrently.
    prop::collection::vec(prop::collection::vec((by, any::<bool>()), 1..8), 1..5)
}

async fn check(a: &Ledger, b: &Ledger, case: u32, waves: Vec<Vec<Call>>) {
    let c = a
        .create_campaign(&NewCampaign {
            name: format!("case {case}"),
            link_base_url: None,
        })
        .await
        .unwrap()
        .id;
    for (recipient, metric, value) in [
        (Recipient::Referrer, Metric::Amount, "1000"),
        (Recipient::Invited, Metric::Coupon, "WELCOME"),
    ] {
        a.add_reward_rule(
            c,
            &NewRewardRule {
                recipient,
                trigger: Trigger::WhenQualified,
                metric,
                value: value.into(),
                cap_per_referrer: Some(3),
            },
        )
        .await
        .unwrap();
    }
    let coupon = format!("PROP-{case}-{}", c);
    a.add_coupons(c, std::slice::from_ref(&coupon))
        .await
        .unwrap();
    let user = |name: &str, email: String, referrer: Option<ReferrerRef>| NewUser {
        campaign_id: c.to_string(),
        first_name: name.into(),
        email,
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    };
    let ann = a
        .add_user(&user("Ann", format!("ann{case}@example.com"), None))
        .await
        .unwrap();
    let bob = a
        .add_user(&user(
            "Bob",
            format!("bob.{case}@example.com"),
            Some(ReferrerRef::Code(ann.code.clone())),
        ))
        .await
        .unwrap();
    let key = |by: By| match by {
        By::Code => ReferralKey::Code {
            code: bob.code.to_lowercase(),
        },
        By::Email => ReferralKey::Email {
            email: bob.email.to_uppercase(),
            campaign: c.to_string(),
        },
        By::Id => ReferralKey::Id {
            id: bob.id.to_string(),
        },
        By::Coupon => ReferralKey::Coupon {
            coupon: coupon.to_lowercase(),
        },
    };

    let mut qualified = Vec::new();
    let mut already = Vec::new();
    for wave in waves {
        let tasks: Vec<_> = wave
            .into_iter()
            .map(|(by, second)| {
                let l = if second { b.clone() } else { a.clone() };
                let k = key(by);
                tokio::spawn(async move { l.qualify(&k).await })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Qualification::Qualified { user, rewards } => qualified.push((user, rewards)),
                Qualification::AlreadyQualified { user } => already.push(user),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(qualified.len(), 1, "exactly one call qualifies");
    let (user, rewards) = &qualified[0];
    let at = user.qualified_at.expect("qualified_at");
    assert!(already.iter().all(|u| u.qualified_at == Some(at)));
    assert_eq!(rewards.len(), 2);

    let stored = a.user_by_id(bob.id).await.unwrap().unwrap();
    assert_eq!(stored.qualified_at, Some(at));
    assert_eq!(a.qualifications(bob.id).await.unwrap().len(), 1);
    let all = a
        .rewards(&RewardQuery {
            user_id: Some(bob.id),
            ..RewardQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total, 2, "one set of rewards: {:?}", all.items);
    assert!(all.items.iter().all(|r| r.status == RewardStatus::Due));
    let mut recipients: Vec<i64> = all.items.iter().map(|r| r.recipient_id).collect();
    recipients.sort_unstable();
    let mut expected = vec![ann.id, bob.id];
    expected.sort_unstable();
    assert_eq!(recipients, expected);
}

fn run(db: common::TestDb, rt: &tokio::runtime::Runtime, cases: u32) {
    let second = rt.block_on(db.second());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&calls(), |waves| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(check(&db.ledger, &second, n, waves));
            Ok(())
        })
        .unwrap();
    rt.block_on(second.close());
    rt.block_on(db.ledger.close());
    drop(db);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sqlite_any_interleaving_qualifies_once() {
    let rt = runtime();
    let db = rt.block_on(common::sqlite());
    run(db, &rt, 32);
}

#[test]
fn postgres_any_interleaving_qualifies_once() {
    let rt = runtime();
    let Some(db) = rt.block_on(common::postgres()) else {
        return;
    };
    run(db, &rt, 32);
}

// ----- several referrals: sign-ups, qualify / unqualify / requalify / issue, caps -----------

/// One call on referral `.0` of the case.
#[derive(Debug, Clone, Copy)]
enum Op {
    Qualify(usize),
    Unqualify(usize),
    /// Issue one of the referral's due rewards (if any is still due when the call runs).
    Issue(usize),
}

/// The number of referrals, and waves of concurrent calls (each with the pool it goes through).
fn lifecycles() -> impl Strategy<Value = (usize, Vec<Vec<(Op, bool)>>)> {
    (3usize..7).prop_flat_map(|n| {
        let op = prop_oneof![
            3 => (0..n).prop_map(Op::Qualify),
            2 => (0..n).prop_map(Op::Unqualify),
            1 => (0..n).prop_map(Op::Issue),
        ];
        (
            Just(n),
            prop::collection::vec(prop::collection::vec((op, any::<bool>()), 1..8), 1..5),
        )
    })
}

/// What the calls did: the reward of every (rule, recipient, referral) a qualify made due, and
/// the successful qualify / unqualify calls per referral.
struct Tally {
    seen: BTreeMap<(i64, i64, i64), i64>,
    qualified: Vec<usize>,
    unqualified: Vec<usize>,
}

impl Tally {
    fn record(&mut self, i: usize, done: Done) {
        match done {
            Done::Qualified(rewards) => {
                self.qualified[i] += 1;
                for r in rewards {
                    assert_eq!(r.status, RewardStatus::Due);
                    let first = *self
                        .seen
                        .entry((r.rule_id, r.recipient_id, r.referral_id))
                        .or_insert(r.id);
                    assert_eq!(first, r.id, "requalify duplicated a reward: {r:?}");
                }
            }
            Done::Unqualified => self.unqualified[i] += 1,
            Done::Nothing => {}
        }
    }
}

/// What one call did.
enum Done {
    Qualified(Vec<RewardRecord>),
    Unqualified,
    Nothing,
}

async fn apply(l: Ledger, op: Op, users: Vec<User>) -> (usize, Done) {
    let key = |i: usize| ReferralKey::Id {
        id: users[i].id.to_string(),
    };
    match op {
        Op::Qualify(i) => match l.qualify(&key(i)).await.unwrap() {
            Qualification::Qualified { rewards, .. } => (i, Done::Qualified(rewards)),
            Qualification::AlreadyQualified { .. } => (i, Done::Nothing),
            other => panic!("qualify: {other:?}"),
        },
        Op::Unqualify(i) => match l.unqualify(&key(i)).await.unwrap() {
            Qualification::Unqualified { cancelled, .. } => {
                assert!(
                    cancelled.iter().all(|r| r.status == RewardStatus::Cancelled
                        && r.trigger == Trigger::WhenQualified),
                    "{cancelled:?}"
                );
                (i, Done::Unqualified)
            }
            Qualification::NotQualified { .. } => (i, Done::Nothing),
            other => panic!("unqualify: {other:?}"),
        },
        Op::Issue(i) => {
            let due = l
                .rewards(&RewardQuery {
                    status: Some(RewardStatus::Due),
                    list: ListQuery {
                        filters: vec![Filter::new(
                            "referral_id",
                            FilterOp::Equal,
                            users[i].id.to_string(),
                        )],
                        ..ListQuery::default()
                    },
                    ..RewardQuery::default()
                })
                .await
                .unwrap();
            if let Some(r) = due.items.first() {
                match l.issue_reward(r.id).await {
                    Ok(issued) => assert_eq!(issued.status, RewardStatus::Issued),
                    // A concurrent issue (Conflict) or unqualify (Validation) came first.
                    Err(e) => assert!(
                        matches!(e.kind(), ErrorKind::Conflict | ErrorKind::Validation),
                        "{e}"
                    ),
                }
            }
            (i, Done::Nothing)
        }
    }
}

/// Every reward of campaign `c`.
async fn campaign_rewards(l: &Ledger, c: i64) -> Vec<RewardRecord> {
    l.rewards(&RewardQuery {
        campaign_id: Some(c),
        ..RewardQuery::default()
    })
    .await
    .unwrap()
    .items
}

/// Referrals a rule rewards (due or issued).
fn rewarded(rewards: &[RewardRecord], rule: &RewardRule) -> BTreeSet<i64> {
    rewards
        .iter()
        .filter(|r| r.rule_id == rule.id && r.status != RewardStatus::Cancelled)
        .map(|r| r.referral_id)
        .collect()
}

/// The invariants that hold after any interleaving.
async fn check_invariants(
    l: &Ledger,
    c: i64,
    rules: &[RewardRule],
    invitees: &[User],
    seen: &BTreeMap<(i64, i64, i64), i64>,
) -> Vec<RewardRecord> {
    let rewards = campaign_rewards(l, c).await;
    let mut triples = BTreeMap::new();
    for r in &rewards {
        let triple = (r.rule_id, r.recipient_id, r.referral_id);
        assert!(
            triples.insert(triple, r.id).is_none(),
            "a second reward for {triple:?}: {rewards:?}"
        );
        if let Some(first) = seen.get(&triple) {
            assert_eq!(*first, r.id, "a requalify made a new reward for {triple:?}");
        }
    }
    for rule in rules {
        if let Some(cap) = rule.cap_per_referrer {
            let n = rewarded(&rewards, rule).len();
            assert!(
                i64::try_from(n).unwrap() <= cap,
                "rule {} (cap {cap}) rewards {n} referrals: {rewards:?}",
                rule.id
            );
        }
    }
    for u in invitees {
        let stored = l.user_by_id(u.id).await.unwrap().unwrap();
        let history = l.qualifications(u.id).await.unwrap();
        let open = history
            .iter()
            .filter(|q| q.unqualified_at.is_none())
            .count();
        assert!(open <= 1, "user {}: {history:?}", u.id);
        assert_eq!(
            stored.qualified_at.is_some(),
            open == 1,
            "user {}: {stored:?} {history:?}",
            u.id
        );
        if stored.qualified_at.is_none() {
            assert!(
                !rewards.iter().any(|r| r.referral_id == u.id
                    && r.trigger == Trigger::WhenQualified
                    && r.status == RewardStatus::Due),
                "a pending referral has due when_qualified rewards: {rewards:?}"
            );
        }
    }
    rewards
}

async fn lifecycle(a: &Ledger, b: &Ledger, case: u32, n: usize, waves: Vec<Vec<(Op, bool)>>) {
    let c = a
        .create_campaign(&NewCampaign {
            name: format!("lifecycle {case}"),
            link_base_url: None,
        })
        .await
        .unwrap()
        .id;
    let mut rules = Vec::new();
    for (recipient, trigger, metric, value, cap) in [
        (
            Recipient::Referrer,
            Trigger::WhenQualified,
            Metric::Amount,
            "1000",
            Some(2),
        ),
        (
            Recipient::Both,
            Trigger::WhenQualified,
            Metric::Coupon,
            "WELCOME",
            Some(3),
        ),
        (
            Recipient::Invited,
            Trigger::WhenQualified,
            Metric::Custom,
            "a T-shirt",
            None,
        ),
        (
            Recipient::Referrer,
            Trigger::WhenInvited,
            Metric::Amount,
            "10",
            Some(2),
        ),
    ] {
        rules.push(
            a.add_reward_rule(
                c,
                &NewRewardRule {
                    recipient,
                    trigger,
                    metric,
                    value: value.into(),
                    cap_per_referrer: cap,
                },
            )
            .await
            .unwrap(),
        );
    }
    let new_user = |name: String, referrer: Option<ReferrerRef>| NewUser {
        campaign_id: c.to_string(),
        first_name: name.clone(),
        email: format!("{name}@example.com"),
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    };
    let ann = a
        .add_user(&new_user(format!("ann{case}"), None))
        .await
        .unwrap();

    // Concurrent sign-ups for one referrer (a capped when_invited rule locks its row).
    let signups: Vec<_> = (0..n)
        .map(|i| {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            let user = new_user(
                format!("friend{case}.{i}"),
                Some(ReferrerRef::Code(ann.code.clone())),
            );
            tokio::spawn(async move { l.add_user(&user).await })
        })
        .collect();
    let mut invitees = Vec::new();
    for t in signups {
        invitees.push(t.await.unwrap().expect("every sign-up succeeds"));
    }
    let rewards = campaign_rewards(a, c).await;
    assert_eq!(
        rewarded(&rewards, &rules[3]).len(),
        2,
        "the when_invited cap is reached exactly: {rewards:?}"
    );

    // Waves of concurrent qualify / unqualify / issue calls.
    let mut tally = Tally {
        seen: BTreeMap::new(),
        qualified: vec![0; n],
        unqualified: vec![0; n],
    };
    for wave in waves {
        let tasks: Vec<_> = wave
            .into_iter()
            .map(|(op, second)| {
                let l = if second { b.clone() } else { a.clone() };
                tokio::spawn(apply(l, op, invitees.clone()))
            })
            .collect();
        for t in tasks {
            let (i, done) = t.await.unwrap();
            tally.record(i, done);
        }
    }
    check_invariants(a, c, &rules, &invitees, &tally.seen).await;
    for (i, u) in invitees.iter().enumerate() {
        let history = a.qualifications(u.id).await.unwrap();
        assert_eq!(
            history.len(),
            tally.qualified[i],
            "one record per qualify: {history:?}"
        );
        assert_eq!(
            history
                .iter()
                .filter(|q| q.unqualified_at.is_some())
                .count(),
            tally.unqualified[i],
            "{history:?}"
        );
    }

    // Unqualify everyone, then requalify everyone: the caps are reached exactly.
    for i in 0..n {
        let (i, done) = apply(a.clone(), Op::Unqualify(i), invitees.clone()).await;
        tally.record(i, done);
    }
    for i in 0..n {
        let (i, done) = apply(b.clone(), Op::Qualify(i), invitees.clone()).await;
        tally.record(i, done);
    }
    let rewards = check_invariants(a, c, &rules, &invitees, &tally.seen).await;
    for rule in &rules {
        let expected = match rule.cap_per_referrer {
            Some(cap) => usize::try_from(cap).unwrap().min(n),
            None => n,
        };
        assert_eq!(
            rewarded(&rewards, rule).len(),
            expected,
            "rule {rule:?}: {rewards:?}"
        );
    }
}

fn run_lifecycles(db: common::TestDb, rt: &tokio::runtime::Runtime, cases: u32) {
    let second = rt.block_on(db.second());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&lifecycles(), |(n, waves)| {
            let i = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(lifecycle(&db.ledger, &second, i, n, waves));
            Ok(())
        })
        .unwrap();
    rt.block_on(second.close());
    rt.block_on(db.ledger.close());
    drop(db);
}

#[test]
fn sqlite_signups_requalifications_and_caps_stay_exact() {
    let rt = runtime();
    let db = rt.block_on(common::sqlite());
    run_lifecycles(db, &rt, 24);
}

#[test]
fn postgres_signups_requalifications_and_caps_stay_exact() {
    let rt = runtime();
    let Some(db) = rt.block_on(common::postgres()) else {
        return;
    };
    run_lifecycles(db, &rt, 24);
}
