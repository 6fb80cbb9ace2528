//! Built-in qualification rules, evaluated across one and several webhooks.

use proptest::prelude::*;
use refsync_core::rules::decide;
use refsync_core::{
    Change, CrmEvent, EventObject, ObjectKind, QualifyAction, ReferralHistory, ReferralKey,
    RuleSpec, Verdict,
};

fn deal_stage(id: &str, to: &str) -> CrmEvent {
    CrmEvent::new(
        "test",
        ObjectKind::Deal,
        id,
        Change::StageChanged {
            pipeline: Some("1".into()),
            from: None,
            to: to.into(),
        },
    )
}
fn converted(lead: &str, deal: Option<&str>) -> CrmEvent {
    CrmEvent::new(
        "test",
        ObjectKind::Lead,
        lead,
        Change::LeadConverted {
            lead_id: lead.into(),
            deal_id: deal.map(Into::into),
        },
    )
}
fn rule(spec: &str) -> Box<dyn refsync_core::QualificationRule> {
    serde_json::from_str::<RuleSpec>(spec)
        .unwrap()
        .build()
        .unwrap()
}
fn linked() -> ReferralHistory {
    ReferralHistory {
        referral: Some(ReferralKey::Code { code: "R1".into() }),
        campaign: Some("42".into()),
        ..ReferralHistory::default()
    }
}

