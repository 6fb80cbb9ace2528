//! Precise edge cases with the mockall mocks that feature `mock` generates.

use refsync_core::rules::{AllOf, AnyOf};
use refsync_core::{
    Change, CrmEvent, MockConnector, MockQualificationRule, ObjectKind, QualificationRule,
    ReferralHistory, Verdict,
};

fn event() -> CrmEvent {
    CrmEvent::new("t", ObjectKind::Deal, "1", Change::Deleted)
}

fn rule(name: &'static str, verdict: fn() -> Verdict, times: usize) -> Box<dyn QualificationRule> {
    let mut m = MockQualificationRule::new();
    m.expect_name().return_const(name.to_owned());
    m.expect_evaluate()
        .times(times)
        .returning(move |_, _| verdict());
    Box::new(m)
}

fn qualify() -> Verdict {
    Verdict::Qualify {
        rule: "a".into(),
        reason: "yes".into(),
    }
}
fn skip() -> Verdict {
    Verdict::Skip {
        rule: "b".into(),
        reason: "no".into(),
    }
}

#[test]
fn any_of_stops_at_the_first_rule_that_qualifies() {
    // The third rule must never be evaluated: mockall checks `times(0)` on drop.
    let any = AnyOf(vec![
        rule("a", skip, 1),
        rule("b", qualify, 1),
        rule("c", qualify, 0),
    ]);
    let v = any.evaluate(&event(), &ReferralHistory::default());
    assert_eq!(v.rule(), "any_of(a,b,c)");
    assert_eq!(v.reason(), "a: yes");
}

#[test]
fn all_of_looks_back_only_for_conditions_this_event_does_not_meet() {
    let mut history = ReferralHistory::default();
    history.events.push(event());
    history.events.push(event());
    // "now" qualifies on the current event: evaluated once, never against history.
    // "before" skips now, then is evaluated against the two earlier events until one qualifies.
    let mut before = MockQualificationRule::new();
    before.expect_name().return_const("before".to_owned());
    let mut calls = 0;
    before.expect_evaluate().times(2).returning(move |_, _| {
        calls += 1;
        if calls == 1 { skip() } else { qualify() }
    });
    let all = AllOf(vec![rule("now", qualify, 1), Box::new(before)]);
    assert!(all.evaluate(&event(), &history).is_qualify());
}

#[test]
fn connector_mock_is_object_safe_and_usable_behind_arc() {
    let mut c = MockConnector::new();
    c.expect_parse().returning(|_| Ok(vec![]));
    let c: std::sync::Arc<dyn refsync_core::Connector> = std::sync::Arc::new(c);
    assert!(
        c.parse(&refsync_core::WebhookRequest::default())
            .unwrap()
            .is_empty()
    );
}
