//! Property: any interleaving of repeated and concurrent qualify calls for one referral — by
//! code, email, id or coupon, through two independent connection pools — gives exactly one
//! qualification and exactly one set of due rewards. On SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use refsync_core::{NewUser, ReferralKey, ReferrerRef, RewardStatus};
use refsync_ledger::{
    Ledger, Metric, NewCampaign, NewRewardRule, Qualification, Recipient, RewardQuery, Trigger,
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
