//! `refsync.toml`: loading, `${env:…}` / `${file:…}`, and `check` reporting every problem at
//! its line:column with a hint.

use std::collections::HashMap;
use std::path::PathBuf;

use refsync_core::Registry;
use refsync_engine::config::{self, Loader, PlatformConfig, Problem};

fn registry() -> Registry {
    let mut r = Registry::new();
    refsync_generic_webhook::register(&mut r);
    r
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn check_with(text: &str, env: &HashMap<String, String>) -> Vec<Problem> {
    let r = registry();
    Loader::new().env(env).registry(&r).check(text)
}

fn check(text: &str) -> Vec<Problem> {
    check_with(text, &HashMap::new())
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The problem at `line:column`, whose message contains `needle`.
#[track_caller]
fn expect(problems: &[Problem], line: usize, column: usize, needle: &str) -> Problem {
    problems
        .iter()
        .find(|p| p.line == line && p.column == column && p.message.contains(needle))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no problem at {line}:{column} containing {needle:?} in:\n{}",
                render(problems)
            )
        })
}

const VALID: &str = r#"
[server]
listen = "0.0.0.0:9000"
admin_token = "admin-token-123"

[store]
url = "sqlite://test.db"

[platform]
type = "ledger"
database_url = "sqlite://ledger.db"

[[instances]]
name = "crm"
connector = "generic-webhook"
campaign = "7"

[instances.settings]
auth = { type = "token", header = "X-Token", token = "tok-123456" }

[instances.settings.events]
object_kind = { value = "deal" }
object_id = "/id"

[instances.push]
object = "lead"

[instances.push.fields]
email = "{Email}"
code = "{Referral Code}"

[[instances.rules]]
rule = "deal_won"
"#;

#[test]
fn a_valid_config_loads_with_defaults() {
    let r = registry();
    let problems = Loader::new().registry(&r).check(VALID);
    assert!(problems.is_empty(), "{}", render(&problems));
    let c = Loader::new().registry(&r).parse(VALID).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.server.body_limit_bytes, 1024 * 1024);
    assert_eq!(c.server.admin_token.unwrap().expose(), "admin-token-123");
    assert!(!c.store.is_postgres());
    assert_eq!(c.platform.name(), "ledger");
    assert_eq!(
        c.platform.settings(),
        serde_json::json!({"database_url": "sqlite://ledger.db"})
    );
    assert_eq!(c.instances.len(), 1);
    let i = c.instances[0].instance_config();
    assert_eq!(i.connector.as_deref(), Some("generic-webhook"));
    assert_eq!(i.rules.len(), 1);
    assert_eq!(c.worker.max_age().as_secs(), 24 * 3600);
    assert!(c.worker.concurrency > 0);
}

