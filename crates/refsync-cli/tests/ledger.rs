//! `refsync ledger ...`, run as a user would, on a temporary SQLite file.

use std::path::Path;
use std::process::{Command, Output};

fn ledger(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refsync"))
        .arg("ledger")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run refsync")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(db: &str, args: &[&str]) -> String {
    let out = ledger(db, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}",
        out.status.code(),
        stderr(&out)
    );
    stdout(&out)
}

/// The value after `label ` up to the next comma or end of line.
fn field(text: &str, label: &str) -> String {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"))
        + label.len();
    text[start..]
        .split([',', '\n'])
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ledger.db").display())
}

#[test]
fn referral_story_shows_referred_by_qualified_date_and_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    assert!(!dir.path().join("ledger.db").exists());

    let out = ok(
        &db,
        &[
            "campaign",
            "create",
            "--name",
            "Spring",
            "--link-base",
            "https://example.com/r",
        ],
    );
    assert!(out.starts_with("created campaign 1 \"Spring\""), "{out}");
    assert!(
        dir.path().join("ledger.db").exists(),
        "created on first run"
    );
    ok(
        &db,
        &[
            "campaign",
            "reward-rule",
            "--campaign",
            "1",
            "--recipient",
            "referrer",
            "--metric",
            "amount",
            "--value",
            "1000",
        ],
    );
    let codes = dir.path().join("coupons.txt");
    std::fs::write(&codes, "SAVE-1\nSAVE-2\n").unwrap();
    let out = ok(
        &db,
        &[
            "campaign",
            "coupons",
            "add",
            "--campaign",
            "1",
            codes.to_str().unwrap(),
        ],
    );
    assert!(out.contains("added 2 coupon(s)"), "{out}");
    let out = ok(&db, &["campaigns"]);
    assert!(
        out.contains("Spring") && out.contains("2/2") && out.contains("referrer gets amount 1000"),
        "{out}"
    );

    let ann = ok(
        &db,
        &[
            "user",
            "add",
            "--campaign",
            "1",
            "--first-name",
            "Ann",
            "--email",
            "ann@example.com",
        ],
    );
    assert!(ann.contains("(Person Referring)"), "{ann}");
    let code = field(&ann, "code ");
    assert_eq!(
        field(&ann, "link "),
        format!("https://example.com/r/{code}")
    );

    let bob = ok(
        &db,
        &[
            "user",
            "add",
            "--campaign",
            "1",
            "--first-name",
            "Bob",
            "--email",
            "bob@example.com",
            "--referrer-code",
            &code,
        ],
    );
    assert!(bob.contains("(Person Invited)"), "{bob}");
    assert!(bob.contains("referred by Ann <ann@example.com>"), "{bob}");
    assert_eq!(field(&bob, "coupon "), "SAVE-1");
    let bob_code = field(&bob, "code ");

    let before = ok(&db, &["users", "--campaign", "1"]);
    let bob_row = before
        .lines()
        .find(|l| l.contains("bob@example.com"))
        .unwrap();
    assert!(bob_row.contains("pending"), "{before}");

    let q = ok(&db, &["qualify", "--code", &bob_code]);
    assert!(q.starts_with("qualified user 2"), "{q}");
    assert!(q.contains("amount 1000 for Ann <ann@example.com>"), "{q}");
    let again = ok(
        &db,
        &["qualify", "--email", "BOB@example.com", "--campaign", "1"],
    );
    assert!(again.starts_with("already qualified"), "{again}");

    let users = ok(&db, &["users", "--campaign", "1"]);
    let header = users.lines().next().unwrap();
    for col in [
        "ID",
        "NAME",
        "EMAIL",
        "CODE",
        "TYPE",
        "REFERRED BY",
        "QUALIFIED",
        "REWARDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let bob_row = users
        .lines()
        .find(|l| l.contains("bob@example.com"))
        .unwrap();
    assert!(bob_row.contains("Person Invited"), "{users}");
    assert!(
        bob_row.contains("Ann <ann@example.com>"),
        "Referred By: {users}"
    );
    assert!(!bob_row.contains("pending"), "{users}");
    assert!(bob_row.contains(" UTC"), "qualified date: {users}");
    let ann_row = users
        .lines()
        .find(|l| l.contains("ann@example.com  "))
        .unwrap();
    assert!(
        ann_row.contains("amount 1000 due (referral 2)"),
        "rewards: {users}"
    );

    let due = ok(&db, &["rewards", "--due"]);
    assert!(due.contains("amount 1000") && due.contains("due"), "{due}");
    let issued = ok(&db, &["reward", "issue", "1"]);
    assert_eq!(
        issued,
        "issued reward 1: amount 1000 to Ann <ann@example.com>\n"
    );
    assert_eq!(ok(&db, &["rewards", "--due"]), "no due rewards\n");
    let users = ok(&db, &["users"]);
    assert!(users.contains("amount 1000 issued (referral 2)"), "{users}");

    // Issuing twice fails with one line and exit 1.
    let out = ledger(&db, &["reward", "issue", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "refsync ledger: reward 1 is already issued\n");

    let un = ok(&db, &["unqualify", "--id", "2"]);
    assert!(un.starts_with("unqualified user 2"), "{un}");
    let by_coupon = ok(&db, &["qualify", "--coupon", "save-1"]);
    assert!(by_coupon.starts_with("qualified user 2"), "{by_coupon}");
    let ignored = ok(&db, &["qualify", "--coupon", "NOT-OURS"]);
    assert!(ignored.starts_with("ignored: "), "{ignored}");
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    ok(&db, &["campaign", "create", "--name", "A"]);
    ok(
        &db,
        &[
            "user",
            "add",
            "--campaign",
            "1",
            "--first-name",
            "Ann",
            "--email",
            "ann.lee@gmail.com",
        ],
    );

    // Failures: exit 1, one line.
    for (args, expected) in [
        (
            vec![
                "user",
                "add",
                "--campaign",
                "1",
                "--first-name",
                "Dup",
                "--email",
                "Ann.Lee+x@gmail.com",
            ],
            "email already exists",
        ),
        (
            vec![
                "user",
                "add",
                "--campaign",
                "1",
                "--first-name",
                "Me",
                "--email",
                "annlee@googlemail.com",
                "--referrer-email",
                "ann.lee@gmail.com",
            ],
            "Self-referral",
        ),
        (
            vec![
                "user",
                "add",
                "--campaign",
                "1",
                "--first-name",
                "X",
                "--email",
                "x@example.com",
                "--referrer-id",
                "99",
            ],
            "referrer is invalid",
        ),
        (vec!["qualify", "--code", "NOPE2345"], "no user with code"),
        (vec!["qualify", "--id", "1"], "Person Referring"),
        (vec!["reward", "cancel", "7"], "no reward 7"),
    ] {
        let out = ledger(&db, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("refsync ledger: ") && err.contains(expected),
            "{args:?}: {err}"
        );
    }

    // Usage: exit 2.
    for args in [
        vec!["qualify"],
        vec!["qualify", "--code", "A", "--id", "1"],
        vec!["qualify", "--email", "a@example.com"],
        vec![
            "user",
            "add",
            "--campaign",
            "1",
            "--first-name",
            "X",
            "--email",
            "x@x.com",
            "--referrer-id",
            "1",
            "--referrer-code",
            "C",
        ],
        vec![
            "campaign",
            "reward-rule",
            "--campaign",
            "1",
            "--recipient",
            "nobody",
            "--metric",
            "amount",
            "--value",
            "1",
        ],
        vec!["frobnicate"],
    ] {
        let out = ledger(&db, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = ledger("mysql://localhost/x", &["campaigns"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unsupported ledger database URL"),
        "{}",
        stderr(&out)
    );
}

/// `refsync ledger ARGS` in `cwd`, with `REFSYNC_LEDGER_DB` set to `env` (or unset).
fn ledger_in(cwd: &Path, env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refsync"));
    cmd.current_dir(cwd).arg("ledger").args(args);
    match env {
        Some(v) => cmd.env("REFSYNC_LEDGER_DB", v),
        None => cmd.env_remove("REFSYNC_LEDGER_DB"),
    };
    cmd.output().expect("run refsync")
}

#[test]
fn only_campaign_create_creates_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.db");
    let db = db_url(dir.path());
    let reads: Vec<Vec<&str>> = vec![
        vec!["campaigns"],
        vec!["users"],
        vec!["users", "--campaign", "1"],
        vec!["rewards", "--due"],
        vec!["qualify", "--code", "ABCD2345"],
        vec!["unqualify", "--id", "1"],
        vec!["reward", "issue", "1"],
        vec![
            "user",
            "add",
            "--campaign",
            "1",
            "--first-name",
            "Ann",
            "--email",
            "ann@example.com",
        ],
        vec![
            "campaign",
            "reward-rule",
            "--campaign",
            "1",
            "--recipient",
            "referrer",
            "--metric",
            "amount",
            "--value",
            "1",
        ],
        vec!["campaign", "coupons", "add", "--campaign", "1", "SAVE-1"],
    ];
    for args in &reads {
        let out = ledger(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&file.display().to_string()) && err.contains("campaign create"),
            "{args:?}: names the path and how to create it: {err}"
        );
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }

    // The default database, relative to the working directory: not created by a read either.
    let out = ledger_in(dir.path(), None, &["users"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refsync-ledger.db"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("refsync-ledger.db").exists());

    ok(&db, &["campaign", "create", "--name", "A"]);
    assert!(file.exists());
    assert!(ok(&db, &["users"]).starts_with("no users"));
    for args in [
        vec!["users", "--campaign", "42"],
        vec!["rewards", "--campaign", "42"],
    ] {
        let out = ledger(&db, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("refsync ledger: no campaign 42"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(ok(&db, &["users", "--campaign", "1"]).starts_with("no users"));
}

#[test]
fn the_database_comes_from_refsync_ledger_db_and_its_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let env_db = format!("sqlite://{}", dir.path().join("env.db").display());
    let out = ledger_in(
        dir.path(),
        Some(&env_db),
        &["campaign", "create", "--name", "From env"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("env.db").exists());
    assert!(!dir.path().join("refsync-ledger.db").exists());
    let out = ledger_in(dir.path(), Some(&env_db), &["campaigns"]);
    assert!(stdout(&out).contains("From env"), "{}", stdout(&out));
    // --db wins over the variable.
    let flag_db = db_url(dir.path());
    let out = ledger_in(dir.path(), Some(&env_db), &["--db", &flag_db, "campaigns"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ledger.db"), "{}", stderr(&out));

    // PostgreSQL URLs that fail fast without leaving the machine (a closed loopback port, a bad
    // port):
    // the password is in no message, from the flag or the variable.
    for url in [
        "postgres://refsync:s3cret-pw@127.0.0.1:1/ledger",
        "postgres://refsync:s3cret-pw@127.0.0.1:notaport/ledger",
        "postgres://refsync:s3cret@pw@127.0.0.1:1/ledger",
        "postgres://127.0.0.1:1/ledger?user=refsync&password=s3cret-pw",
    ] {
        for out in [
            ledger_in(dir.path(), None, &["--db", url, "campaigns"]),
            ledger_in(dir.path(), Some(url), &["users"]),
            ledger_in(
                dir.path(),
                Some(url),
                &["campaign", "create", "--name", "X"],
            ),
        ] {
            assert!(!out.status.success(), "{url}");
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert!(!all.contains("s3cret"), "{url}: {all}");
            assert!(all.contains("***"), "{url}: shows the URL, redacted: {all}");
        }
    }
}
