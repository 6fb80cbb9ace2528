//! `cargo xtask tidy`: repository rules in plain Rust (rust-analyzer's `tidy.rs`). Every
//! problem is reported, one line each naming the file; the command fails if there is any.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::scaffold::{TABLE_BEGIN, TABLE_END};
use crate::util::{files_under, read, rel, subdirs};
use crate::workspace::{self, ConnectorCrate, DOCS_DIR, FACADE_DIR};
use crate::{Result, manifest};

/// File-name endings the conformance suite does not treat as payloads (plus dot-files);
/// keep in sync with `refsync_testkit::conformance::discover_fixtures`.
pub(crate) const NOT_PAYLOADS: &[&str] = &[".expected.json", ".request.json", ".source.txt", ".md"];

/// Prefix of synthetic (hand-made) payloads, which need no `.source.txt`.
pub(crate) const SYNTHETIC_PREFIX: &str = "synthetic-";

/// Every problem in the workspace at `root`, and the number of connector crates.
pub(crate) fn problems(root: &Path) -> Result<(Vec<String>, usize)> {
    let (connectors, mut problems) = workspace::connectors(root)?;
    let facade_features = facade_features(root, &mut problems);
    let readme_links = readme_links(root, &mut problems);
    for c in &connectors {
        check_connector(root, c, &facade_features, &readme_links, &mut problems)?;
    }
    check_workspace_dependencies(root, &mut problems)?;
    check_lints(root, &mut problems)?;
    check_shared_fixture_copies(root, &mut problems)?;
    Ok((problems, connectors.len()))
}

/// The feature names of the facade (empty, with a problem, if its manifest is unreadable).
fn facade_features(root: &Path, problems: &mut Vec<String>) -> BTreeSet<String> {
    let path = root.join(FACADE_DIR).join("Cargo.toml");
    match read(&path) {
        Ok(text) => manifest::section(&text, "features")
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.key)
            .collect(),
        Err(e) => {
            problems.push(format!("{}: {e}", rel(root, &path)));
            BTreeSet::new()
        }
    }
}

/// The lines of the README's connector table.
fn readme_links(root: &Path, problems: &mut Vec<String>) -> Vec<String> {
    let text = match read(&root.join("README.md")) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("README.md: {e}"));
            return Vec::new();
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines.iter().position(|l| l.trim() == TABLE_BEGIN);
    let end = lines.iter().position(|l| l.trim() == TABLE_END);
    match (begin, end) {
        (Some(b), Some(e)) if b < e => lines[b + 1..e].iter().map(|l| (*l).to_owned()).collect(),
        _ => {
            problems.push(format!(
                "README.md: the connector table must sit between `{TABLE_BEGIN}` and `{TABLE_END}`"
            ));
            Vec::new()
        }
    }
}

fn is_payload(file_name: &str) -> bool {
    !file_name.starts_with('.') && !NOT_PAYLOADS.iter().any(|s| file_name.ends_with(s))
}

fn stem(file_name: &str) -> &str {
    file_name.rsplit_once('.').map_or(file_name, |(s, _)| s)
}

