//! The ledger's behaviour suite, run against SQLite (a temporary file) and PostgreSQL (a fresh
//! schema of `REFSYNC_TEST_POSTGRES_URL`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::TestDb;
use refsync_core::{
    ErrorKind, NewUser, QualifyAction, QualifyCall, QualifyOutcome, ReferralKey, ReferralPlatform,
    ReferrerRef, RewardStatus,
};
use refsync_ledger::{
    Filter, FilterOp, Ledger, ListQuery, Metric, NewCampaign, NewRewardRule, Pagination,
    Qualification, Recipient, RewardQuery, Trigger, User, UserType, error_field,
};

suite!(
    campaign_users_codes_and_links,
    referrer_attribution_by_id_code_and_email,
    duplicate_email_is_a_conflict_after_normalization,
    self_referral_is_blocked_on_the_normalized_email,
    qualify_once_with_one_set_of_rewards,
    person_referring_cannot_qualify,
    unknown_keys_not_found_and_unknown_coupons_ignored,
    unqualify_then_requalify,
    coupons_assigned_in_order_until_exhausted,
    reward_caps_per_referrer,
    when_invited_rewards,
    issue_and_cancel_transitions,
    lists_filter_order_and_paginate,
    platform_trait,
    concurrent_qualifies_from_two_pools,
    concurrent_signups_with_the_same_email,
    concurrent_signups_get_distinct_coupons,
    concurrent_signups_with_a_capped_when_invited_rule,
    email_lookups_are_exact_and_case_insensitive,
    rewards_involving_any_number_of_users,
    any_page_number_is_safe,
);

// ----- helpers -------------------------------------------------------------------------------

fn new_user(campaign: i64, name: &str, email: &str, referrer: Option<ReferrerRef>) -> NewUser {
    NewUser {
        campaign_id: campaign.to_string(),
        first_name: name.into(),
        email: email.into(),
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    }
}

async fn campaign(l: &Ledger, name: &str) -> i64 {
    l.create_campaign(&NewCampaign {
        name: name.into(),
        link_base_url: Some("https://example.com/r/".into()),
    })
    .await
    .unwrap()
    .id
}

async fn rule(
    l: &Ledger,
    campaign: i64,
    recipient: Recipient,
    trigger: Trigger,
    metric: Metric,
    value: &str,
    cap: Option<i64>,
) -> i64 {
    l.add_reward_rule(
        campaign,
        &NewRewardRule {
            recipient,
            trigger,
            metric,
            value: value.into(),
            cap_per_referrer: cap,
        },
    )
    .await
    .unwrap()
    .id
}

async fn referrer(l: &Ledger, campaign: i64, name: &str, email: &str) -> User {
    l.add_user(&new_user(campaign, name, email, None))
        .await
        .unwrap()
}

async fn invited(l: &Ledger, campaign: i64, name: &str, email: &str, by: &User) -> User {
    l.add_user(&new_user(
        campaign,
        name,
        email,
        Some(ReferrerRef::Code(by.code.clone())),
    ))
    .await
    .unwrap()
}

fn code(u: &User) -> ReferralKey {
    ReferralKey::Code {
        code: u.code.clone(),
    }
}

async fn rewards_of(l: &Ledger, user: &User) -> Vec<refsync_ledger::RewardRecord> {
    l.rewards(&RewardQuery {
        user_id: Some(user.id),
        ..RewardQuery::default()
    })
    .await
    .unwrap()
    .items
}

fn kind(e: &refsync_core::Error) -> ErrorKind {
    e.kind().clone()
}

// ----- cases ---------------------------------------------------------------------------------

async fn campaign_users_codes_and_links(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "Spring").await;
    let got = l.campaign(c).await.unwrap().unwrap();
    assert_eq!(got.name, "Spring");
    assert_eq!(
        got.link_base_url.as_deref(),
        Some("https://example.com/r"),
        "trailing slash trimmed"
    );
    assert_eq!(l.campaigns().await.unwrap().len(), 1);
    let blank = l
        .create_campaign(&NewCampaign {
            name: "  ".into(),
            link_base_url: None,
        })
        .await
        .unwrap_err();
    assert_eq!(kind(&blank), ErrorKind::Validation);
    assert_eq!(error_field(&blank).unwrap().field, "name");

    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    assert_eq!(ann.user_type, UserType::PersonReferring);
    assert_eq!(ann.referrer_id, None);
    assert_eq!(ann.code.len(), refsync_ledger::CODE_LEN);
    assert!(
        ann.code
            .bytes()
            .all(|b| refsync_ledger::CODE_ALPHABET.contains(&b))
    );
    assert_eq!(
        ann.url.as_deref(),
        Some(format!("https://example.com/r/{}", ann.code).as_str())
    );
    assert_eq!(ann.qualified_at, None);
    assert_eq!(ann.coupon, None);

    let mut meta = BTreeMap::new();
    meta.insert("company".to_owned(), "Acme".to_owned());
    let bob = l
        .add_user(&NewUser {
            meta,
            ..new_user(
                c,
                "Bob",
                "bob@example.com",
                Some(ReferrerRef::Code(ann.code.to_lowercase())),
            )
        })
        .await
        .unwrap();
    assert_eq!(bob.user_type, UserType::PersonInvited);
    assert_eq!(bob.referrer_id, Some(ann.id));
    assert_ne!(bob.code, ann.code);
    assert_eq!(bob.meta.len(), 1);
    assert_eq!(bob.meta[0].field, "company");

    for key in [
        ReferralKey::Id {
            id: bob.id.to_string(),
        },
        ReferralKey::Code {
            code: bob.code.to_lowercase(),
        },
        ReferralKey::Email {
            email: " BOB@example.com".into(),
            campaign: c.to_string(),
        },
    ] {
        assert_eq!(l.user(&key).await.unwrap().as_ref(), Some(&bob), "{key}");
    }
    assert_eq!(
        l.find_user(&bob.email, None).await.unwrap().as_ref(),
        Some(&bob)
    );
    assert_eq!(
        l.find_user(&bob.id.to_string(), Some(c))
            .await
            .unwrap()
            .as_ref(),
        Some(&bob)
    );
    assert!(
        l.user(&ReferralKey::Id { id: "999".into() })
            .await
            .unwrap()
            .is_none()
    );

    // Unknown campaign, bad email, missing name.
    for (user, field) in [
        (new_user(c + 100, "X", "x@example.com", None), "campaign_id"),
        (new_user(c, "X", "not-an-email", None), "email"),
        (new_user(c, " ", "y@example.com", None), "first_name"),
    ] {
        let e = l.add_user(&user).await.unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Validation, "{e}");
        assert_eq!(error_field(&e).unwrap().field, field, "{e}");
    }

    // Data survives reopening the database (migrations are idempotent).
    let again = db.second().await;
    assert_eq!(again.user_by_id(bob.id).await.unwrap().as_ref(), Some(&bob));
    again.close().await;
}

