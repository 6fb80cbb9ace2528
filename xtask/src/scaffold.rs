//! `cargo xtask new-connector <name>`: renders `xtask/templates/connector/**` into a new
//! connector crate and its docs page, then runs codegen and adds the README table row.
//!
//! Like clippy's `cargo dev new_lint`, it never overwrites: it refuses when anything it would
//! create exists, checks up front that codegen and the README row can be written, and creates
//! every file with `create_new(true)`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::names::Names;
use crate::util::{Log, create_new, read, rel, write_if_changed};
use crate::workspace::{self, ConnectorCrate, DOCS_DIR};
use crate::{Result, codegen};

/// A template: its file under `xtask/templates/connector/`, where it goes (relative to the
/// workspace root, with placeholders), and its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Template {
    pub(crate) source: &'static str,
    pub(crate) dest: &'static str,
    pub(crate) text: &'static str,
}

macro_rules! template {
    ($source:literal => $dest:literal) => {
        Template {
            source: $source,
            dest: $dest,
            text: include_str!(concat!("../templates/connector/", $source)),
        }
    };
}

/// Every template, in the order the files are created.
pub(crate) const TEMPLATES: &[Template] = &[
    template!("Cargo.toml.tmpl" => "crates/{{crate}}/Cargo.toml"),
    template!("README.md.tmpl" => "crates/{{crate}}/README.md"),
    template!("CHANGELOG.md.tmpl" => "crates/{{crate}}/CHANGELOG.md"),
    template!("src/lib.rs.tmpl" => "crates/{{crate}}/src/lib.rs"),
    template!("src/config.rs.tmpl" => "crates/{{crate}}/src/config.rs"),
    template!("src/client.rs.tmpl" => "crates/{{crate}}/src/client.rs"),
    template!("src/mapping.rs.tmpl" => "crates/{{crate}}/src/mapping.rs"),
    template!("src/events.rs.tmpl" => "crates/{{crate}}/src/events.rs"),
    template!("tests/conformance.rs.tmpl" => "crates/{{crate}}/tests/conformance.rs"),
    template!("tests/fixtures/README.md.tmpl" => "crates/{{crate}}/tests/fixtures/README.md"),
    template!("docs-page.md.tmpl" => "docs/connectors/{{name}}.md"),
];

/// The capabilities the scaffold declares (Cargo.toml metadata and `INFO`).
pub(crate) const SCAFFOLD_CAPABILITIES: &[&str] = &["webhooks", "push", "duplicate_lookup"];

/// The README table markers.
pub(crate) const TABLE_BEGIN: &str = "<!-- BEGIN connector table -->";
/// See [`TABLE_BEGIN`].
pub(crate) const TABLE_END: &str = "<!-- END connector table -->";

/// Replaces `{{name}}`, `{{crate}}`, `{{snake}}`, `{{module}}`, `{{Display}}`, `{{Type}}`;
/// any other `{{...}}` left over is an error (a typo in a template).
pub(crate) fn render_text(text: &str, names: &Names, source: &str) -> Result<String> {
    let mut out = text.to_owned();
    for (key, value) in names.vars() {
        out = out.replace(key, value);
    }
    if let Some(at) = out.find("{{") {
        let rest: String = out[at..].chars().take(30).collect();
        return Err(format!(
            "template {source}: unknown placeholder at {rest:?}"
        ));
    }
    Ok(out)
}

/// The files of a new connector: (path relative to the root, contents).
pub(crate) fn render(names: &Names) -> Result<Vec<(String, String)>> {
    TEMPLATES
        .iter()
        .map(|t| {
            Ok((
                render_text(t.dest, names, t.source)?,
                render_text(t.text, names, t.source)?,
            ))
        })
        .collect()
}

/// The README row of a new connector.
pub(crate) fn readme_row(names: &Names) -> String {
    format!(
        "| [{}]({DOCS_DIR}/{}.md) | `{}` | {} | scaffold — not usable yet |",
        names.display,
        names.name,
        names.name,
        SCAFFOLD_CAPABILITIES.join(", ")
    )
}

