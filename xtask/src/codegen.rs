//! `cargo xtask codegen [--check]`: the connector lists derived from the connector crates'
//! `[package.metadata.refsync]`, written between marker comments (clippy's `update_lints`,
//! rust-analyzer's `codegen --check`):
//!
//! - root `Cargo.toml`, `[workspace.dependencies]`: one path dependency per connector crate;
//! - `crates/refsync/Cargo.toml`: one optional dependency and one feature per connector, + `all`;
//! - `crates/refsync/src/generated.rs` (whole file): re-exports and `install_default_connectors`.
//!
//! Only the text between `# BEGIN GENERATED: <label>` and `# END GENERATED: <label>` is
//! rewritten, so running it twice changes nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::util::{Log, StdoutLog, diff, read, rel, write_if_changed};
use crate::workspace::{self, ConnectorCrate, FACADE_DIR};
use crate::{Result, manifest};

/// Marker label of the root `[workspace.dependencies]` block.
pub(crate) const ROOT_BLOCK: &str = "connector crates";
/// Marker label of the facade's `[dependencies]` block.
pub(crate) const DEPS_BLOCK: &str = "connector dependencies";
/// Marker label of the facade's `[features]` block.
pub(crate) const FEATURES_BLOCK: &str = "connector features";
/// The generated file of the facade, relative to the root.
pub(crate) const GENERATED_RS: &str = "crates/refsync/src/generated.rs";

/// One file codegen owns (wholly or between markers), with its current and wanted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileUpdate {
    /// Absolute path.
    pub(crate) path: PathBuf,
    /// Current text (empty if the file does not exist).
    pub(crate) old: String,
    /// Generated text.
    pub(crate) new: String,
}

impl FileUpdate {
    /// Whether the file differs from what codegen would write.
    pub(crate) fn is_stale(&self) -> bool {
        self.old != self.new
    }
}

/// The marker lines of a block.
pub(crate) fn markers(label: &str) -> (String, String) {
    (
        format!("# BEGIN GENERATED: {label} (cargo xtask codegen)"),
        format!("# END GENERATED: {label}"),
    )
}

fn is_marker(line: &str, prefix: &str, label: &str) -> bool {
    let Some(rest) = line.trim().strip_prefix(prefix) else {
        return false;
    };
    let Some(after) = rest.trim_start().strip_prefix(label) else {
        return false;
    };
    after.is_empty() || after.starts_with(' ') || after.starts_with('(')
}

/// The 0-based line indices of the BEGIN and END markers of `label` in `text`.
fn find_block(text: &str, label: &str, shown: &str) -> Result<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let begins: Vec<usize> = (0..lines.len())
        .filter(|&i| is_marker(lines[i], "# BEGIN GENERATED:", label))
        .collect();
    let ends: Vec<usize> = (0..lines.len())
        .filter(|&i| is_marker(lines[i], "# END GENERATED:", label))
        .collect();
    let (begin_line, end_line) = markers(label);
    match (begins.as_slice(), ends.as_slice()) {
        ([b], [e]) if b < e => Ok((*b, *e)),
        ([], _) => Err(format!(
            "{shown}: missing the marker line `{begin_line}` (and `{end_line}` after it); \
             add the pair where codegen should write (see docs/adding-a-connector.md)"
        )),
        ([_], []) => Err(format!(
            "{shown}: `{begin_line}` has no matching `{end_line}`"
        )),
        ([b], [e]) => Err(format!(
            "{shown}: `{end_line}` (line {}) comes before its BEGIN marker (line {})",
            e + 1,
            b + 1
        )),
        _ => Err(format!(
            "{shown}: the `{label}` markers appear more than once"
        )),
    }
}