async fn referrer_attribution_by_id_code_and_email(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let other = campaign(l, "B").await;
    let ann = referrer(l, c, "Ann", "Ann.Lee+news@Example.com").await;
    let stranger = referrer(l, other, "Zed", "zed@example.com").await;

    let by_id = l
        .add_user(&new_user(
            c,
            "I",
            "i@example.com",
            Some(ReferrerRef::Id(ann.id.to_string())),
        ))
        .await
        .unwrap();
    let by_code = l
        .add_user(&new_user(
            c,
            "C",
            "c@example.com",
            Some(ReferrerRef::Code(format!(" {} ", ann.code.to_lowercase()))),
        ))
        .await
        .unwrap();
    let by_email = l
        .add_user(&new_user(
            c,
            "E",
            "e@example.com",
            Some(ReferrerRef::Email(" ann.lee+NEWS@EXAMPLE.com ".into())),
        ))
        .await
        .unwrap();
    for u in [&by_id, &by_code, &by_email] {
        assert_eq!(u.referrer_id, Some(ann.id), "{}", u.first_name);
        assert_eq!(u.user_type, UserType::PersonInvited);
    }

    for r in [
        ReferrerRef::Id("424242".into()),
        ReferrerRef::Id("abc".into()),
        ReferrerRef::Code("NOPE2345".into()),
        ReferrerRef::Email("nobody@example.com".into()),
        // Emails are looked up exactly (without case): not by the normalized form.
        ReferrerRef::Email("ann.lee@example.com".into()),
        // A referrer of another campaign does not count.
        ReferrerRef::Code(stranger.code.clone()),
        ReferrerRef::Id(stranger.id.to_string()),
    ] {
        let e = l
            .add_user(&new_user(c, "X", "x@example.com", Some(r.clone())))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Validation, "{r:?}: {e}");
        assert_eq!(error_field(&e).unwrap().field, "referrer", "{r:?}");
    }
    // Nothing was created by the failures.
    assert!(
        l.user(&ReferralKey::Email {
            email: "x@example.com".into(),
            campaign: c.to_string()
        })
        .await
        .unwrap()
        .is_none()
    );
}

async fn duplicate_email_is_a_conflict_after_normalization(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let other = campaign(l, "B").await;
    let ann = referrer(l, c, "Ann", "Ann@Example.com").await;
    referrer(l, c, "Gee", "g.mail.user@gmail.com").await;
    for dup in [
        "ann@example.com",
        " ANN@EXAMPLE.COM ",
        "ann+promo@example.com",
        "gmailuser@googlemail.com",
        "G.Mail.User+x@gmail.com",
    ] {
        let e = l
            .add_user(&new_user(c, "Dup", dup, None))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Conflict, "{dup}: {e}");
        assert_eq!(e.message(), "email already exists");
        assert_eq!(error_field(&e).unwrap().field, "email");
    }
    // Dots matter outside Gmail; another campaign may have the same person.
    l.add_user(&new_user(c, "Dotted", "a.nn@example.com", None))
        .await
        .unwrap();
    let elsewhere = l
        .add_user(&new_user(other, "Ann", "ann@example.com", None))
        .await
        .unwrap();
    assert_ne!(elsewhere.id, ann.id);
    // An invited duplicate is a conflict too, and keeps the first referrer.
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;
    let e = l
        .add_user(&new_user(
            c,
            "Bob",
            "Bob@example.com",
            Some(ReferrerRef::Code(ann.code.clone())),
        ))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Conflict);
    assert_eq!(
        l.user_by_id(bob.id).await.unwrap().unwrap().referrer_id,
        Some(ann.id)
    );
}

async fn self_referral_is_blocked_on_the_normalized_email(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let ann = referrer(l, c, "Ann", "ann.lee@gmail.com").await;
    for me in [
        "ann.lee@gmail.com",
        "AnnLee+ref@googlemail.com",
        " a.n.n.l.e.e@GMAIL.com",
    ] {
        for r in [
            ReferrerRef::Code(ann.code.clone()),
            ReferrerRef::Id(ann.id.to_string()),
            ReferrerRef::Email(ann.email.clone()),
        ] {
            let e = l
                .add_user(&new_user(c, "Me", me, Some(r)))
                .await
                .unwrap_err();
            assert_eq!(kind(&e), ErrorKind::Validation, "{me}: {e}");
            assert_eq!(error_field(&e).unwrap().field, "email");
            assert!(e.message().contains("Self-referral"), "{e}");
        }
    }
}