#[test]
fn an_empty_file_is_all_defaults() {
    let c = config::parse("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.store.url.expose(), "sqlite://refsync.db");
    assert_eq!(c.platform, PlatformConfig::default());
    assert!(c.instances.is_empty());
    assert!(c.server.admin_token.is_none());
}

#[test]
fn syntax_errors_have_a_position_and_never_echo_the_line() {
    let text = "[server]\nadmin_token = \"hunter2-secret\nlisten = 1\n";
    let problems = check(text);
    assert!(!problems.is_empty());
    let p = &problems[0];
    assert_eq!(p.line, 2, "{}", render(&problems));
    assert!(p.message.contains("TOML syntax error"), "{p}");
    assert!(
        !render(&problems).contains("hunter2"),
        "{}",
        render(&problems)
    );
    assert_eq!(p.file, "refsync.toml");
}

#[test]
fn unknown_keys_suggest_the_close_match() {
    let text = "[server]\nlisen = \"127.0.0.1:1\"\n\n[sever]\nx = 1\n";
    let problems = check(text);
    let p = expect(&problems, 2, 1, "unknown key `lisen`");
    assert!(p.hint.contains("did you mean `listen`"), "{p}");
    let p = expect(&problems, 4, 2, "unknown key `sever`");
    assert!(p.hint.contains("did you mean `server`"), "{p}");
    assert_eq!(problems.len(), 2, "{}", render(&problems));
    assert!(
        p.to_string()
            .starts_with("refsync.toml:4:2: unknown key `sever`"),
        "{p}"
    );
    assert!(p.to_string().ends_with(")"), "{p}");
}

#[test]
fn wrong_types_are_reported_without_the_value() {
    let text = "[worker]\nconcurrency = \"many-secret-words\"\nmax_age_secs = true\n";
    let problems = check(text);
    expect(&problems, 2, 15, "invalid type");
    expect(&problems, 3, 16, "invalid type");
    assert!(!render(&problems).contains("many-secret-words"));
}

#[test]
fn duplicate_and_invalid_instance_names() {
    let text = r#"
[[instances]]
name = "crm"
connector = "generic-webhook"
settings = { auth = { type = "none" } }

[[instances]]
name = "crm"
connector = "generic-webhook"
settings = { auth = { type = "none" } }

[[instances]]
name = "not/url safe"
connector = "generic-webhook"
settings = { auth = { type = "none" } }
"#;
    let problems = check(text);
    let p = expect(&problems, 8, 8, "duplicate instance name");
    assert!(p.hint.contains("line 3"), "{p}");
    expect(&problems, 13, 8, "not URL-safe");
    assert_eq!(problems.len(), 2, "{}", render(&problems));
}

#[test]
fn unknown_connectors_list_the_compiled_in_ones() {
    let text = "[[instances]]\nname = \"a\"\nconnector = \"generic-webhok\"\n";
    let problems = check(text);
    let p = expect(&problems, 3, 13, "unknown connector \"generic-webhok\"");
    assert!(p.hint.contains("compiled in: generic-webhook"), "{p}");
    assert!(p.hint.contains("did you mean \"generic-webhook\""), "{p}");
}

#[test]
fn invalid_connector_settings_point_into_the_settings_table() {
    // An unknown key (normalize_settings).
    let text = r#"[[instances]]
name = "a"
connector = "generic-webhook"

[instances.settings]
auth = { type = "none" }
formt = "json"
"#;
    let problems = check(text);
    let p = expect(&problems, 7, 1, "unknown field `formt`");
    assert!(p.hint.contains("did you mean `format`"), "{p}");

    // A value the connector's build refuses (not a JSON pointer).
    let text = r#"[[instances]]
name = "a"
connector = "generic-webhook"

[instances.settings]
auth = { type = "none" }

[instances.settings.events]
object_kind = "deal"
object_id = "/id"
"#;
    let problems = check(text);
    let p = expect(&problems, 9, 15, "not a JSON pointer");
    assert!(p.hint.contains("docs/connectors/generic-webhook.md"), "{p}");

    // A missing required setting: the settings table itself.
    let text = "[[instances]]\nname = \"a\"\nconnector = \"generic-webhook\"\nsettings = { format = \"json\" }\n";
    let problems = check(text);
    expect(&problems, 4, 12, "missing field `auth`");

    // The same in a [header] table: the header.
    let text = "[[instances]]\nname = \"a\"\nconnector = \"generic-webhook\"\n\n[instances.settings]\nformat = \"json\"\n";
    let problems = check(text);
    expect(&problems, 5, 1, "missing field `auth`");
}

#[test]
fn push_mappings_missing_required_placeholders() {
    let text = r#"[[instances]]
name = "a"
connector = "generic-webhook"
settings = { auth = { type = "none" } }

[instances.push]
object = "lead"

[instances.push.fields]
email = "{Email}"
"#;
    let problems = check(text);
    let p = expect(&problems, 9, 1, "Referral Code");
    assert!(p.hint.contains("{Email}"), "{p}");
}

#[test]
fn rules_that_do_not_parse_or_build() {
    let text = r#"[[instances]]
name = "a"
connector = "generic-webhook"
settings = { auth = { type = "none" } }
rules = [
  { rule = "deal_won" },
  { rule = "deal_stage_changed", to = "" },
  { rule = "deal_wonn" },
]
"#;
    let problems = check(text);
    expect(&problems, 7, 3, "rule 2 does not build");
    let p = expect(&problems, 8, 12, "unknown value `deal_wonn`");
    assert!(p.hint.contains("did you mean `deal_won`"), "{p}");
}

#[test]
fn references_resolve_from_env_and_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "file-token-value\n").unwrap();
    let text = r#"
