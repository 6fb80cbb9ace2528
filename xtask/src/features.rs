//! `cargo xtask features` and `cargo xtask check-features`: every connector feature of the
//! facade builds alone and pulls in no other connector crate.

use std::path::Path;
use std::process::{Command, ExitCode};

use crate::Result;
use crate::workspace;

/// The facade's connector features (= connector names), sorted.
pub(crate) fn connector_features(root: &Path) -> Result<Vec<String>> {
    workspace::check_root(root)?;
    Ok(workspace::connectors_strict(root)?
        .into_iter()
        .map(|c| c.connector)
        .collect())
}

/// The `cargo` that runs us (cargo sets `CARGO`), else `cargo` from `PATH`.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Package names in `cargo tree --prefix none` output.
pub(crate) fn tree_packages(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Connector packages in `tree` other than `allowed`.
fn intruders(tree: &[String], connector_packages: &[String], allowed: Option<&str>) -> Vec<String> {
    let mut found: Vec<String> = connector_packages
        .iter()
        .filter(|p| Some(p.as_str()) != allowed && tree.contains(p))
        .cloned()
        .collect();
    found.dedup();
    found
}

fn feature_args(feature: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-p".to_owned(),
        "refsync".to_owned(),
        "--no-default-features".to_owned(),
    ];
    if let Some(f) = feature {
        args.push("--features".to_owned());
        args.push(f.to_owned());
    }
    args
}

/// Runs `cargo check` and `cargo tree` for one feature (or none); returns the problem, if any.
fn check_one(
    root: &Path,
    feature: Option<&str>,
    own: Option<&str>,
    packages: &[String],
) -> Result<Option<String>> {
    let label = feature.unwrap_or("(no feature)");
    let mut check = vec!["check".to_owned()];
    check.extend(feature_args(feature));
    println!("check-features: {label}: cargo {}", check.join(" "));
    let status = Command::new(cargo())
        .current_dir(root)
        .args(&check)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Ok(Some(format!(
            "{label}: `cargo {}` failed ({status})",
            check.join(" ")
        )));
    }
    let mut tree = vec!["tree".to_owned()];
    tree.extend(feature_args(feature));
    tree.extend(["--prefix", "none", "-e", "normal"].map(str::to_owned));
    println!("check-features: {label}: cargo {}", tree.join(" "));
    let out = Command::new(cargo())
        .current_dir(root)
        .args(&tree)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Ok(Some(format!(
            "{label}: `cargo {}` failed: {}",
            tree.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let pkgs = tree_packages(&String::from_utf8_lossy(&out.stdout));
    let others = intruders(&pkgs, packages, own);
    if !others.is_empty() {
        return Ok(Some(format!(
            "{label}: pulls in other connector crate(s): {} (a connector must depend on refsync-core and refsync-http only)",
            others.join(", ")
        )));
    }
    if let Some(own) = own {
        if !pkgs.iter().any(|p| p == own) {
            return Ok(Some(format!(
                "{label}: the feature does not pull in {own} (run `cargo xtask codegen`)"
            )));
        }
    }
    println!("check-features: {label}: ok");
    Ok(None)
}

/// `cargo xtask check-features`.
pub(crate) fn check_features(root: &Path) -> Result<ExitCode> {
    workspace::check_root(root)?;
    let connectors = workspace::connectors_strict(root)?;
    let packages: Vec<String> = connectors.iter().map(|c| c.package.clone()).collect();
    let mut failures = Vec::new();
    if let Some(p) = check_one(root, None, None, &packages)? {
        failures.push(p);
    }
    for (i, c) in connectors.iter().enumerate() {
        println!(
            "check-features: [{}/{}] feature {}",
            i + 1,
            connectors.len(),
            c.connector
        );
        if let Some(p) = check_one(root, Some(&c.connector), Some(&c.package), &packages)? {
            failures.push(p);
        }
    }
    if failures.is_empty() {
        println!(
            "check-features: ok ({} features, each alone)",
            connectors.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failures {
        eprintln!("check-features: FAILED {f}");
    }
    eprintln!(
        "check-features: {} of {} checks failed",
        failures.len(),
        connectors.len() + 1
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeWorkspace;

    #[test]
    fn features_are_the_sorted_connector_names() {
        let ws = FakeWorkspace::new();
        ws.add_connector("zeta", &["push"]);
        ws.add_connector("generic-webhook", &["webhooks"]);
        assert_eq!(
            connector_features(ws.root()).unwrap(),
            ["generic-webhook", "zeta"]
        );
    }

    #[test]
    fn tree_output_is_checked_for_other_connectors() {
        let out = "refsync v0.1.0 (/w/crates/refsync)\nrefsync-core v0.1.0 (/w/crates/refsync-core)\n\
                   refsync-zeta v0.1.0 (/w/crates/refsync-zeta)\nrefsync-core v0.1.0 (/w/crates/refsync-core) (*)\n";
        let pkgs = tree_packages(out);
        let connectors = [
            "refsync-generic-webhook".to_owned(),
            "refsync-zeta".to_owned(),
        ];
        assert!(intruders(&pkgs, &connectors, Some("refsync-zeta")).is_empty());
        assert_eq!(
            intruders(&pkgs, &connectors, Some("refsync-generic-webhook")),
            ["refsync-zeta"]
        );
        assert_eq!(intruders(&pkgs, &connectors, None), ["refsync-zeta"]);
    }
}