async fn qualify_once_with_one_set_of_rewards(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let r1 = rule(
        l,
        c,
        Recipient::Referrer,
        Trigger::WhenQualified,
        Metric::Amount,
        "1000",
        None,
    )
    .await;
    rule(
        l,
        c,
        Recipient::Invited,
        Trigger::WhenQualified,
        Metric::Coupon,
        "WELCOME10",
        None,
    )
    .await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;
    assert!(rewards_of(l, &bob).await.is_empty(), "nothing due before");

    let first = l.qualify(&code(&bob)).await.unwrap();
    let Qualification::Qualified { user, rewards } = &first else {
        panic!("{first:?}")
    };
    let at = user.qualified_at.expect("qualified_at set");
    assert_eq!(rewards.len(), 2);
    let referrer_reward = rewards.iter().find(|r| r.rule_id == r1).unwrap();
    assert_eq!(referrer_reward.recipient_id, ann.id);
    assert_eq!(referrer_reward.amount, Some(1000));
    assert_eq!(referrer_reward.status, RewardStatus::Due);
    let invited_reward = rewards.iter().find(|r| r.rule_id != r1).unwrap();
    assert_eq!(invited_reward.recipient_id, bob.id);
    assert_eq!(invited_reward.coupon(), Some("WELCOME10"));
    assert_eq!(first.message(), "qualified");

    for key in [
        code(&bob),
        ReferralKey::Id {
            id: bob.id.to_string(),
        },
        ReferralKey::Email {
            email: "BOB@example.com".into(),
            campaign: c.to_string(),
        },
    ] {
        match l.qualify(&key).await.unwrap() {
            Qualification::AlreadyQualified { user } => {
                assert_eq!(user.qualified_at, Some(at), "the original time")
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(rewards_of(l, &bob).await.len(), 2);
    assert_eq!(l.qualifications(bob.id).await.unwrap().len(), 1);
    let due = l
        .rewards(&RewardQuery {
            status: Some(RewardStatus::Due),
            ..RewardQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(due.total, 2);
}

async fn person_referring_cannot_qualify(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let e = l.qualify(&code(&ann)).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Validation, "{e}");
    assert!(e.message().contains("Person Referring"), "{e}");
    assert_eq!(
        l.user_by_id(ann.id).await.unwrap().unwrap().qualified_at,
        None
    );
}

async fn unknown_keys_not_found_and_unknown_coupons_ignored(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    for key in [
        ReferralKey::Code {
            code: "ZZZZ2345".into(),
        },
        ReferralKey::Id { id: "9999".into() },
        ReferralKey::Id { id: "x".into() },
        ReferralKey::Email {
            email: "nobody@example.com".into(),
            campaign: c.to_string(),
        },
        ReferralKey::Email {
            email: ann.email.clone(),
            campaign: (c + 1).to_string(),
        },
    ] {
        let e = l.qualify(&key).await.unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotFound, "{key}: {e}");
        let e = l.unqualify(&key).await.unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotFound, "{key}: {e}");
    }
    // A coupon never issued, and one in the pool but not yet assigned: ignored, no error.
    l.add_coupons(c, &["POOL-1".to_owned()]).await.unwrap();
    for coupon in ["NOT-OURS", "pool-1"] {
        let q = l
            .qualify(&ReferralKey::Coupon {
                coupon: coupon.into(),
            })
            .await
            .unwrap();
        let Qualification::Ignored { reason } = &q else {
            panic!("{q:?}")
        };
        assert!(reason.contains("nothing qualified"), "{reason}");
        assert!(q.message().starts_with("ignored"));
        assert_eq!(q.to_outcome(), QualifyOutcome::NotQualified);
    }
    assert_eq!(l.coupon_stats(c).await.unwrap().redeemed, 0);
}

async fn unqualify_then_requalify(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    rule(
        l,
        c,
        Recipient::Both,
        Trigger::WhenQualified,
        Metric::Amount,
        "500",
        None,
    )
    .await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;

    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&bob)).await.unwrap() else {
        panic!()
    };
    assert_eq!(rewards.len(), 2);
    let to_ann = rewards.iter().find(|r| r.recipient_id == ann.id).unwrap();
    let to_bob = rewards.iter().find(|r| r.recipient_id == bob.id).unwrap();
    let issued = l.issue_reward(to_ann.id).await.unwrap();
    assert_eq!(issued.status, RewardStatus::Issued);

    let q = l.unqualify(&code(&bob)).await.unwrap();
    let Qualification::Unqualified { user, cancelled } = &q else {
        panic!("{q:?}")
    };
    assert_eq!(user.qualified_at, None);
    assert_eq!(cancelled.len(), 1, "only the due reward is cancelled");
    assert_eq!(cancelled[0].id, to_bob.id);
    assert_eq!(cancelled[0].cancel_reason.as_deref(), Some("unqualified"));
    assert_eq!(
        l.reward(to_ann.id).await.unwrap().unwrap().status,
        RewardStatus::Issued,
        "issued rewards are never taken back"
    );
    assert_eq!(q.to_outcome(), QualifyOutcome::Unqualified);

    let again = l.unqualify(&code(&bob)).await.unwrap();
    assert!(
        matches!(again, Qualification::NotQualified { .. }),
        "{again:?}"
    );

    let re = l.qualify(&code(&bob)).await.unwrap();
    let Qualification::Qualified { user, rewards } = &re else {
        panic!("{re:?}")
    };
    assert!(user.qualified_at.is_some());
    assert_eq!(
        rewards.len(),
        1,
        "the cancelled reward comes back; no new set"
    );
    assert_eq!(rewards[0].id, to_bob.id);
    assert_eq!(rewards[0].status, RewardStatus::Due);
    let all = rewards_of(l, &bob).await;
    assert_eq!(all.len(), 2, "still one set of rewards: {all:?}");
    let history = l.qualifications(bob.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].unqualified_at.is_some());
    assert!(history[1].unqualified_at.is_none());

    // A reward cancelled by hand stays cancelled across unqualify / requalify.
    l.cancel_reward(to_bob.id).await.unwrap();
    l.unqualify(&code(&bob)).await.unwrap();
    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&bob)).await.unwrap() else {
        panic!()
    };
    assert!(rewards.is_empty(), "{rewards:?}");
    assert_eq!(
        l.reward(to_bob.id).await.unwrap().unwrap().status,
        RewardStatus::Cancelled
    );
}