[server]
admin_token = "${env:TEST_ADMIN}"
public_base_url = "https://${env:TEST_HOST}/base"

[store]
url = "postgres://refsync:${file:token.txt}@db/refsync"

[instances.settings]
"#
    .replace("[instances.settings]\n", "");
    let e = env(&[
        ("TEST_ADMIN", "env-admin-value"),
        ("TEST_HOST", "h.example"),
    ]);
    let c = Loader::new()
        .env(&e)
        .base_dir(dir.path())
        .parse(&text)
        .unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), "env-admin-value");
    assert_eq!(
        c.server.public_base_url.as_deref(),
        Some("https://h.example/base")
    );
    assert_eq!(
        c.store.url.expose(),
        "postgres://refsync:file-token-value@db/refsync"
    );
    assert!(c.store.is_postgres());

    // `$${` is a literal `${`.
    let c = Loader::new()
        .env(&e)
        .parse("[server]\nadmin_token = \"a$${env:X}\"\n")
        .unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), "a${env:X}");
}

#[test]
fn unresolved_references_name_the_variable_or_file() {
    let text = r#"[server]
admin_token = "${env:REFSYNC_TEST_SURELY_UNSET_VAR}"

[store]
url = "${file:/nonexistent/refsync/db-url}"

[[instances]]
name = "a"
connector = "generic-webhook"
settings = { auth = { type = "token", header = "X-T", token = "${env:ALSO_UNSET}" } }
"#;
    let problems = check(text);
    let p = expect(&problems, 2, 15, "`REFSYNC_TEST_SURELY_UNSET_VAR`");
    assert!(
        p.hint.contains("export REFSYNC_TEST_SURELY_UNSET_VAR"),
        "{p}"
    );
    expect(&problems, 5, 7, "`/nonexistent/refsync/db-url`");
    expect(&problems, 10, 63, "`ALSO_UNSET`");
    // No follow-on noise (empty token, bad store URL).
    assert_eq!(problems.len(), 3, "{}", render(&problems));

    let e = config::parse("[server]\nadmin_token = \"${env:REFSYNC_TEST_SURELY_UNSET_VAR}\"\n")
        .unwrap_err();
    assert!(
        e.to_string().contains("REFSYNC_TEST_SURELY_UNSET_VAR"),
        "{e}"
    );
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let text = r#"[server]
listen = "not an address"
admin_tokn = "x"

[store]
url = "mysql://nope"

[platform]
type = "ledgr"

[worker]
concurrency = 0

[[instances]]
name = "a"
connector = "pipedriv"

[[instances]]
name = "a"
connector = "generic-webhook"
settings = { auth = { type = "none" }, bogus = 1 }
"#;
    let problems = check(text);
    let text = render(&problems);
    expect(&problems, 2, 10, "socket address");
    expect(&problems, 3, 1, "unknown key `admin_tokn`");
    let p = expect(&problems, 9, 8, "unknown platform `ledgr`");
    assert!(p.hint.contains("did you mean `ledger`"), "{p}");
    expect(&problems, 12, 15, "concurrency must be above 0");
    expect(&problems, 16, 13, "unknown connector \"pipedriv\"");
    expect(&problems, 19, 8, "duplicate instance name");
    expect(&problems, 21, 40, "unknown field `bogus`");
    assert!(problems.len() >= 7, "{text}");
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "{text}");
}

#[test]
fn store_url_problems_do_not_show_the_url() {
    let problems = check("[store]\nurl = \"mysql://user:pa55word-secret@h/db\"\n");
    let p = expect(&problems, 2, 7, "store.url");
    assert!(!p.to_string().contains("pa55word"), "{p}");
}