/// The README with the connector's row added at the end of the table (`None` when a row
/// already links the docs page).
pub(crate) fn readme_with_row(readme: &str, names: &Names) -> Result<Option<String>> {
    let lines: Vec<&str> = readme.lines().collect();
    let begin = lines.iter().position(|l| l.trim() == TABLE_BEGIN);
    let end = lines.iter().position(|l| l.trim() == TABLE_END);
    let (Some(begin), Some(end)) = (begin, end) else {
        return Err(format!(
            "README.md: the connector table must sit between `{TABLE_BEGIN}` and `{TABLE_END}`"
        ));
    };
    if end < begin {
        return Err(format!(
            "README.md: `{TABLE_END}` comes before `{TABLE_BEGIN}`"
        ));
    }
    let link = format!("({DOCS_DIR}/{}.md)", names.name);
    if lines[begin..end].iter().any(|l| l.contains(&link)) {
        return Ok(None);
    }
    let last_row = (begin + 1..end)
        .rev()
        .find(|&i| lines[i].trim_start().starts_with('|'));
    let at = last_row.map_or(end, |i| i + 1);
    let row = readme_row(names);
    let mut out: Vec<&str> = Vec::with_capacity(lines.len() + 1);
    out.extend_from_slice(&lines[..at]);
    out.push(&row);
    out.extend_from_slice(&lines[at..]);
    let mut text = out.join("\n");
    if readme.ends_with('\n') {
        text.push('\n');
    }
    Ok(Some(text))
}

/// What `new-connector` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) names: Names,
    /// Files created, relative to the root.
    pub(crate) created: Vec<String>,
    /// Files codegen and the README row changed, relative to the root.
    pub(crate) updated: Vec<String>,
}

impl Report {
    /// The closing message: what was made and what to do next.
    pub(crate) fn next_steps(&self) -> String {
        let n = &self.names;
        let dir = format!("crates/{}", n.crate_name);
        format!(
            "\nScaffolded the {name} connector in {dir}. It is NOT usable yet: every unfinished operation \
             returns a `TODO({name})` error, and its conformance suite fails until they are done.\n\
             \n\
             Next steps:\n\
             \x20 1. cargo test -p {krate}\n\
             \x20    the conformance suite runs and reports each TODO({name}) as a failure\n\
             \x20 2. copy real payloads unchanged from ../shared/fixtures/<vendor>/ (with their .source.txt)\n\
             \x20    into {dir}/tests/fixtures/, then write and review their expected events:\n\
             \x20    REFSYNC_BLESS=1 cargo test -p {krate} --test conformance\n\
             \x20 3. fill in {dir}/src/config.rs (settings), src/events.rs (verify, parse),\n\
             \x20    src/client.rs + src/mapping.rs (push, health check), and in tests/conformance.rs\n\
             \x20    authenticate, simulator and records; keep INFO.capabilities and the Cargo.toml metadata equal\n\
             \x20 4. write docs/connectors/{name}.md (every TODO section) and the CHANGELOG entry\n\
             \x20 5. grep -rn 'TODO({name})' {dir} docs/connectors/{name}.md   must print nothing\n\
             \x20 6. cargo xtask tidy && cargo xtask codegen --check; then change the README row's status\n\
             \n\
             Walkthrough: docs/adding-a-connector.md\n",
            name = n.name,
            krate = n.crate_name,
        )
    }
}

/// Formats the new crate's Rust files with rustfmt (the templates are rustfmt-clean for
/// short names; long names move string arguments onto their own lines). Best effort: without
/// rustfmt the files stay as rendered and a note says to run `cargo fmt`.
fn format_rust(root: &Path, crate_dir: &Path, log: &mut dyn Log) {
    let rustfmt = std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".to_owned());
    let edition = read(&root.join("Cargo.toml"))
        .ok()
        .and_then(|t| crate::manifest::get_str(&t, "workspace.package", "edition"))
        .unwrap_or_else(|| "2024".to_owned());
    let status = std::process::Command::new(&rustfmt)
        .current_dir(root)
        .args(["--edition", &edition])
        .arg(crate_dir.join("src/lib.rs"))
        .arg(crate_dir.join("tests/conformance.rs"))
        .status();
    match status {
        Ok(s) if s.success() => log.line("  formatted the Rust files with rustfmt"),
        Ok(s) => log.line(&format!(
            "  note: rustfmt failed ({s}); run `cargo fmt` before committing"
        )),
        Err(e) => log.line(&format!(
            "  note: rustfmt not run ({e}); run `cargo fmt` before committing"
        )),
    }
}