async fn coupons_assigned_in_order_until_exhausted(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let other = campaign(l, "B").await;
    let batch = l
        .add_coupons(c, &["SAVE-A".into(), "save-b".into(), "SAVE-C".into()])
        .await
        .unwrap();
    assert_eq!(batch.added, 3);
    assert!(batch.duplicates.is_empty());
    let again = l
        .add_coupons(c, &["save-a".into(), " ".into(), "SAVE-D".into()])
        .await
        .unwrap();
    assert_eq!(again.added, 1);
    assert_eq!(again.duplicates, vec!["save-a".to_owned()]);
    // Coupons are unique across campaigns.
    let cross = l.add_coupons(other, &["SAVE-B".into()]).await.unwrap();
    assert_eq!(cross.added, 0);
    let bad = l.add_coupons(c, &["has space".into()]).await.unwrap_err();
    assert_eq!(kind(&bad), ErrorKind::Validation);
    let e = l.add_coupons(c + 100, &["X".into()]).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound);

    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    assert_eq!(ann.coupon, None, "a Person Referring gets no coupon");
    let mut got = Vec::new();
    for i in 0..5 {
        let u = invited(l, c, &format!("U{i}"), &format!("u{i}@example.com"), &ann).await;
        got.push(u.coupon.clone());
    }
    assert_eq!(
        got,
        vec![
            Some("SAVE-A".to_owned()),
            Some("save-b".to_owned()),
            Some("SAVE-C".to_owned()),
            Some("SAVE-D".to_owned()),
            None
        ]
    );
    let stats = l.coupon_stats(c).await.unwrap();
    assert_eq!((stats.total, stats.assigned, stats.unused()), (4, 4, 0));

    // Qualification by a redeemed coupon, case-insensitively.
    let q = l
        .qualify(&ReferralKey::Coupon {
            coupon: " SAVE-B ".into(),
        })
        .await
        .unwrap();
    let Qualification::Qualified { user, .. } = &q else {
        panic!("{q:?}")
    };
    assert_eq!(user.first_name, "U1");
    assert_eq!(l.coupon_stats(c).await.unwrap().redeemed, 1);
    let q = l
        .qualify(&ReferralKey::Coupon {
            coupon: "save-b".into(),
        })
        .await
        .unwrap();
    assert!(matches!(q, Qualification::AlreadyQualified { .. }), "{q:?}");
    assert_eq!(
        l.user(&ReferralKey::Coupon {
            coupon: "SAVE-c".into()
        })
        .await
        .unwrap()
        .unwrap()
        .first_name,
        "U2"
    );
}

async fn reward_caps_per_referrer(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let capped = rule(
        l,
        c,
        Recipient::Referrer,
        Trigger::WhenQualified,
        Metric::Amount,
        "500",
        Some(2),
    )
    .await;
    let e = l
        .add_reward_rule(
            c,
            &NewRewardRule {
                recipient: Recipient::Referrer,
                trigger: Trigger::WhenQualified,
                metric: Metric::Amount,
                value: "5".into(),
                cap_per_referrer: Some(0),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Validation);
    let e = l
        .add_reward_rule(
            c,
            &NewRewardRule {
                recipient: Recipient::Referrer,
                trigger: Trigger::WhenQualified,
                metric: Metric::Commission,
                value: "ten".into(),
                cap_per_referrer: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error_field(&e).unwrap().field, "value");

    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let zed = referrer(l, c, "Zed", "zed@example.com").await;
    let mut friends = Vec::new();
    for i in 0..3 {
        friends.push(invited(l, c, &format!("F{i}"), &format!("f{i}@example.com"), &ann).await);
    }
    let zed_friend = invited(l, c, "Z", "zf@example.com", &zed).await;
    let mut counts = Vec::new();
    for f in &friends {
        let Qualification::Qualified { rewards, .. } = l.qualify(&code(f)).await.unwrap() else {
            panic!()
        };
        counts.push(rewards.len());
    }
    assert_eq!(counts, vec![1, 1, 0], "the third referral is over the cap");
    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&zed_friend)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(rewards.len(), 1, "the cap is per referrer");

    // Unqualifying F0 frees a slot: F2, qualified again, now earns it; F0 requalified does not.
    l.unqualify(&code(&friends[0])).await.unwrap();
    l.unqualify(&code(&friends[2])).await.unwrap();
    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&friends[2])).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(rewards.len(), 1);
    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&friends[0])).await.unwrap()
    else {
        panic!()
    };
    assert!(rewards.is_empty());
    let ann_due = l
        .rewards(&RewardQuery {
            status: Some(RewardStatus::Due),
            list: ListQuery {
                filters: vec![
                    Filter::new("recipient_id", FilterOp::Equal, ann.id.to_string()),
                    Filter::new("reward_id", FilterOp::Equal, capped.to_string()),
                ],
                ..ListQuery::default()
            },
            ..RewardQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ann_due.total, 2);
}

async fn when_invited_rewards(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    rule(
        l,
        c,
        Recipient::Both,
        Trigger::WhenInvited,
        Metric::Custom,
        "a T-shirt",
        None,
    )
    .await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    assert!(
        rewards_of(l, &ann).await.is_empty(),
        "joining alone earns nothing"
    );
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;
    let r = rewards_of(l, &bob).await;
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.trigger == Trigger::WhenInvited
        && r.status == RewardStatus::Due
        && r.value.as_deref() == Some("a T-shirt")));
    assert_eq!(r[0].describe(), "custom a T-shirt");
    l.qualify(&code(&bob)).await.unwrap();
    l.unqualify(&code(&bob)).await.unwrap();
    assert!(
        rewards_of(l, &bob)
            .await
            .iter()
            .all(|r| r.status == RewardStatus::Due),
        "unqualify does not cancel invitation rewards"
    );
}