#[test]
fn no_secret_value_appears_in_any_problem() {
    let secrets = [
        "env-secret-AAAA1111",
        "env-secret-BBBB2222",
        "inline-secret-CCCC3333",
        "1234567890987",
    ];
    let text = r#"[server]
admin_token = 1234567890987
listen = "${env:SECRET_A}"
public_base_url = "${env:SECRET_B}"

[store]
url = "inline-secret-CCCC3333"

[platform]
type = "${env:SECRET_A}"

[[instances]]
name = "${env:SECRET_B}"
connector = "generic-webhook"
settings = { auth = { type = "${env:SECRET_A}", secret = "inline-secret-CCCC3333" }, format = "${env:SECRET_B}" }
rules = [{ rule = "${env:SECRET_A}" }]

[[instances]]
name = "b"
connector = "${env:SECRET_B}"
"#;
    let e = env(&[
        ("SECRET_A", "env-secret-AAAA1111"),
        ("SECRET_B", "env-secret-BBBB2222"),
    ]);
    let problems = check_with(text, &e);
    assert!(problems.len() >= 5, "{}", render(&problems));
    let all = render(&problems);
    for s in secrets {
        assert!(!all.contains(s), "{s} leaked in:\n{all}");
    }
}

#[test]
fn load_reads_a_file_and_names_it_in_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refsync.toml");
    std::fs::write(&path, "[server]\nlisten = 5\n").unwrap();
    let e = config::load(&path).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].file, path.display().to_string());
    assert_eq!((e.problems[0].line, e.problems[0].column), (2, 10), "{e}");
    let e = config::load(dir.path().join("missing.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/refsync.toml")
}

#[test]
fn the_annotated_example_passes_check_and_loads() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let e = env(&[
        ("REFSYNC_ADMIN_TOKEN", "admin-secret"),
        ("CRM_WEBHOOK_SECRET", "whsec-example"),
        ("CRM_PUSH_URL", "https://hooks.example.com/catch/123"),
        ("CRM_API_KEY", "api-key-example"),
    ]);
    let problems = check_with(&text, &e);
    assert!(problems.is_empty(), "{}", render(&problems));
    let r = registry();
    let c = Loader::new()
        .env(&e)
        .registry(&r)
        .load(example_path())
        .unwrap();
    assert_eq!(c.instances[0].name, "crm");
    assert_eq!(c.platform.name(), "ledger");
    assert!(c.server.admin_token.is_some());
    assert_eq!(c.instances[0].rules.len(), 2);

    // Without the environment, every missing variable is named.
    let problems = check(&text);
    for var in [
        "REFSYNC_ADMIN_TOKEN",
        "CRM_WEBHOOK_SECRET",
        "CRM_PUSH_URL",
        "CRM_API_KEY",
    ] {
        assert!(
            problems.iter().any(|p| p.message.contains(var)),
            "{var} not reported in:\n{}",
            render(&problems)
        );
    }
}

#[test]
fn check_and_load_checked_use_the_registry() {
    let r = registry();
    assert!(config::check(VALID, &r).is_empty());
    let problems = config::check(VALID, &Registry::new());
    let p = expect(&problems, 15, 13, "unknown connector");
    assert!(p.hint.contains("compiled in: none"), "{p}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refsync.toml");
    std::fs::write(&path, VALID.replace("\"deal_won\"", "\"deal_wonn\"")).unwrap();
    assert!(config::load(&path).is_err());
    std::fs::write(&path, VALID).unwrap();
    assert!(config::load_checked(&path, &r).is_ok());
    std::fs::write(&path, VALID.replace("code = \"{Referral Code}\"", "")).unwrap();
    // Loads without the registry; the push check needs it.
    assert!(config::load(&path).is_ok());
    let e = config::load_checked(&path, &r).unwrap_err();
    assert!(e.to_string().contains("Referral Code"), "{e}");
}

#[test]
fn relative_file_references_start_from_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/admin"), "from-a-file\n").unwrap();
    let path = dir.path().join("refsync.toml");
    std::fs::write(&path, "[server]\nadmin_token = \"${file:secrets/admin}\"\n").unwrap();
    let c = config::load(&path).unwrap();
    assert_eq!(c.server.admin_token.unwrap().expose(), "from-a-file");
}