/// Replaces the lines between the markers of `label` with `body` (each line ending in `\n`).
pub(crate) fn replace_block(text: &str, label: &str, body: &str, shown: &str) -> Result<String> {
    let (b, e) = find_block(text, label, shown)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + body.len());
    for line in &lines[..=b] {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(body);
    for (i, line) in lines[e..].iter().enumerate() {
        out.push_str(line);
        if e + i + 1 < lines.len() || text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Keys of `section` that are also written by the `label` block but sit outside it: they
/// would make the manifest declare the same key twice.
fn duplicates_outside(
    text: &str,
    section: &str,
    label: &str,
    keys: &[String],
    shown: &str,
) -> Result<Vec<String>> {
    let (b, e) = find_block(text, label, shown)?;
    let entries = manifest::section(text, section).unwrap_or_default();
    Ok(entries
        .iter()
        .filter(|en| keys.contains(&en.key) && !(en.line > b + 1 && en.line <= e))
        .map(|en| {
            format!(
                "{shown}:{}: `{}` is written by codegen inside the `{label}` block; delete this hand-written line",
                en.line, en.key
            )
        })
        .collect())
}

/// The root `[workspace.dependencies]` block.
pub(crate) fn root_block(connectors: &[ConnectorCrate]) -> String {
    connectors
        .iter()
        .map(|c| {
            format!(
                "{} = {{ path = \"crates/{}\", version = \"{}\", default-features = false }}\n",
                c.package, c.folder, c.version
            )
        })
        .collect()
}

/// The facade's optional dependencies.
pub(crate) fn deps_block(connectors: &[ConnectorCrate]) -> String {
    connectors
        .iter()
        .map(|c| format!("{} = {{ workspace = true, optional = true }}\n", c.package))
        .collect()
}

/// The facade's features: `all`, then one per connector.
pub(crate) fn features_block(connectors: &[ConnectorCrate]) -> String {
    let all: Vec<String> = connectors
        .iter()
        .map(|c| format!("\"{}\"", c.connector))
        .collect();
    let mut out = format!("all = [{}]\n", all.join(", "));
    for c in connectors {
        out.push_str(&format!("{} = [\"dep:{}\"]\n", c.connector, c.package));
    }
    out
}

/// The whole of `crates/refsync/src/generated.rs`.
pub(crate) fn generated_rs(connectors: &[ConnectorCrate]) -> String {
    let mut out = String::from("// @generated by cargo xtask codegen — do not edit.\n\n");
    for c in connectors {
        out.push_str(&format!(
            "#[cfg(feature = \"{}\")]\npub use {} as {};\n",
            c.connector,
            c.rust_name(),
            c.module()
        ));
    }
    if !connectors.is_empty() {
        out.push('\n');
    }
    out.push_str(
        "/// Registers every connector compiled into this build (one cargo feature each).\n\
         pub fn install_default_connectors(registry: &mut refsync_core::Registry) {\n",
    );
    for c in connectors {
        out.push_str(&format!(
            "    #[cfg(feature = \"{}\")]\n    {}::register(registry);\n",
            c.connector,
            c.rust_name()
        ));
    }
    out.push_str("    let _ = registry;\n}\n");
    out
}

/// Computes every file codegen owns for `connectors`, without writing anything.
pub(crate) fn plan(root: &Path, connectors: &[ConnectorCrate]) -> Result<Vec<FileUpdate>> {
    let mut problems = Vec::new();
    let packages: Vec<String> = connectors.iter().map(|c| c.package.clone()).collect();
    let names: Vec<String> = connectors.iter().map(|c| c.connector.clone()).collect();

    let root_path = root.join("Cargo.toml");
    let old = read(&root_path)?;
    let new = replace_block(&old, ROOT_BLOCK, &root_block(connectors), "Cargo.toml")?;
    problems.extend(duplicates_outside(
        &new,
        "workspace.dependencies",
        ROOT_BLOCK,
        &packages,
        "Cargo.toml",
    )?);
    let mut updates = vec![FileUpdate {
        path: root_path,
        old,
        new,
    }];

    let facade_path = root.join(FACADE_DIR).join("Cargo.toml");
    let shown = rel(root, &facade_path);
    let old = read(&facade_path)?;
    let new = replace_block(&old, DEPS_BLOCK, &deps_block(connectors), &shown)?;
    let new = replace_block(&new, FEATURES_BLOCK, &features_block(connectors), &shown)?;
    problems.extend(duplicates_outside(
        &new,
        "dependencies",
        DEPS_BLOCK,
        &packages,
        &shown,
    )?);
    let mut feature_keys = names;
    feature_keys.push("all".to_owned());
    problems.extend(duplicates_outside(
        &new,
        "features",
        FEATURES_BLOCK,
        &feature_keys,
        &shown,
    )?);
    updates.push(FileUpdate {
        path: facade_path,
        old,
        new,
    });

    let generated = root.join(GENERATED_RS);
    updates.push(FileUpdate {
        old: std::fs::read_to_string(&generated).unwrap_or_default(),
        path: generated,
        new: generated_rs(connectors),
    });

    if problems.is_empty() {
        Ok(updates)
    } else {
        Err(problems.join("\n"))
    }
}

/// Writes the stale files of the plan; returns the relative paths it changed.
pub(crate) fn apply(root: &Path, updates: &[FileUpdate], log: &mut dyn Log) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for u in updates.iter().filter(|u| u.is_stale()) {
        write_if_changed(&u.path, &u.new)?;
        let shown = rel(root, &u.path);
        log.line(&format!("codegen: updated {shown}"));
        changed.push(shown);
    }
    Ok(changed)
}

/// Regenerates everything (the in-process form of `cargo xtask codegen`).
pub(crate) fn generate(root: &Path, log: &mut dyn Log) -> Result<Vec<String>> {
    let connectors = workspace::connectors_strict(root)?;
    let updates = plan(root, &connectors)?;
    let changed = apply(root, &updates, log)?;
    if changed.is_empty() {
        log.line(&format!(
            "codegen: up to date ({} connectors)",
            connectors.len()
        ));
    }
    Ok(changed)
}

/// The stale files, each with a diff, or `None` when everything is up to date.
pub(crate) fn check(root: &Path) -> Result<Option<String>> {
    let connectors = workspace::connectors_strict(root)?;
    let updates = plan(root, &connectors)?;
    let mut report = String::new();
    for u in updates.iter().filter(|u| u.is_stale()) {
        let shown = rel(root, &u.path);
        if u.old.is_empty() {
            report.push_str(&format!("codegen --check: {shown} is missing\n"));
        } else {
            report.push_str(&format!(
                "codegen --check: {shown} is stale (- current, + generated):\n"
            ));
        }
        report.push_str(&diff(&u.old, &u.new));
    }
    Ok((!report.is_empty()).then_some(report))
}

/// `cargo xtask codegen [--check]`.
pub(crate) fn command(root: &Path, check_only: bool) -> Result<ExitCode> {
    workspace::check_root(root)?;
    if check_only {
        match check(root)? {
            None => {
                let n = workspace::connectors_strict(root)?.len();
                println!("codegen --check: up to date ({n} connectors)");
                Ok(ExitCode::SUCCESS)
            }
            Some(report) => {
                eprint!("{report}");
                eprintln!("NOTE: run `cargo xtask codegen` locally and commit the updated files.");
                Ok(ExitCode::FAILURE)
            }
        }
    } else {
        generate(root, &mut StdoutLog)?;
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::FakeWorkspace;
    use crate::util::BufferLog;

    #[test]
    fn replace_block_keeps_everything_outside_the_markers() {
        let text = "a\n# BEGIN GENERATED: x (cargo xtask codegen)\nold\n# END GENERATED: x\nb\n";
        let out = replace_block(text, "x", "new1\nnew2\n", "f").unwrap();
        assert_eq!(
            out,
            "a\n# BEGIN GENERATED: x (cargo xtask codegen)\nnew1\nnew2\n# END GENERATED: x\nb\n"
        );
        assert_eq!(replace_block(&out, "x", "new1\nnew2\n", "f").unwrap(), out);
        // a label that only shares a prefix is another block
        assert!(
            replace_block("# BEGIN GENERATED: xy\n# END GENERATED: xy\n", "x", "", "f").is_err()
        );
        let e = replace_block("nothing here\n", "x", "", "f").unwrap_err();
        assert!(
            e.contains("missing the marker line") && e.starts_with("f:"),
            "{e}"
        );
        let e =
            replace_block("# END GENERATED: x\n# BEGIN GENERATED: x\n", "x", "", "f").unwrap_err();
        assert!(e.contains("comes before"), "{e}");
    }

    #[test]
    fn generate_is_idempotent_and_check_detects_staleness() {
        let ws = FakeWorkspace::new();
        ws.add_connector("generic-webhook", &["webhooks", "push"]);
        let mut log = BufferLog::default();
        let changed = generate(ws.root(), &mut log).unwrap();
        assert_eq!(
            changed,
            ["Cargo.toml", "crates/refsync/Cargo.toml", GENERATED_RS]
        );
        assert_eq!(check(ws.root()).unwrap(), None);
        let root_toml = ws.read("Cargo.toml");
        assert!(root_toml.contains(
            "refsync-generic-webhook = { path = \"crates/refsync-generic-webhook\", version = \"0.1.0\", default-features = false }\n"
        ));
        let facade = ws.read("crates/refsync/Cargo.toml");
        assert!(
            facade.contains("refsync-generic-webhook = { workspace = true, optional = true }\n")
        );
        assert!(facade.contains(
            "all = [\"generic-webhook\"]\ngeneric-webhook = [\"dep:refsync-generic-webhook\"]\n"
        ));
        let rs = ws.read(GENERATED_RS);
        assert!(rs.starts_with("// @generated by cargo xtask codegen — do not edit."));
        assert!(rs.contains("#[cfg(feature = \"generic-webhook\")]\npub use refsync_generic_webhook as generic_webhook;\n"));
        assert!(rs.contains("    #[cfg(feature = \"generic-webhook\")]\n    refsync_generic_webhook::register(registry);\n"));

        // second run: nothing to do, nothing touched
        let mut log = BufferLog::default();
        assert!(generate(ws.root(), &mut log).unwrap().is_empty());
        assert_eq!(log.0, ["codegen: up to date (1 connectors)"]);

        // a new connector crate makes every generated file stale, and --check names them
        ws.add_connector("acme-crm", &["webhooks"]);
        let report = check(ws.root()).unwrap().expect("stale");
        for f in [
            "Cargo.toml is stale",
            "crates/refsync/Cargo.toml is stale",
            "generated.rs is stale",
        ] {
            assert!(report.contains(f), "{f} not in:\n{report}");
        }
        assert!(
            report.contains("  + acme-crm = [\"dep:refsync-acme-crm\"]"),
            "{report}"
        );
        assert!(
            report.contains("  - all = [\"generic-webhook\"]"),
            "{report}"
        );
        generate(ws.root(), &mut BufferLog::default()).unwrap();
        assert_eq!(check(ws.root()).unwrap(), None);
        // sorted by connector name
        let facade = ws.read("crates/refsync/Cargo.toml");
        assert!(
            facade.contains("all = [\"acme-crm\", \"generic-webhook\"]\nacme-crm"),
            "{facade}"
        );

        // a hand edit inside a block is stale too
        let edited = ws
            .read("crates/refsync/Cargo.toml")
            .replace("optional = true", "optional = false");
        ws.write("crates/refsync/Cargo.toml", &edited);
        assert!(
            check(ws.root())
                .unwrap()
                .unwrap()
                .contains("crates/refsync/Cargo.toml is stale")
        );
    }

    #[test]
    fn missing_markers_and_hand_written_duplicates_are_errors() {
        let ws = FakeWorkspace::new();
        ws.add_connector("generic-webhook", &["push"]);
        let root_toml = ws.read("Cargo.toml");
        ws.write(
            "Cargo.toml",
            &root_toml.replace(
                "[workspace.dependencies]\n",
                "[workspace.dependencies]\nrefsync-generic-webhook = { path = \"crates/refsync-generic-webhook\" }\n",
            ),
        );
        let e = check(ws.root()).unwrap_err();
        assert!(
            e.contains("Cargo.toml:") && e.contains("delete this hand-written line"),
            "{e}"
        );
        ws.write(
            "Cargo.toml",
            &root_toml.replace("# BEGIN GENERATED: connector crates", "# BEGIN: oops"),
        );
        let e = check(ws.root()).unwrap_err();
        assert!(
            e.contains("Cargo.toml: missing the marker line `# BEGIN GENERATED: connector crates"),
            "{e}"
        );
    }

    #[test]
    fn no_connectors_still_compiles_to_a_valid_function() {
        let rs = generated_rs(&[]);
        assert!(rs.contains("pub fn install_default_connectors(registry: &mut refsync_core::Registry) {\n    let _ = registry;\n}\n"));
        assert_eq!(features_block(&[]), "all = []\n");
    }
}
