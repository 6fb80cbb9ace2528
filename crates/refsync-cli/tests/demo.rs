//! `refsync demo`, run as a user would: the whole story over loopback HTTP.

use std::process::Command;

#[test]
fn the_demo_runs_the_story_end_to_end_and_qualifies_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_refsync"))
        .args(["demo", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "a referrer joins",
        "she invites a friend",
        "refsync creates its Pipedrive webhooks",
        "webhook create.lead",
        "webhook create.deal",
        "webhook delete.lead",
        "redelivery change.deal 1 → duplicate",
        "(1 qualification)",
        "1 lead converted into 1 deal in Pipedrive, 1 qualification, 1 reward due",
        "reward 1 due: amount 5000",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // The timeline, from the admin API.
    for kind in [
        "push_queued",
        "pushed",
        "lead_converted",
        "stage_changed",
        "rule lead_converted_at_stage(stage=3) fired",
        "rule deal_won fired",
        "not sent again",
        "qualified on ledger",
    ] {
        assert!(stdout.contains(kind), "timeline lacks {kind:?}:\n{stdout}");
    }
    assert_eq!(
        stdout.matches("qualify queued").count(),
        1,
        "one qualify job:\n{stdout}"
    );
    assert_eq!(
        stdout.matches("qualified on ledger").count(),
        1,
        "one qualification:\n{stdout}"
    );
    // The ledger's users table.
    assert!(stdout.contains("Person Invited"), "{stdout}");
    assert!(stdout.contains("amount 5000 due"), "{stdout}");
    // --dir keeps the files.
    assert!(dir.path().join("refsync.db").exists());
    assert!(dir.path().join("ledger.db").exists());
}