#[test]
fn deal_won_only_on_won_deals() {
    let r = rule(r#"{"rule":"deal_won"}"#);
    let won = CrmEvent::new(
        "t",
        ObjectKind::Deal,
        "8",
        Change::StatusChanged {
            from: Some("open".into()),
            to: "won".into(),
        },
    );
    let lost = CrmEvent::new(
        "t",
        ObjectKind::Deal,
        "8",
        Change::StatusChanged {
            from: None,
            to: "lost".into(),
        },
    );
    let lead_won = CrmEvent::new(
        "t",
        ObjectKind::Lead,
        "8",
        Change::StatusChanged {
            from: None,
            to: "won".into(),
        },
    );
    assert!(r.evaluate(&won, &linked()).is_qualify());
    assert!(!r.evaluate(&lost, &linked()).is_qualify());
    assert!(!r.evaluate(&lead_won, &linked()).is_qualify());
}

#[test]
fn deal_stage_changed_respects_pipeline() {
    let r = rule(r#"{"rule":"deal_stage_changed","to":"3","pipeline":"1"}"#);
    assert!(r.evaluate(&deal_stage("8", "3"), &linked()).is_qualify());
    assert!(!r.evaluate(&deal_stage("8", "2"), &linked()).is_qualify());
    let mut other_pipeline = deal_stage("8", "3");
    other_pipeline.change = Change::StageChanged {
        pipeline: Some("9".into()),
        from: None,
        to: "3".into(),
    };
    let v = r.evaluate(&other_pipeline, &linked());
    assert!(
        !v.is_qualify() && v.reason().contains("pipeline 9"),
        "{v:?}"
    );
    // A stage *settings* change is another object kind and never counts.
    let mut stage_object = deal_stage("8", "3");
    stage_object.object.kind = ObjectKind::Other("stage".into());
    assert!(!r.evaluate(&stage_object, &linked()).is_qualify());
}

#[test]
fn lead_converted_at_stage_across_two_webhooks_in_either_order() {
    let r = rule(r#"{"rule":"lead_converted_at_stage","stage":"3"}"#);
    // Conversion first (deal starts at stage 1), stage 3 later.
    let conv = converted("L1", Some("D1"));
    let mut h = linked();
    h.events.push(deal_stage("D1", "1"));
    assert!(!r.evaluate(&conv, &h).is_qualify(), "deal is at stage 1");
    h.events.push(conv.clone());
    assert!(r.evaluate(&deal_stage("D1", "3"), &h).is_qualify());
    // Another deal reaching stage 3 does not count.
    assert!(!r.evaluate(&deal_stage("D2", "3"), &h).is_qualify());
    // Stage first, conversion second.
    let mut h2 = linked();
    h2.events.push(deal_stage("D1", "3"));
    assert!(r.evaluate(&conv, &h2).is_qualify());
    // Stage without any conversion: no.
    assert!(!r.evaluate(&deal_stage("D1", "3"), &linked()).is_qualify());
}

#[test]
fn all_of_fires_once_when_the_last_fact_arrives() {
    let r = rule(
        r#"{"rule":"all_of","rules":[{"rule":"lead_converted"},{"rule":"deal_stage_changed","to":"3"}]}"#,
    );
    let conv = converted("L1", Some("D1"));
    let mut h = linked();
    assert!(!r.evaluate(&conv, &h).is_qualify(), "stage not reached yet");
    h.events.push(conv);
    let v = r.evaluate(&deal_stage("D1", "3"), &h);
    assert!(v.is_qualify(), "{v:?}");
    h.events.push(deal_stage("D1", "3"));
    // An unrelated later event does not fire again.
    let later = CrmEvent::new(
        "t",
        ObjectKind::Deal,
        "D1",
        Change::Updated {
            fields: vec!["title".into()],
        },
    );
    assert!(!r.evaluate(&later, &h).is_qualify());
}

#[test]
fn any_of_takes_the_first_that_qualifies() {
    let r = rule(r#"{"rule":"any_of","rules":[{"rule":"deal_won"},{"rule":"lead_converted"}]}"#);
    let v = r.evaluate(&converted("L1", None), &linked());
    assert!(v.is_qualify());
    assert!(v.rule().starts_with("any_of("));
}

#[test]
fn coupon_used_needs_a_paid_order() {
    let r = rule(r#"{"rule":"coupon_used"}"#);
    let ev = |s: Option<&str>| {
        CrmEvent::new(
            "t",
            ObjectKind::Order,
            "5",
            Change::CouponUsed {
                code: "FRIEND-1".into(),
                order_status: s.map(Into::into),
            },
        )
    };
    assert!(
        r.evaluate(&ev(Some("processing")), &ReferralHistory::default())
            .is_qualify()
    );
    assert!(
        r.evaluate(&ev(Some("Completed")), &ReferralHistory::default())
            .is_qualify()
    );
    assert!(
        !r.evaluate(&ev(Some("pending")), &ReferralHistory::default())
            .is_qualify()
    );
    assert!(
        !r.evaluate(&ev(None), &ReferralHistory::default())
            .is_qualify()
    );
    // The coupon identifies the referral when nothing else does.
    let d = decide(
        &[r],
        &ev(Some("completed")),
        &ReferralHistory::default(),
        None,
    );
    let call = d[0].call.as_ref().unwrap();
    assert_eq!(
        call.referral,
        ReferralKey::Coupon {
            coupon: "FRIEND-1".into()
        }
    );
    assert_eq!(
        call.idempotency_key(),
        "qualify:-:coupon:friend-1:coupon_used"
    );
}

#[test]
fn unqualify_on_refund() {
    let r = rule(r#"{"rule":"unqualify_on_status","statuses":["refunded","cancelled"]}"#);
    let ev = CrmEvent::new(
        "t",
        ObjectKind::Order,
        "5",
        Change::StatusChanged {
            from: Some("completed".into()),
            to: "refunded".into(),
        },
    );
    assert!(matches!(
        r.evaluate(&ev, &linked()),
        Verdict::Unqualify { .. }
    ));
    let d = decide(&[r], &ev, &linked(), None);
    assert_eq!(d[0].call.as_ref().unwrap().action, QualifyAction::Unqualify);
}

#[test]
fn a_refunded_order_belongs_to_the_referral_of_its_coupon() {
    let r = rule(r#"{"rule":"unqualify_on_status","statuses":["refunded"]}"#);
    let mut ev = CrmEvent::new(
        "t",
        ObjectKind::Order,
        "5",
        Change::StatusChanged {
            from: None,
            to: "refunded".into(),
        },
    );
    // Nothing links the order, and it carries no code or email: no referral.
    let d = decide(
        std::slice::from_ref(&r),
        &ev,
        &ReferralHistory::default(),
        None,
    );
    assert!(d[0].call.is_none(), "{d:?}");
    // Its related coupon names the referral.
    ev.related = vec![
        EventObject {
            kind: ObjectKind::Contact,
            id: "9".into(),
        },
        EventObject {
            kind: ObjectKind::Coupon,
            id: "friend-1".into(),
        },
    ];
    let d = decide(&[r], &ev, &ReferralHistory::default(), None);
    let call = d[0].call.as_ref().expect("a call");
    assert_eq!(call.action, QualifyAction::Unqualify);
    assert_eq!(
        call.referral,
        ReferralKey::Coupon {
            coupon: "friend-1".into()
        }
    );
}

#[test]
fn decide_resolves_the_referral_or_says_why_not() {
    let r = rule(r#"{"rule":"deal_won"}"#);
    let mut won = CrmEvent::new(
        "t",
        ObjectKind::Deal,
        "8",
        Change::StatusChanged {
            from: None,
            to: "won".into(),
        },
    );
    let d = decide(
        std::slice::from_ref(&r),
        &won,
        &ReferralHistory::default(),
        None,
    );
    assert!(d[0].call.is_none());
    assert!(
        d[0].verdict.reason().contains("no referral is linked"),
        "{:?}",
        d[0]
    );
    won.referral_code = Some(" ABC ".into());
    let d = decide(
        std::slice::from_ref(&r),
        &won,
        &ReferralHistory::default(),
        Some("42"),
    );
    let call = d[0].call.as_ref().unwrap();
    assert_eq!(call.referral, ReferralKey::Code { code: "ABC".into() });
    assert_eq!(call.idempotency_key(), "qualify:42:code:ABC:deal_won");
    // By email within the campaign when there is no code.
    won.referral_code = None;
    won.email = Some("Ann@Example.com".into());
    let d = decide(&[r], &won, &ReferralHistory::default(), Some("42"));
    assert_eq!(
        d[0].call.as_ref().unwrap().referral.canonical(),
        "email:42:ann@example.com"
    );
}

#[test]
fn bad_rule_configs_are_config_errors() {
    for bad in [
        r#"{"rule":"deal_stage_changed","to":""}"#,
        r#"{"rule":"any_of","rules":[]}"#,
        r#"{"rule":"coupon_used","paid_statuses":[]}"#,
    ] {
        let spec: RuleSpec = serde_json::from_str(bad).unwrap();
        assert_eq!(
            spec.build().unwrap_err().kind(),
            &refsync_core::ErrorKind::Config,
            "{bad}"
        );
    }
    assert!(serde_json::from_str::<RuleSpec>(r#"{"rule":"deal_won","extra":1}"#).is_err());
    assert!(serde_json::from_str::<RuleSpec>(r#"{"rule":"deal_lost"}"#).is_err());
}

fn arb_change() -> impl Strategy<Value = Change> {
    let s = || proptest::option::of("[0-9a-z]{0,3}");
    prop_oneof![
        Just(Change::Created),
        Just(Change::Deleted),
        (s(), s(), "[0-9]{0,2}").prop_map(|(pipeline, from, to)| Change::StageChanged {
            pipeline,
            from,
            to
        }),
        (s(), "[a-z]{0,8}").prop_map(|(from, to)| Change::StatusChanged { from, to }),
        ("[A-Z0-9]{0,3}", s())
            .prop_map(|(lead_id, deal_id)| Change::LeadConverted { lead_id, deal_id }),
        ("\\PC{0,6}", s())
            .prop_map(|(code, order_status)| Change::CouponUsed { code, order_status }),
    ]
}

fn arb_event() -> impl Strategy<Value = CrmEvent> {
    (
        prop_oneof![
            Just(ObjectKind::Deal),
            Just(ObjectKind::Lead),
            Just(ObjectKind::Order)
        ],
        "[0-9]{0,2}",
        arb_change(),
        proptest::option::of("\\PC{0,4}"),
        proptest::option::of("\\PC{0,6}"),
    )
        .prop_map(|(k, id, c, code, email)| {
            let mut e = CrmEvent::new("p", k, id, c);
            e.referral_code = code;
            e.email = email;
            e
        })
}

proptest! {
    #[test]
    fn rules_never_panic_and_all_of_fires_only_on_its_facts(events in proptest::collection::vec(arb_event(), 0..12)) {
        let rules = vec![
            rule(r#"{"rule":"all_of","rules":[{"rule":"lead_converted"},{"rule":"deal_stage_changed","to":"3"}]}"#),
            rule(r#"{"rule":"lead_converted_at_stage","stage":"3"}"#),
            rule(r#"{"rule":"any_of","rules":[{"rule":"deal_won"},{"rule":"coupon_used"}]}"#),
            rule(r#"{"rule":"unqualify_on_status","statuses":["refunded"]}"#),
        ];
        let mut h = ReferralHistory::default();
        for e in &events {
            let decisions = decide(&rules, e, &h, Some("c"));
            prop_assert_eq!(decisions.len(), rules.len());
            // all_of only ever fires on an event that is itself one of its facts.
            if rules[0].evaluate(e, &h).is_qualify() {
                let is_fact = matches!(e.change, Change::LeadConverted { .. } | Change::StageChanged { .. });
                prop_assert!(is_fact, "all_of fired on {:?}", e.change);
            }
            h.events.push(e.clone());
        }
    }
}

#[test]
fn a_conversion_without_its_deal_counts_only_for_linked_deals() {
    let r = rule(r#"{"rule":"lead_converted_at_stage","stage":"3"}"#);
    let mut h = linked();
    h.events.push(converted("L1", None));
    assert!(
        !r.evaluate(&deal_stage("D9", "3"), &h).is_qualify(),
        "D9 is not linked to the referral"
    );
    h.links.push(refsync_core::CrmObjectRef {
        kind: ObjectKind::Deal,
        id: "D9".into(),
    });
    assert!(r.evaluate(&deal_stage("D9", "3"), &h).is_qualify());
}

#[test]
fn staying_at_a_stage_is_not_a_stage_change() {
    let r = rule(r#"{"rule":"deal_stage_changed","to":"3"}"#);
    let mut e = deal_stage("8", "3");
    e.change = Change::StageChanged {
        pipeline: None,
        from: Some("3".into()),
        to: "3".into(),
    };
    assert!(!r.evaluate(&e, &linked()).is_qualify());
}

#[test]
fn two_rules_firing_for_one_referral_share_the_referral_key() {
    let rules = vec![
        rule(r#"{"rule":"deal_won"}"#),
        rule(r#"{"rule":"deal_stage_changed","to":"5"}"#),
    ];
    let events = [
        deal_stage("8", "5"),
        CrmEvent::new(
            "t",
            ObjectKind::Deal,
            "8",
            Change::StatusChanged {
                from: None,
                to: "won".into(),
            },
        ),
    ];
    let out = refsync_core::rules::decide_delivery(&rules, &events, linked(), None);
    let calls: Vec<_> = out
        .iter()
        .flat_map(|e| e.decisions.iter().filter_map(|d| d.call.as_ref()))
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "each rule decides; the engine qualifies once per referral key"
    );
    assert_ne!(calls[0].idempotency_key(), calls[1].idempotency_key());
    assert_eq!(calls[0].referral_key(), "42:code:R1");
    assert_eq!(calls[0].referral_key(), calls[1].referral_key());
}

fn lead_linked_history(lead: &str, events: Vec<CrmEvent>) -> ReferralHistory {
    ReferralHistory {
        links: vec![refsync_core::CrmObjectRef {
            kind: ObjectKind::Lead,
            id: lead.into(),
        }],
        events,
        ..linked()
    }
}

#[test]
fn a_lead_deleted_and_a_deal_created_derive_one_conversion_in_either_order() {
    use refsync_core::rules::derive_lead_conversion;
    let deleted = CrmEvent::new("t", ObjectKind::Lead, "L1", Change::Deleted);
    let created = CrmEvent::new("t", ObjectKind::Deal, "D9", Change::Created);
    let want = Change::LeadConverted {
        lead_id: "L1".into(),
        deal_id: Some("D9".into()),
    };
    // deal first, then the lead's deletion
    let d = derive_lead_conversion(&deleted, &lead_linked_history("L1", vec![created.clone()]))
        .expect("derived on the deletion");
    assert_eq!(d.change, want);
    assert_eq!(d.object.id, "L1");
    // deletion first, then the deal
    let d2 = derive_lead_conversion(&created, &lead_linked_history("L1", vec![deleted.clone()]))
        .expect("derived on the creation");
    assert_eq!(d2.change, want);
    // the derived event qualifies under lead_converted
    let v = rule(r#"{"rule":"lead_converted"}"#).evaluate(&d2, &linked());
    assert!(v.is_qualify(), "{v:?}");
    // once a conversion of that lead is known, nothing more is derived
    let again = lead_linked_history("L1", vec![deleted.clone(), d2]);
    assert_eq!(derive_lead_conversion(&created, &again), None);
    // one fact alone is not a conversion
    assert_eq!(
        derive_lead_conversion(&created, &lead_linked_history("L1", vec![])),
        None
    );
    assert_eq!(
        derive_lead_conversion(&deleted, &lead_linked_history("L1", vec![])),
        None
    );
    // a deleted lead that is not the referral's lead is not its conversion
    let other = CrmEvent::new("t", ObjectKind::Lead, "L2", Change::Deleted);
    assert_eq!(
        derive_lead_conversion(&created, &lead_linked_history("L1", vec![other])),
        None
    );
    // a referral pushed as a deal (no lead link) never "converts"
    let no_lead = ReferralHistory {
        events: vec![deleted],
        ..linked()
    };
    assert_eq!(derive_lead_conversion(&created, &no_lead), None);
}

#[test]
fn a_derived_conversion_then_the_stage_qualifies_lead_converted_at_stage() {
    use refsync_core::rules::derive_lead_conversion;
    let deleted = CrmEvent::new("t", ObjectKind::Lead, "L1", Change::Deleted);
    let created = CrmEvent::new("t", ObjectKind::Deal, "D9", Change::Created);
    let conv = derive_lead_conversion(&created, &lead_linked_history("L1", vec![deleted.clone()]))
        .unwrap();
    let r = rule(r#"{"rule":"lead_converted_at_stage","stage":"3"}"#);
    let h = lead_linked_history("L1", vec![deleted, created, conv]);
    assert!(!r.evaluate(&deal_stage("D9", "2"), &h).is_qualify());
    assert!(r.evaluate(&deal_stage("D9", "3"), &h).is_qualify());
    assert!(!r.evaluate(&deal_stage("D10", "3"), &h).is_qualify());
}

proptest! {
    #[test]
    fn derive_lead_conversion_never_panics(events in proptest::collection::vec(arb_event(), 0..10), lead in "[0-9a-z]{0,3}") {
        if let Some((last, rest)) = events.split_last() {
            let h = lead_linked_history(&lead, rest.to_vec());
            if let Some(d) = refsync_core::rules::derive_lead_conversion(last, &h) {
                let is_conversion = matches!(d.change, Change::LeadConverted { .. });
                prop_assert!(is_conversion);
                prop_assert_eq!(&d.object.id, &lead);
            }
        }
    }
}

fn at(mut e: CrmEvent, ms: i64) -> CrmEvent {
    e.occurred_at = chrono::DateTime::from_timestamp_millis(ms);
    e
}
fn deal_status(id: &str, to: &str) -> CrmEvent {
    CrmEvent::new(
        "test",
        ObjectKind::Deal,
        id,
        Change::StatusChanged {
            from: None,
            to: to.into(),
        },
    )
}

#[test]
fn an_event_older_than_a_recorded_fact_of_its_object_decides_nothing() {
    let rules = vec![
        rule(r#"{"rule":"deal_won"}"#),
        rule(r#"{"rule":"unqualify_on_status","statuses":["lost"]}"#),
        rule(r#"{"rule":"deal_stage_changed","to":"contractsent"}"#),
    ];
    // Won at t=2000, then lost at t=3000 delivered first: the late `won` is stale.
    let mut h = linked();
    h.events.push(at(deal_status("8", "lost"), 3000));
    let late_won = at(deal_status("8", "won"), 2000);
    let d = decide(&rules, &late_won, &h, None);
    assert!(d.iter().all(|d| d.call.is_none()), "{d:?}");
    assert!(d[0].verdict.reason().starts_with("stale:"), "{d:?}");
    // In the right order the same event qualifies.
    let mut h = linked();
    h.events.push(at(deal_status("8", "open"), 1000));
    assert!(decide(&rules, &late_won, &h, None)[0].call.is_some());
    // Stages are their own fact: a newer status does not make an older stage stale.
    let mut h = linked();
    h.events.push(at(deal_status("8", "lost"), 3000));
    let stage = at(deal_stage("8", "contractsent"), 2000);
    assert!(decide(&rules, &stage, &h, None)[2].call.is_some());
    // ...but a newer stage does.
    h.events.push(at(deal_stage("8", "closedlost"), 2500));
    assert!(decide(&rules, &stage, &h, None)[2].call.is_none());
    // Another deal's facts, equal times and unknown times never make an event stale.
    let mut h = linked();
    h.events.push(at(deal_status("9", "lost"), 3000));
    h.events.push(at(deal_status("8", "lost"), 2000));
    h.events.push(deal_status("8", "lost"));
    assert!(decide(&rules, &late_won, &h, None)[0].call.is_some());
    let untimed = deal_status("8", "won");
    let mut h = linked();
    h.events.push(at(deal_status("8", "lost"), 3000));
    assert!(decide(&rules, &untimed, &h, None)[0].call.is_some());
}