#[test]
fn platform_problems() {
    let problems = check("[platform]\ndatabase_url = \"sqlite://x\"\n");
    expect(&problems, 1, 1, "missing key `type`");
    let problems = check("[platform]\ntype = 3\n");
    expect(&problems, 2, 8, "`type` must be a string");
    let c = config::parse("[platform]\ntype = \"referral-factory\"\ntoken = \"t\"\n").unwrap();
    assert_eq!(c.platform.name(), "referral-factory");
    assert_eq!(c.platform.settings(), serde_json::json!({"token": "t"}));
}

#[test]
fn nested_problems_in_one_instance_are_all_reported() {
    let text = r#"[[instances]]
name = "a"
connector = "generic-webhook"
campain = "1"
settings = { auth = { type = "none" } }

[instances.push]
objekt = "lead"

[[instances.rules]]
rule = "deal_stage_changed"
to = ""
"#;
    let problems = check(text);
    let p = expect(&problems, 4, 1, "unknown key `campain`");
    assert!(p.hint.contains("did you mean `campaign`"), "{p}");
    expect(&problems, 8, 1, "unknown key `objekt`");
    // `object` is still required once the misspelt key is set aside.
    expect(&problems, 7, 1, "missing key `object`");
    expect(&problems, 10, 1, "rule 1 does not build");
}

#[test]
fn an_instance_oauth_table_loads_and_is_checked() {
    let text = format!(
        "{VALID}\n[instances.oauth]\nclient_id = \"app-1\"\nclient_secret = \"${{env:CRM_CLIENT_SECRET}}\"\nauth_url = \"https://crm.example.com/oauth/authorize\"\ntoken_url = \"https://crm.example.com/oauth/token\"\nscopes = [\"deals:read\"]\nclient_auth = \"request_body\"\nauthorize_params = {{ access_type = \"offline\" }}\n"
    );
    let e = env(&[("CRM_CLIENT_SECRET", "client-secret-123456")]);
    let problems = check_with(&text, &e);
    assert!(problems.is_empty(), "{}", render(&problems));
    let r = registry();
    let c = Loader::new().env(&e).registry(&r).parse(&text).unwrap();
    let oauth = c.instances[0].oauth.as_ref().expect("oauth table");
    assert_eq!(oauth.client_id, "app-1");
    assert_eq!(oauth.client_secret.expose(), "client-secret-123456");
    assert_eq!(oauth.redirect_url, None);
    assert_eq!(oauth.scopes, ["deals:read"]);
    assert_eq!(
        oauth.client_auth,
        refsync_http::oauth::ClientAuth::RequestBody
    );
    assert!(!format!("{oauth:?}").contains("client-secret-123456"));

    // Without it, no oauth.
    let c = Loader::new().registry(&r).parse(VALID).unwrap();
    assert!(c.instances[0].oauth.is_none());

    // Unknown keys, missing keys and non-URLs are reported without the secret.
    let bad = format!(
        "{VALID}\n[instances.oauth]\nclient_id = \"app-1\"\nclient_secret = \"client-secret-123456\"\nauth_url = \"crm.example.com/authorize\"\ntoken_url = \"https://crm.example.com/oauth/token\"\nscope = [\"x\"]\n"
    );
    let problems = check(&bad);
    let rendered = render(&problems);
    assert!(rendered.contains("unknown key `scope`"), "{rendered}");
    assert!(rendered.contains("did you mean"), "{rendered}");
    assert!(
        rendered.contains("oauth.auth_url must be an absolute http(s) URL"),
        "{rendered}"
    );
    assert!(!rendered.contains("client-secret-123456"), "{rendered}");

    let missing = format!("{VALID}\n[instances.oauth]\nclient_id = \"app-1\"\n");
    let rendered = render(&check(&missing));
    assert!(
        rendered.contains("missing key `client_secret`"),
        "{rendered}"
    );
}
