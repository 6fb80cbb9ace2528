//! `refsync check-config`, run as a user would.

use std::process::Command;

fn refsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_refsync"))
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/refsync.toml");

#[test]
fn the_annotated_example_is_valid_with_its_secrets_in_the_environment() {
    let out = refsync()
        .args(["check-config", "-c", EXAMPLE])
        .env("REFSYNC_ADMIN_TOKEN", "admin-token-123456")
        .env(
            "CRM_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .env("CRM_PUSH_URL", "https://hooks.example.com/catch/1")
        .env("CRM_API_KEY", "crm-api-key-123456")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn a_broken_file_gets_every_problem_at_its_line_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refsync.toml");
    std::fs::write(
        &path,
        "[server]\nbodylimit = 5\n\n[[instances]]\nname = \"crm\"\nconnector = \"pipedriv\"\n\n[[instances]]\nname = \"crm\"\nconnector = \"generic-webhook\"\n[instances.settings.auth]\ntype = \"token\"\nheader = \"X-T\"\ntoken = 98765432\n",
    )
    .unwrap();
    let out = refsync()
        .args(["check-config", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let file = path.display().to_string();
    for want in [
        format!("{file}:2:1: unknown key `bodylimit`"),
        format!("{file}:6:13: unknown connector \"pipedriv\""),
        format!("{file}:9:8: duplicate instance name \"crm\""),
        format!("{file}:11:1: invalid generic-webhook settings"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("98765432"),
        "a secret value was printed:\n{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 problems"));
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let out = refsync()
        .args(["check-config", "-c", "/nonexistent/refsync.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/refsync.toml"));
}