async fn issue_and_cancel_transitions(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    rule(
        l,
        c,
        Recipient::Both,
        Trigger::WhenQualified,
        Metric::Amount,
        "100",
        None,
    )
    .await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;
    let Qualification::Qualified { rewards, .. } = l.qualify(&code(&bob)).await.unwrap() else {
        panic!()
    };
    let (a, b) = (rewards[0].id, rewards[1].id);

    let issued = l.issue_reward(a).await.unwrap();
    assert_eq!(issued.status, RewardStatus::Issued);
    assert!(issued.issued_at.is_some());
    let e = l.issue_reward(a).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Conflict, "{e}");
    let e = l.cancel_reward(a).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Validation, "{e}");

    let cancelled = l.cancel_reward(b).await.unwrap();
    assert_eq!(cancelled.status, RewardStatus::Cancelled);
    assert!(cancelled.cancelled_at.is_some());
    let e = l.issue_reward(b).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Validation, "{e}");
    let e = l.cancel_reward(b).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Conflict, "{e}");

    let e = l.issue_reward(987_654).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound);
    let e = l.cancel_reward(987_654).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound);

    let issued_list = l
        .rewards(&RewardQuery {
            status: Some(RewardStatus::Issued),
            metric: Some(Metric::Amount),
            ..RewardQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(issued_list.items.len(), 1);
    assert_eq!(issued_list.items[0].id, a);
}

async fn lists_filter_order_and_paginate(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let other = campaign(l, "B").await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let mut invitees = Vec::new();
    for i in 0..7 {
        invitees.push(
            invited(
                l,
                c,
                &format!("Friend{i}"),
                &format!("friend{i}@example.org"),
                &ann,
            )
            .await,
        );
    }
    referrer(l, other, "Elsewhere", "else@example.com").await;
    l.qualify(&code(&invitees[1])).await.unwrap();
    l.qualify(&code(&invitees[4])).await.unwrap();

    let all = l.users(Some(c), &ListQuery::default()).await.unwrap();
    assert_eq!(all.total, 8);
    assert_eq!(all.items.len(), 8);
    let everywhere = l.users(None, &ListQuery::default()).await.unwrap();
    assert_eq!(everywhere.total, 9);

    let page = |page, per_page| ListQuery {
        page: Some(Pagination { page, per_page }),
        ..ListQuery::default()
    };
    let p2 = l.users(Some(c), &page(2, 3)).await.unwrap();
    assert_eq!(p2.total, 8);
    assert_eq!(p2.last_page(), 3);
    assert_eq!(
        p2.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        invitees[2..5].iter().map(|u| u.id).collect::<Vec<_>>()
    );
    let p3 = l.users(Some(c), &page(3, 3)).await.unwrap();
    assert_eq!(p3.items.len(), 2);

    let q = |filters: Vec<Filter>| ListQuery {
        filters,
        ..ListQuery::default()
    };
    let like = l
        .users(
            Some(c),
            &q(vec![Filter::new("email", FilterOp::Like, "%@EXAMPLE.ORG")]),
        )
        .await
        .unwrap();
    assert_eq!(like.total, 7);
    let pending = l
        .users(
            Some(c),
            &q(vec![
                Filter::new("qualified_at", FilterOp::Equal, "null"),
                Filter::new("type", FilterOp::Equal, "person_invited"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(pending.total, 5);
    let qualified = l
        .users(
            Some(c),
            &q(vec![Filter::new(
                "qualified_at",
                FilterOp::Gte,
                "2000-01-01",
            )]),
        )
        .await
        .unwrap();
    assert_eq!(
        qualified
            .items
            .iter()
            .map(|u| u.id)
            .collect::<BTreeSet<_>>(),
        [invitees[1].id, invitees[4].id].into_iter().collect()
    );
    let gt = l
        .users(
            Some(c),
            &q(vec![
                Filter::new("id", FilterOp::Gt, invitees[3].id.to_string()),
                Filter::new("id", FilterOp::Lte, invitees[5].id.to_string()),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(gt.total, 2);
    let by_referrer = l
        .users(
            None,
            &q(vec![Filter::new(
                "referrer_id",
                FilterOp::Equal,
                ann.id.to_string(),
            )]),
        )
        .await
        .unwrap();
    assert_eq!(by_referrer.total, 7);

    let desc = l
        .users(
            Some(c),
            &ListQuery {
                order_by: Some("first_name".into()),
                descending: true,
                page: Some(Pagination {
                    page: 1,
                    per_page: 2,
                }),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        desc.items
            .iter()
            .map(|u| u.first_name.as_str())
            .collect::<Vec<_>>(),
        vec!["Friend6", "Friend5"]
    );
    let by_qualified = l
        .users(
            Some(c),
            &ListQuery {
                order_by: Some("qualified_at".into()),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_qualified.items[0].id, invitees[1].id, "NULLs last");
    assert_eq!(by_qualified.items[1].id, invitees[4].id);

    for (bad, field) in [
        (
            q(vec![Filter::new("password", FilterOp::Equal, "x")]),
            "filter[password][equal]",
        ),
        (
            q(vec![Filter::new("id", FilterOp::Gt, "abc")]),
            "filter[id][gt]",
        ),
        (
            q(vec![Filter::new("id", FilterOp::Like, "1%")]),
            "filter[id][like]",
        ),
        (
            ListQuery {
                order_by: Some("nope".into()),
                ..ListQuery::default()
            },
            "order_by",
        ),
    ] {
        let e = l.users(Some(c), &bad).await.unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Validation);
        assert_eq!(error_field(&e).unwrap().field, field);
    }
}

async fn platform_trait(db: &TestDb) {
    let ledger = db.ledger.clone();
    let c = campaign(&ledger, "A").await;
    rule(
        &ledger,
        c,
        Recipient::Referrer,
        Trigger::WhenQualified,
        Metric::Amount,
        "1000",
        None,
    )
    .await;
    ledger.add_coupons(c, &["CPN-1".into()]).await.unwrap();
    let p: Arc<dyn ReferralPlatform> = Arc::new(ledger);
    assert_eq!(p.name(), "ledger");
    let ann = p
        .create_user(&new_user(c, "Ann", "ann@example.com", None))
        .await
        .unwrap();
    let bob = p
        .create_user(&new_user(
            c,
            "Bob",
            "bob@example.com",
            Some(ReferrerRef::Email("ANN@example.com".into())),
        ))
        .await
        .unwrap();
    assert_eq!(bob.referrer_id.as_deref(), Some(ann.id.as_str()));
    assert_eq!(bob.coupon.as_deref(), Some("CPN-1"));
    assert_eq!(bob.campaign_id, c.to_string());
    let e = p
        .create_user(&new_user(c, "Bob", "bob@example.com", None))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Conflict);
    assert_eq!(e.connector(), Some("ledger"));
    assert_eq!(e.operation(), Some("create_user"));

    let got = p
        .get_user(&ReferralKey::Coupon {
            coupon: "cpn-1".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, bob.id);
    assert!(
        p.get_user(&ReferralKey::Code {
            code: "NONE2345".into()
        })
        .await
        .unwrap()
        .is_none()
    );

    let call = |referral: ReferralKey, campaign: Option<String>| QualifyCall {
        action: QualifyAction::Qualify,
        campaign,
        referral,
        rule: "deal_won".into(),
        reason: "deal 8 won".into(),
    };
    // An email key with an empty campaign takes the call's campaign.
    let first = p
        .qualify(&call(
            ReferralKey::Email {
                email: "bob@example.com".into(),
                campaign: String::new(),
            },
            Some(c.to_string()),
        ))
        .await
        .unwrap();
    let QualifyOutcome::Qualified { user: Some(user) } = &first else {
        panic!("{first:?}")
    };
    let at = user.qualified_at;
    assert!(at.is_some());
    let again = p
        .qualify(&call(
            ReferralKey::Coupon {
                coupon: "CPN-1".into(),
            },
            None,
        ))
        .await
        .unwrap();
    assert_eq!(again, QualifyOutcome::AlreadyQualified { qualified_at: at });
    let ignored = p
        .qualify(&call(
            ReferralKey::Coupon {
                coupon: "SOMEONE-ELSES".into(),
            },
            None,
        ))
        .await
        .unwrap();
    assert_eq!(ignored, QualifyOutcome::NotQualified);
    let e = p
        .qualify(&call(
            ReferralKey::Code {
                code: "NONE2345".into(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound);

    let due = p.rewards_due().await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].recipient_id, ann.id);
    assert_eq!(due[0].metric, "amount");
    assert_eq!(due[0].amount, Some(1000));
    let issued = p.issue_reward(&due[0].id).await.unwrap();
    assert_eq!(issued.status, RewardStatus::Issued);
    assert!(p.rewards_due().await.unwrap().is_empty());
    let e = p.cancel_reward(&due[0].id).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::Validation);
    let e = p.issue_reward("abc").await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound);

    let un = p
        .unqualify(&call(ReferralKey::Id { id: bob.id.clone() }, None))
        .await
        .unwrap();
    assert_eq!(un, QualifyOutcome::Unqualified);
    let un = p
        .unqualify(&call(ReferralKey::Id { id: bob.id }, None))
        .await
        .unwrap();
    assert_eq!(un, QualifyOutcome::NotQualified);
}

async fn concurrent_qualifies_from_two_pools(db: &TestDb) {
    let a = db.ledger.clone();
    let b = db.second().await;
    let c = campaign(&a, "A").await;
    rule(
        &a,
        c,
        Recipient::Both,
        Trigger::WhenQualified,
        Metric::Amount,
        "1000",
        Some(5),
    )
    .await;
    a.add_coupons(c, &["RACE-1".into()]).await.unwrap();
    let ann = referrer(&a, c, "Ann", "ann@example.com").await;
    let bob = invited(&a, c, "Bob", "bob@example.com", &ann).await;
    let keys = [
        code(&bob),
        ReferralKey::Id {
            id: bob.id.to_string(),
        },
        ReferralKey::Email {
            email: "Bob@Example.com".into(),
            campaign: c.to_string(),
        },
        ReferralKey::Coupon {
            coupon: "race-1".into(),
        },
    ];
    let mut tasks = Vec::new();
    for i in 0..32 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = keys[i % keys.len()].clone();
        tasks.push(tokio::spawn(async move { l.qualify(&key).await }));
    }
    let mut qualified = 0;
    let mut times = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Qualification::Qualified { user, rewards } => {
                qualified += 1;
                assert_eq!(rewards.len(), 2);
                times.insert(user.qualified_at);
            }
            Qualification::AlreadyQualified { user } => {
                times.insert(user.qualified_at);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(qualified, 1);
    assert_eq!(
        times.len(),
        1,
        "every answer reports the one qualification time"
    );
    assert_eq!(rewards_of(&a, &bob).await.len(), 2);
    assert_eq!(a.qualifications(bob.id).await.unwrap().len(), 1);
    b.close().await;
}

async fn concurrent_signups_with_the_same_email(db: &TestDb) {
    let a = db.ledger.clone();
    let b = db.second().await;
    let c = campaign(&a, "A").await;
    let ann = referrer(&a, c, "Ann", "ann@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let email = if i % 3 == 0 {
            "Same+x@Example.com"
        } else {
            "same@example.com"
        };
        let user = new_user(c, "Same", email, Some(ReferrerRef::Id(ann.id.to_string())));
        tasks.push(tokio::spawn(async move { l.add_user(&user).await }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(kind(&e), ErrorKind::Conflict, "{e}");
                assert_eq!(e.message(), "email already exists");
            }
        }
    }
    assert_eq!(created, 1);
    b.close().await;
}

async fn concurrent_signups_get_distinct_coupons(db: &TestDb) {
    let a = db.ledger.clone();
    let b = db.second().await;
    let c = campaign(&a, "A").await;
    let codes: Vec<String> = (0..10).map(|i| format!("RACE-{i:02}")).collect();
    a.add_coupons(c, &codes).await.unwrap();
    let ann = referrer(&a, c, "Ann", "ann@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let user = new_user(
            c,
            &format!("U{i}"),
            &format!("u{i}@example.com"),
            Some(ReferrerRef::Id(ann.id.to_string())),
        );
        tasks.push(tokio::spawn(async move { l.add_user(&user).await }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap().coupon);
    }
    let assigned: BTreeSet<String> = got.iter().flatten().cloned().collect();
    assert_eq!(got.iter().flatten().count(), 10, "{got:?}");
    assert_eq!(assigned, codes.into_iter().collect(), "each coupon once");
    assert_eq!(got.iter().filter(|c| c.is_none()).count(), 2);
    b.close().await;
}

async fn concurrent_signups_with_a_capped_when_invited_rule(db: &TestDb) {
    // Each sign-up's foreign key takes a key-share lock on the referrer's row, and the cap
    // then locks that row: with `FOR UPDATE` concurrent sign-ups deadlocked on PostgreSQL.
    let a = db.ledger.clone();
    let b = db.second().await;
    let c = campaign(&a, "A").await;
    let one = rule(
        &a,
        c,
        Recipient::Referrer,
        Trigger::WhenInvited,
        Metric::Amount,
        "100",
        Some(1),
    )
    .await;
    let three = rule(
        &a,
        c,
        Recipient::Both,
        Trigger::WhenInvited,
        Metric::Coupon,
        "HELLO",
        Some(3),
    )
    .await;
    for round in 0..3 {
        let ann = referrer(&a, c, "Ann", &format!("ann{round}@example.com")).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            let user = new_user(
                c,
                &format!("U{i}"),
                &format!("u{round}.{i}@example.com"),
                Some(ReferrerRef::Id(ann.id.to_string())),
            );
            tasks.push(tokio::spawn(async move { l.add_user(&user).await }));
        }
        for t in tasks {
            let u = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("sign-up failed: {e}"));
            assert_eq!(u.referrer_id, Some(ann.id));
        }
        let rewards = a
            .rewards(&RewardQuery {
                list: ListQuery {
                    filters: vec![Filter::new(
                        "referrer_id",
                        FilterOp::Equal,
                        ann.id.to_string(),
                    )],
                    ..ListQuery::default()
                },
                ..RewardQuery::default()
            })
            .await
            .unwrap()
            .items;
        let referrals = |rule: i64| {
            rewards
                .iter()
                .filter(|r| r.rule_id == rule && r.status != RewardStatus::Cancelled)
                .map(|r| r.referral_id)
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(referrals(one).len(), 1, "cap 1 exactly: {rewards:?}");
        assert_eq!(referrals(three).len(), 3, "cap 3 exactly: {rewards:?}");
        assert_eq!(
            rewards.iter().filter(|r| r.rule_id == three).count(),
            6,
            "both recipients of the 3 rewarded referrals"
        );
    }
    b.close().await;
}

async fn email_lookups_are_exact_and_case_insensitive(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let other = campaign(l, "B").await;
    rule(
        l,
        c,
        Recipient::Referrer,
        Trigger::WhenQualified,
        Metric::Amount,
        "1",
        None,
    )
    .await;
    let cat = referrer(l, c, "Cat", "catjones+crm@gmail.com").await;
    let email = |email: &str| ReferralKey::Email {
        email: email.into(),
        campaign: c.to_string(),
    };
    let filtered = |value: &str| ListQuery {
        filters: vec![Filter::new("email", FilterOp::Equal, value)],
        ..ListQuery::default()
    };
    for same in [
        "catjones+crm@gmail.com",
        " CatJones+CRM@Gmail.COM ",
        "CATJONES+crm@GMAIL.com",
    ] {
        assert_eq!(
            l.user(&email(same)).await.unwrap().as_ref(),
            Some(&cat),
            "{same:?}"
        );
        assert_eq!(
            l.find_user(same, Some(c)).await.unwrap().as_ref(),
            Some(&cat),
            "{same:?}"
        );
        assert_eq!(
            l.find_user(same, None).await.unwrap().as_ref(),
            Some(&cat),
            "{same:?}"
        );
        let page = l.users(Some(c), &filtered(same)).await.unwrap();
        assert_eq!(page.items, vec![cat.clone()], "{same:?}");
    }
    // The same person for the uniqueness check, but other addresses for a lookup.
    for different in [
        "catjones@gmail.com",
        "cat.jones+crm@gmail.com",
        "catjones+other@gmail.com",
        "catjones+crm@googlemail.com",
    ] {
        assert_eq!(
            l.user(&email(different)).await.unwrap(),
            None,
            "{different}"
        );
        assert_eq!(
            l.find_user(different, Some(c)).await.unwrap(),
            None,
            "{different}"
        );
        assert_eq!(
            l.find_user(different, None).await.unwrap(),
            None,
            "{different}"
        );
        assert_eq!(
            l.users(Some(c), &filtered(different)).await.unwrap().total,
            0
        );
        let e = l
            .add_user(&new_user(c, "Again", different, None))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), ErrorKind::Conflict, "{different}: {e}");
        let e = l
            .add_user(&new_user(
                c,
                "Referrer by another form",
                "x@example.com",
                Some(ReferrerRef::Email(different.into())),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            error_field(&e).unwrap().field,
            "referrer",
            "{different}: {e}"
        );
    }
    // Self-referral still compares the normalized email.
    let e = l
        .add_user(&new_user(
            c,
            "Me",
            "cat.jones+me@gmail.com",
            Some(ReferrerRef::Email(" CATJONES+crm@gmail.com".into())),
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("Self-referral"), "{e}");

    let bob = l
        .add_user(&new_user(
            c,
            "Bob",
            "Bob.Smith+promo@Example.com",
            Some(ReferrerRef::Email("CatJones+CRM@gmail.com ".into())),
        ))
        .await
        .unwrap();
    assert_eq!(bob.referrer_id, Some(cat.id));
    assert_eq!(bob.email, "Bob.Smith+promo@Example.com", "stored as given");
    for different in ["bob.smith@example.com", "bobsmith+promo@example.com"] {
        let e = l.qualify(&email(different)).await.unwrap_err();
        assert_eq!(kind(&e), ErrorKind::NotFound, "{different}: {e}");
    }
    let q = l
        .qualify(&email(" bob.smith+PROMO@example.com"))
        .await
        .unwrap();
    assert!(matches!(q, Qualification::Qualified { .. }), "{q:?}");
    let un = l
        .unqualify(&email("BOB.SMITH+promo@EXAMPLE.COM"))
        .await
        .unwrap();
    assert!(matches!(un, Qualification::Unqualified { .. }), "{un:?}");
    // Another campaign's user with the same email is another user.
    let twin = referrer(l, other, "Twin", "CATJONES+crm@gmail.com").await;
    assert_eq!(
        l.find_user("catjones+crm@gmail.com", Some(other))
            .await
            .unwrap(),
        Some(twin)
    );
    let e = l
        .find_user("catjones+crm@gmail.com", None)
        .await
        .unwrap_err();
    assert_eq!(error_field(&e).unwrap().field, "campaign_id");
}

async fn rewards_involving_any_number_of_users(db: &TestDb) {
    // More ids than either backend takes parameters (SQLite 32,766, PostgreSQL 65,535): the
    // ids must not be bound one parameter each.
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    rule(
        l,
        c,
        Recipient::Both,
        Trigger::WhenQualified,
        Metric::Amount,
        "7",
        None,
    )
    .await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    let bob = invited(l, c, "Bob", "bob@example.com", &ann).await;
    let cy = invited(l, c, "Cy", "cy@example.com", &ann).await;
    l.qualify(&code(&bob)).await.unwrap();
    l.qualify(&code(&cy)).await.unwrap();
    let all = l.rewards_involving(&[ann.id, bob.id, cy.id]).await.unwrap();
    assert_eq!(all.len(), 4);
    let mut ids: Vec<i64> = (1_000_000..1_070_000).collect();
    ids.push(bob.id);
    let many = l.rewards_involving(&ids).await.unwrap();
    assert_eq!(
        many.iter()
            .map(|r| (r.referral_id, r.recipient_id))
            .collect::<BTreeSet<_>>(),
        [(bob.id, ann.id), (bob.id, bob.id)].into_iter().collect(),
        "received by bob or made due by bob"
    );
    assert!(many.windows(2).all(|w| w[0].id < w[1].id), "by id");
    assert!(l.rewards_involving(&[]).await.unwrap().is_empty());
    assert!(
        l.rewards_involving(&ids[..70_000])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn any_page_number_is_safe(db: &TestDb) {
    let l = &db.ledger;
    let c = campaign(l, "A").await;
    let ann = referrer(l, c, "Ann", "ann@example.com").await;
    invited(l, c, "Bob", "bob@example.com", &ann).await;
    let page = |page, per_page| ListQuery {
        page: Some(Pagination { page, per_page }),
        ..ListQuery::default()
    };
    for (p, per, items, shown) in [
        (u32::MAX, u32::MAX, 0, (u32::MAX, 250)),
        (u32::MAX, 1, 0, (u32::MAX, 1)),
        (1, u32::MAX, 2, (1, 250)),
        (2, 251, 0, (2, 250)),
        (0, 0, 1, (1, 1)),
    ] {
        let users = l.users(Some(c), &page(p, per)).await.unwrap();
        assert_eq!(users.items.len(), items, "page {p} per_page {per}");
        assert_eq!(
            (users.page, users.per_page),
            shown,
            "page {p} per_page {per}"
        );
        assert_eq!(users.total, 2);
        let rewards = l
            .rewards(&RewardQuery {
                list: page(p, per),
                ..RewardQuery::default()
            })
            .await
            .unwrap();
        assert_eq!((rewards.page, rewards.per_page), shown);
        assert!(rewards.items.is_empty());
    }
    let page = l.users(Some(c), &page(u32::MAX, u32::MAX)).await.unwrap();
    assert_eq!(page.last_page(), 1);
}

// ----- not per backend ---------------------------------------------------------------------

#[test]
fn settings_debug_never_shows_the_database_password() {
    for url in [
        "postgres://refsync:s3cret-pw@db.example.com:5432/ledger?sslmode=require",
        "postgres://refsync:s3cret@pw@db.example.com/ledger",
        "postgres://db.example.com/ledger?user=refsync&password=s3cret-pw",
    ] {
        let settings = refsync_ledger::LedgerSettings {
            database_url: url.into(),
            link_base_url: Some("https://example.com/r".into()),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example.com"), "{shown}");
        assert!(shown.contains("https://example.com/r"), "{shown}");
        let pretty = format!("{settings:#?}");
        assert!(!pretty.contains("s3cret"), "{pretty}");
    }
    let settings = refsync_ledger::LedgerSettings {
        database_url: "postgres://refsync:s3cret-pw@db.example.com/ledger".into(),
        link_base_url: None,
    };
    assert_eq!(
        format!("{settings:?}"),
        r#"LedgerSettings { database_url: "postgres://refsync:***@db.example.com/ledger", link_base_url: None }"#
    );
}

#[tokio::test]
async fn open_existing_never_creates_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let url = format!("sqlite://{}", path.display());
    let e = Ledger::open_existing(&url).await.unwrap_err();
    assert_eq!(kind(&e), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains(&path.display().to_string()), "{e}");
    assert!(!path.exists(), "not created");
    let l = Ledger::open(&url).await.unwrap();
    campaign(&l, "A").await;
    l.close().await;
    let again = Ledger::open_existing(&url).await.unwrap();
    assert_eq!(again.campaigns().await.unwrap().len(), 1);
    again.close().await;
    Ledger::open_existing("sqlite::memory:")
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn sqlite_file_is_created_with_wal_and_settings_build_through_the_registry() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-ledger.db");
    assert!(!path.exists());
    let url = format!("sqlite://{}", path.display());
    let mut registry = refsync_core::Registry::new();
    refsync_ledger::register(&mut registry);
    let d = registry.platform("ledger").expect("registered");
    let p = (d.build)(serde_json::json!({
        "database_url": url,
        "link_base_url": "https://example.com/join",
    }))
    .await
    .unwrap();
    assert_eq!(p.name(), "ledger");
    assert!(path.exists(), "created on first run");
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();

    let ledger = Ledger::open(&url)
        .await
        .unwrap()
        .with_link_base_url(Some("https://example.com/join/".into()));
    let c = ledger
        .create_campaign(&NewCampaign {
            name: "Default link".into(),
            link_base_url: None,
        })
        .await
        .unwrap();
    assert_eq!(c.link_base_url.as_deref(), Some("https://example.com/join"));

    let e = match (d.build)(serde_json::json!({ "database_url": url, "token": "x" })).await {
        Ok(_) => panic!("unknown settings accepted"),
        Err(e) => e,
    };
    assert_eq!(kind(&e), ErrorKind::Config);
    assert!(e.message().contains("token"), "{e}");
    let e = match (d.build)(serde_json::json!({ "database_url": "mysql://x/y" })).await {
        Ok(_) => panic!("mysql accepted"),
        Err(e) => e,
    };
    assert_eq!(kind(&e), ErrorKind::Config);
}

#[tokio::test]
async fn in_memory_ledger_works() {
    let l = Ledger::open("sqlite::memory:").await.unwrap();
    let c = campaign(&l, "Mem").await;
    let ann = referrer(&l, c, "Ann", "ann@example.com").await;
    let bob = invited(&l, c, "Bob", "bob@example.com", &ann).await;
    assert!(matches!(
        l.qualify(&code(&bob)).await.unwrap(),
        Qualification::Qualified { .. }
    ));
    assert_eq!(l.backend(), refsync_ledger::Backend::Sqlite);
}