/// Scaffolds connector `name` in the workspace at `root`.
pub(crate) fn new_connector(root: &Path, name: &str, log: &mut dyn Log) -> Result<Report> {
    let names = Names::new(name)?;
    workspace::check_root(root)?;
    let crate_dir = root.join("crates").join(&names.crate_name);
    let docs_page = root.join(DOCS_DIR).join(format!("{}.md", names.name));

    // 1. refuse to overwrite
    for existing in [&crate_dir, &docs_page] {
        if existing.exists() {
            return Err(format!(
                "refusing to overwrite {} (it already exists); nothing was changed",
                rel(root, existing)
            ));
        }
    }
    let (connectors, problems) = workspace::connectors(root)?;
    if !problems.is_empty() {
        return Err(format!(
            "fix the connector metadata first (nothing was changed):\n  {}",
            problems.join("\n  ")
        ));
    }
    if let Some(other) = connectors.iter().find(|c| c.connector == names.name) {
        return Err(format!(
            "refusing to overwrite: crates/{} already declares connector {:?}; nothing was changed",
            other.folder, names.name
        ));
    }

    // 2. check that everything after the file creation can be done
    let files = render(&names)?;
    let mut planned = connectors;
    planned.push(ConnectorCrate {
        dir: crate_dir.clone(),
        folder: names.crate_name.clone(),
        package: names.crate_name.clone(),
        connector: names.name.clone(),
        capabilities: SCAFFOLD_CAPABILITIES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        version: workspace::workspace_version(root)?,
    });
    planned.sort_by(|a, b| a.connector.cmp(&b.connector));
    codegen::plan(root, &planned).map_err(|e| format!("{e}\n(nothing was changed)"))?;
    let readme_path = root.join("README.md");
    let readme = read(&readme_path).map_err(|e| format!("{e} (nothing was changed)"))?;
    let new_readme =
        readme_with_row(&readme, &names).map_err(|e| format!("{e} (nothing was changed)"))?;

    // 3. create the files
    log.line(&format!(
        "new-connector: scaffolding {} in crates/{}",
        names.name, names.crate_name
    ));
    fs::create_dir_all(root.join("crates")).map_err(|e| format!("cannot create crates/: {e}"))?;
    fs::create_dir(&crate_dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "refusing to overwrite {} (it already exists)",
                rel(root, &crate_dir)
            )
        } else {
            format!("cannot create {}: {e}", crate_dir.display())
        }
    })?;
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result {
        for (path, contents) in &files {
            let full = root.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            create_new(&full, contents)?;
            created.push(full);
            log.line(&format!("  created {path}"));
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Undo only what this run created; nothing pre-existing was touched.
        for path in created.iter().rev() {
            let _ = fs::remove_file(path);
        }
        let _ = fs::remove_dir_all(&crate_dir);
        return Err(format!("{e}\n(the files created by this run were removed)"));
    }

    format_rust(root, &crate_dir, log);

    // 4. codegen and the README row
    let mut updated = codegen::generate(root, log)?;
    if let Some(text) = new_readme {
        write_if_changed(&readme_path, &text)?;
        log.line("new-connector: added the connector's row to the README table (README.md)");
        updated.push("README.md".to_owned());
    }
    Ok(Report {
        names,
        created: files.into_iter().map(|(p, _)| p).collect(),
        updated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeWorkspace;
    use crate::util::BufferLog;

    #[test]
    fn render_produces_the_expected_file_list() {
        let names = Names::new("acme-crm").unwrap();
        let files = render(&names).unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "crates/refsync-acme-crm/Cargo.toml",
                "crates/refsync-acme-crm/README.md",
                "crates/refsync-acme-crm/CHANGELOG.md",
                "crates/refsync-acme-crm/src/lib.rs",
                "crates/refsync-acme-crm/src/config.rs",
                "crates/refsync-acme-crm/src/client.rs",
                "crates/refsync-acme-crm/src/mapping.rs",
                "crates/refsync-acme-crm/src/events.rs",
                "crates/refsync-acme-crm/tests/conformance.rs",
                "crates/refsync-acme-crm/tests/fixtures/README.md",
                "docs/connectors/acme-crm.md",
            ]
        );
        for (path, text) in &files {
            assert!(!text.contains("{{"), "{path} has an unrendered placeholder");
        }
    }

    #[test]
    fn rendered_text_follows_the_conventions() {
        let names = Names::new("acme-crm").unwrap();
        let files: std::collections::BTreeMap<String, String> =
            render(&names).unwrap().into_iter().collect();
        let get = |p: &str| files[&format!("crates/refsync-acme-crm/{p}")].as_str();

        let toml = get("Cargo.toml");
        assert!(toml.contains("name = \"refsync-acme-crm\""));
        assert!(toml.contains(
            "[package.metadata.refsync]\nkind = \"connector\"\nconnector = \"acme-crm\"\ncapabilities = [\"webhooks\", \"push\", \"duplicate_lookup\"]\n"
        ));
        assert!(toml.contains("[[test]]\nname = \"conformance\"\nharness = false\n"));
        assert!(toml.contains("[lints]\nworkspace = true\n"));
        for dep in [
            "refsync-core",
            "refsync-http",
            "async-trait",
            "serde",
            "serde_json",
            "chrono",
            "tracing",
        ] {
            assert!(toml.contains(&format!("\n{dep}")), "dependency {dep}");
        }
        assert!(toml.contains("[dev-dependencies]\nrefsync-testkit.workspace = true\ntokio"));
        assert_eq!(
            crate::manifest::get_array(toml, "package.metadata.refsync", "capabilities").unwrap(),
            SCAFFOLD_CAPABILITIES
        );

        let lib = get("src/lib.rs");
        assert!(
            lib.starts_with("#![doc = include_str!(\"../README.md\")]\n#![deny(missing_docs)]\n")
        );
        assert!(lib.contains("pub const NAME: &str = \"acme-crm\";"));
        assert!(lib.contains("pub const INFO: ConnectorInfo"));
        assert!(lib.contains("display_name: \"Acme Crm\""));
        assert!(lib.contains("pub struct AcmeCrmConnector"));
        assert!(lib.contains("#[async_trait]\nimpl Connector for AcmeCrmConnector"));
        assert!(lib.contains("pub fn register(registry: &mut Registry)"));
        assert!(lib.contains(
            "ConnectorDescriptor {\n        info: INFO,\n        build,\n        normalize_settings: normalize_settings::<Config>,\n    }"
        ));

        // every unfinished method fails honestly, with a TODO naming the connector
        // (compared without whitespace: rustfmt may wrap the calls)
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        let events = squash(get("src/events.rs"));
        assert!(events.contains(&squash("Err(Error::unauthorized(\"TODO(acme-crm): verify webhooks as the vendor signs them\",))")));
        assert!(events.contains(&squash(
            "Err(Error::unsupported(\"TODO(acme-crm): parse webhook payloads\"))"
        )));
        let client = squash(get("src/client.rs"));
        assert_eq!(
            client
                .matches(&squash("Err(Error::unsupported(format!(\"TODO(acme-crm):"))
                .count(),
            2
        );
        for (file, text) in &files {
            assert!(
                !text.contains("Ok(PushOutcome"),
                "{file} fakes a push success"
            );
            assert!(
                !text.contains("Ok(Verification::Verified"),
                "{file} fakes a verification"
            );
        }

        let config = get("src/config.rs");
        assert!(config.contains("#[serde(deny_unknown_fields)]"));
        assert!(config.contains("pub base_url: String,"));
        assert!(config.contains("pub api_token: Secret,"));
        assert!(config.contains("pub webhook_secret: Secret,"));

        let test = get("tests/conformance.rs");
        assert!(test.contains("use refsync_testkit::conformance::Harness;"));
        assert!(test.contains("impl Harness for AcmeCrmHarness"));
        assert!(test.contains("refsync_acme_crm::register(registry);"));
        assert!(
            test.trim_end()
                .ends_with("refsync_testkit::conformance_main!(AcmeCrmHarness);")
        );
        assert!(test.contains("Err(\"TODO(acme-crm): authenticate"));
        assert!(test.contains("FieldMapping::from_pairs"));

        let fixtures = get("tests/fixtures/README.md");
        for needle in [
            ".source.txt",
            "REFSYNC_BLESS=1 cargo test -p refsync-acme-crm --test conformance",
            "synthetic-",
        ] {
            assert!(fixtures.contains(needle), "fixtures README lacks {needle}");
        }
        let docs = &files["docs/connectors/acme-crm.md"];
        for section in [
            "## What it does",
            "## Configuration",
            "## Webhooks & verification",
            "## Events produced",
            "## Qualification",
            "## Limits",
            "## Pitfalls",
            "Status: scaffold",
        ] {
            assert!(docs.contains(section), "docs page lacks {section}");
        }
    }

    #[test]
    fn rendered_rust_is_rustfmt_clean() {
        // Skipped (with a note) where rustfmt is not installed; smoke-scaffold runs `cargo fmt --check`.
        let names = Names::new("acme-crm").unwrap();
        for (path, text) in render(&names).unwrap() {
            if path.ends_with(".rs") {
                if let Some(formatted) = crate::testutil::rustfmt(&text) {
                    assert_eq!(formatted, text, "{path} is not rustfmt-clean");
                }
            }
        }
    }

    #[test]
    fn readme_row_is_appended_once_inside_the_table() {
        let names = Names::new("acme-crm").unwrap();
        let readme = "# x\n\n<!-- BEGIN connector table -->\n| Connector | Feature | Capabilities | Status |\n|---|---|---|---|\n| [Generic webhook](docs/connectors/generic-webhook.md) | `generic-webhook` | webhooks, push | usable |\n\n<!-- END connector table -->\nafter\n";
        let out = readme_with_row(readme, &names).unwrap().unwrap();
        assert!(out.contains(
            "usable |\n| [Acme Crm](docs/connectors/acme-crm.md) | `acme-crm` | webhooks, push, duplicate_lookup | scaffold — not usable yet |\n\n<!-- END"
        ));
        assert_eq!(readme_with_row(&out, &names).unwrap(), None);
        assert!(readme_with_row("no table\n", &names).is_err());
    }

    #[test]
    fn new_connector_creates_files_runs_codegen_and_adds_the_row() {
        let ws = FakeWorkspace::new();
        ws.add_complete_connector("generic-webhook", &["webhooks", "push"]);
        crate::codegen::generate(ws.root(), &mut BufferLog::default()).unwrap();
        let mut log = BufferLog::default();
        let report = new_connector(ws.root(), "acme-crm", &mut log).unwrap();
        assert_eq!(report.created.len(), TEMPLATES.len());
        for f in &report.created {
            assert!(ws.root().join(f).is_file(), "{f}");
        }
        assert!(
            log.0
                .iter()
                .any(|l| l == "  created crates/refsync-acme-crm/src/lib.rs"),
            "{:?}",
            log.0
        );
        assert_eq!(
            report.updated,
            [
                "Cargo.toml",
                "crates/refsync/Cargo.toml",
                crate::codegen::GENERATED_RS,
                "README.md"
            ]
        );
        assert!(
            ws.read("crates/refsync/Cargo.toml")
                .contains("acme-crm = [\"dep:refsync-acme-crm\"]")
        );
        assert!(
            ws.read(crate::codegen::GENERATED_RS)
                .contains("refsync_acme_crm::register(registry);")
        );
        assert!(
            ws.read("README.md")
                .contains("| [Acme Crm](docs/connectors/acme-crm.md) |")
        );
        assert_eq!(crate::codegen::check(ws.root()).unwrap(), None);
        let steps = report.next_steps();
        assert!(steps.contains("cargo test -p refsync-acme-crm"));
        assert!(steps.contains("REFSYNC_BLESS=1"));
    }

    #[test]
    fn refuses_to_overwrite_and_leaves_the_tree_untouched() {
        let ws = FakeWorkspace::new();
        ws.add_complete_connector("generic-webhook", &["webhooks", "push"]);
        crate::codegen::generate(ws.root(), &mut BufferLog::default()).unwrap();
        new_connector(ws.root(), "acme-crm", &mut BufferLog::default()).unwrap();
        ws.write(
            "crates/refsync-acme-crm/src/lib.rs",
            "// my work in progress\n",
        );

        let before = ws.tree();
        let e = new_connector(ws.root(), "acme-crm", &mut BufferLog::default()).unwrap_err();
        assert!(
            e.contains("refusing to overwrite crates/refsync-acme-crm"),
            "{e}"
        );
        assert_eq!(ws.tree(), before);

        // only the docs page exists: still refused, nothing created
        ws.write("docs/connectors/beta.md", "hand-written\n");
        let before = ws.tree();
        let e = new_connector(ws.root(), "beta", &mut BufferLog::default()).unwrap_err();
        assert!(
            e.contains("refusing to overwrite docs/connectors/beta.md"),
            "{e}"
        );
        assert_eq!(ws.tree(), before);

        // an invalid name changes nothing either
        assert!(new_connector(ws.root(), "Bad_Name", &mut BufferLog::default()).is_err());
        assert_eq!(ws.tree(), before);
    }

    #[test]
    fn missing_markers_are_reported_before_anything_is_created() {
        let ws = FakeWorkspace::new();
        ws.write("README.md", "# no table here\n");
        let before = ws.tree();
        let e = new_connector(ws.root(), "acme-crm", &mut BufferLog::default()).unwrap_err();
        assert!(
            e.contains("README.md") && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(ws.tree(), before);

        let ws = FakeWorkspace::new();
        let facade = ws
            .read("crates/refsync/Cargo.toml")
            .replace("# END GENERATED: connector features\n", "");
        ws.write("crates/refsync/Cargo.toml", &facade);
        let before = ws.tree();
        let e = new_connector(ws.root(), "acme-crm", &mut BufferLog::default()).unwrap_err();
        assert!(
            e.contains("crates/refsync/Cargo.toml") && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(ws.tree(), before);
    }
}