fn check_connector(
    root: &Path,
    c: &ConnectorCrate,
    features: &BTreeSet<String>,
    readme: &[String],
    problems: &mut Vec<String>,
) -> Result {
    let dir = &c.dir;
    let shown = |p: &Path| rel(root, p);
    let name = &c.connector;
    let required: [(PathBuf, &str); 4] = [
        (
            dir.join("README.md"),
            "the crate's README (also its rustdoc front page)",
        ),
        (dir.join("CHANGELOG.md"), "the connector's changelog"),
        (
            root.join(DOCS_DIR).join(format!("{name}.md")),
            "the connector's user guide",
        ),
        (
            dir.join("tests/conformance.rs"),
            "the conformance suite (refsync_testkit::conformance_main!)",
        ),
    ];
    for (path, what) in &required {
        if !path.is_file() {
            problems.push(format!(
                "{}: missing ({what} of connector `{name}`)",
                shown(path)
            ));
        }
    }

    let fixtures = dir.join("tests/fixtures");
    if !fixtures.is_dir() {
        problems.push(format!(
            "{}/: missing (the fixtures of connector `{name}`)",
            shown(&fixtures)
        ));
    } else {
        let files: Vec<String> = std::fs::read_dir(&fixtures)
            .map_err(|e| format!("cannot list {}: {e}", fixtures.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let has = |f: &str| files.iter().any(|x| x == f);
        let mut pairs = 0;
        for file in files.iter().filter(|f| is_payload(f)) {
            let stem = stem(file);
            let path = fixtures.join(file);
            if has(&format!("{stem}.expected.json")) {
                pairs += 1;
            } else {
                problems.push(format!(
                    "{}: no {stem}.expected.json beside it (write it with `REFSYNC_BLESS=1 cargo test -p {} --test conformance`, then review it)",
                    shown(&path),
                    c.package
                ));
            }
            if !file.starts_with(SYNTHETIC_PREFIX) && !has(&format!("{stem}.source.txt")) {
                problems.push(format!(
                    "{}: no {stem}.source.txt beside it (say where the payload comes from; hand-made payloads are named {SYNTHETIC_PREFIX}*)",
                    shown(&path)
                ));
            }
        }
        for file in files.iter().filter(|f| f.ends_with(".expected.json")) {
            let stem = file.trim_end_matches(".expected.json");
            if !files.iter().any(|f| is_payload(f) && self::stem(f) == stem) {
                problems.push(format!(
                    "{}: no payload named {stem}.* beside it (stale expected file?)",
                    shown(&fixtures.join(file))
                ));
            }
        }
        if c.has("webhooks") && pairs == 0 {
            problems.push(format!(
                "{}/: connector `{name}` declares `webhooks` but has no payload with its .expected.json \
                 (copy real payloads from ../shared/fixtures/ with their .source.txt, then bless)",
                shown(&fixtures)
            ));
        }
    }

    if !features.contains(name) {
        problems.push(format!(
            "{FACADE_DIR}/Cargo.toml: no feature `{name}` for connector `{name}` (run `cargo xtask codegen`)"
        ));
    }
    let link = format!("({DOCS_DIR}/{name}.md)");
    if !readme
        .iter()
        .any(|l| l.trim_start().starts_with('|') && l.contains(&link))
    {
        problems.push(format!(
            "README.md: the connector table has no row linking {DOCS_DIR}/{name}.md for connector `{name}`"
        ));
    }
    Ok(())
}

/// Every `[workspace.dependencies]` entry sets `default-features = false` (feature unification:
/// each crate enables what it uses).
fn check_workspace_dependencies(root: &Path, problems: &mut Vec<String>) -> Result {
    let text = read(&root.join("Cargo.toml"))?;
    for e in manifest::section(&text, "workspace.dependencies").unwrap_or_default() {
        let ok = manifest::inline_table(&e.value).is_some_and(|t| {
            t.iter()
                .any(|(k, v)| k == "default-features" && v == "false")
        });
        if !ok {
            problems.push(format!(
                "Cargo.toml:{}: workspace dependency `{}` must set `default-features = false`",
                e.line, e.key
            ));
        }
    }
    // the table form: [workspace.dependencies.<name>]
    for (n, line) in text.lines().enumerate() {
        let Some(h) = manifest::header(line) else {
            continue;
        };
        let Some(dep) = h.strip_prefix("workspace.dependencies.") else {
            continue;
        };
        if manifest::raw(&text, &h, "default-features").as_deref() != Some("false") {
            problems.push(format!(
                "Cargo.toml:{}: workspace dependency `{dep}` must set `default-features = false`",
                n + 1
            ));
        }
    }
    Ok(())
}

/// Every crate (under crates/, plus xtask/ and tests/) opts into the workspace lints.
fn check_lints(root: &Path, problems: &mut Vec<String>) -> Result {
    let mut dirs = subdirs(&root.join("crates"))?;
    dirs.push(root.join("xtask"));
    dirs.push(root.join("tests"));
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        if !path.is_file() {
            continue;
        }
        if !manifest::uses_workspace_lints(&read(&path)?) {
            problems.push(format!(
                "{}: needs `[lints]` with `workspace = true`",
                rel(root, &path)
            ));
        }
    }
    Ok(())
}

/// A file in a fixtures folder that carries the name of a payload of `../shared/fixtures/`
/// was copied from there: its `.source.txt` must be beside it.
fn check_shared_fixture_copies(root: &Path, problems: &mut Vec<String>) -> Result {
    let shared = root.join("../shared/fixtures");
    let shared_names: BTreeSet<String> = files_under(&shared)?
        .iter()
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .filter(|f| is_payload(f))
        .collect();
    if shared_names.is_empty() {
        return Ok(());
    }
    let mut roots = subdirs(&root.join("crates"))?;
    roots.push(root.join("tests"));
    for dir in roots {
        for path in files_under(&dir)? {
            let in_fixtures = path
                .strip_prefix(&dir)
                .map(|p| p.components().any(|c| c.as_os_str() == "fixtures"))
                .unwrap_or(false);
            let Some(file) = path.file_name().map(|f| f.to_string_lossy().into_owned()) else {
                continue;
            };
            if !in_fixtures || !shared_names.contains(&file) {
                continue;
            }
            let source = path.with_file_name(format!("{}.source.txt", stem(&file)));
            let shown = rel(root, &path);
            let message = format!(
                "{shown}: copied from ../shared/fixtures but has no {}.source.txt beside it",
                stem(&file)
            );
            if !source.is_file()
                && !problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{shown}: no ")))
            {
                problems.push(message);
            }
        }
    }
    Ok(())
}

/// `cargo xtask tidy`.
pub(crate) fn command(root: &Path) -> Result<ExitCode> {
    workspace::check_root(root)?;
    let (problems, n) = problems(root)?;
    if problems.is_empty() {
        println!("tidy: ok ({n} connectors)");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    eprintln!(
        "tidy: {} problem(s) in the workspace at {}",
        problems.len(),
        root.display()
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeWorkspace;
    use crate::util::BufferLog;

    fn tidy(ws: &FakeWorkspace) -> Vec<String> {
        problems(ws.root()).unwrap().0
    }

    fn complete() -> FakeWorkspace {
        let ws = FakeWorkspace::new();
        ws.add_complete_connector("generic-webhook", &["webhooks", "push"]);
        ws.add_complete_connector("acme", &["push"]);
        crate::codegen::generate(ws.root(), &mut BufferLog::default()).unwrap();
        ws
    }

    #[test]
    fn a_complete_workspace_is_tidy() {
        let ws = complete();
        assert_eq!(problems(ws.root()).unwrap(), (vec![], 2));
    }

    #[test]
    fn reports_every_missing_piece_with_its_file() {
        let ws = complete();
        ws.remove("crates/refsync-acme/README.md");
        ws.remove("crates/refsync-acme/CHANGELOG.md");
        ws.remove("docs/connectors/generic-webhook.md");
        ws.remove("crates/refsync-generic-webhook/tests/conformance.rs");
        let readme = ws.read("README.md");
        let readme: String = readme
            .lines()
            .filter(|l| !l.contains("docs/connectors/acme.md"))
            .map(|l| format!("{l}\n"))
            .collect();
        ws.write("README.md", &readme);
        let p = tidy(&ws);
        let expect = [
            "crates/refsync-acme/README.md: missing",
            "crates/refsync-acme/CHANGELOG.md: missing",
            "docs/connectors/generic-webhook.md: missing",
            "crates/refsync-generic-webhook/tests/conformance.rs: missing",
            "README.md: the connector table has no row linking docs/connectors/acme.md",
        ];
        for e in expect {
            assert!(
                p.iter().any(|x| x.starts_with(e)),
                "{e} not reported in {p:#?}"
            );
        }
        assert_eq!(p.len(), expect.len(), "{p:#?}");
    }

    #[test]
    fn fixtures_need_pairs_and_sources() {
        let ws = complete();
        let fx = "crates/refsync-generic-webhook/tests/fixtures";
        ws.remove(&format!("{fx}/deal-won.expected.json"));
        ws.write(&format!("{fx}/synthetic-empty.json"), "{}");
        ws.write(&format!("{fx}/synthetic-empty.expected.json"), "{}");
        ws.write(&format!("{fx}/orphan.expected.json"), "{}");
        ws.remove(&format!("{fx}/deal-won.source.txt"));
        let p = tidy(&ws);
        assert!(
            p.iter()
                .any(|x| x.starts_with(&format!("{fx}/deal-won.json: no deal-won.expected.json"))),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with(&format!("{fx}/deal-won.json: no deal-won.source.txt"))),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with(&format!("{fx}/orphan.expected.json: no payload"))),
            "{p:#?}"
        );
        // the synthetic pair counts, so `webhooks` is satisfied, and needs no .source.txt
        assert_eq!(p.len(), 3, "{p:#?}");

        ws.remove(&format!("{fx}/synthetic-empty.expected.json"));
        ws.remove(&format!("{fx}/orphan.expected.json"));
        let p = tidy(&ws);
        assert!(
            p.iter()
                .any(|x| x.contains("declares `webhooks` but has no payload")),
            "{p:#?}"
        );
    }

    #[test]
    fn manifests_follow_the_workspace_rules() {
        let ws = complete();
        let root = ws.read("Cargo.toml").replace(
            "serde = { version = \"1\", default-features = false }",
            "serde = { version = \"1\" }\nrand = \"0.9\"\n\n[workspace.dependencies.toml]\nversion = \"0.9\"",
        );
        ws.write("Cargo.toml", &root);
        ws.write(
            "crates/refsync-core/Cargo.toml",
            "[package]\nname = \"refsync-core\"\n",
        );
        let facade = ws
            .read("crates/refsync/Cargo.toml")
            .replace("acme = [\"dep:refsync-acme\"]\n", "");
        ws.write("crates/refsync/Cargo.toml", &facade);
        let p = tidy(&ws);
        for e in [
            "`serde` must set",
            "`rand` must set",
            "`toml` must set",
            "crates/refsync-core/Cargo.toml: needs `[lints]`",
            "no feature `acme`",
        ] {
            assert!(
                p.iter().any(|x| x.contains(e)),
                "{e} not reported in {p:#?}"
            );
        }
        assert_eq!(p.len(), 5, "{p:#?}");
    }

    #[test]
    fn bad_metadata_is_reported() {
        let ws = complete();
        ws.write(
            "crates/refsync-bad/Cargo.toml",
            "[package]\nname = \"refsync-bad\"\n\n[package.metadata.refsync]\nkind = \"connector\"\nconnector = \"other\"\ncapabilities = [\"telepathy\"]\n\n[lints]\nworkspace = true\n",
        );
        let p = tidy(&ws);
        assert!(p.iter().any(|x| x.starts_with("crates/refsync-bad/Cargo.toml: connector \"other\" must live in crates/refsync-other")), "{p:#?}");
    }
}
