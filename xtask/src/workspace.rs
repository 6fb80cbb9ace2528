//! The workspace as xtask sees it: the root manifest, the facade and the connector crates
//! (every `crates/*/Cargo.toml` with `[package.metadata.refsync] kind = "connector"`).

use std::path::{Path, PathBuf};

use crate::manifest;
use crate::util::{read, rel, subdirs};
use crate::{Result, names};

/// The facade crate's folder, relative to the root.
pub(crate) const FACADE_DIR: &str = "crates/refsync";
/// Where a connector's docs page lives: `docs/connectors/<name>.md`.
pub(crate) const DOCS_DIR: &str = "docs/connectors";
/// The metadata table every connector crate carries.
pub(crate) const METADATA: &str = "package.metadata.refsync";

/// The capability names of `refsync_core::Capabilities::names()`, in declaration order.
pub(crate) const CAPABILITIES: &[&str] = &[
    "webhooks",
    "push",
    "duplicate_lookup",
    "enrich",
    "subscriptions",
    "reconcile",
    "batching",
];

/// A connector crate found under `crates/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectorCrate {
    /// Absolute folder.
    pub(crate) dir: PathBuf,
    /// Folder name (`refsync-acme-crm`).
    pub(crate) folder: String,
    /// Package name (should equal the folder name).
    pub(crate) package: String,
    /// Registry name / facade feature (`acme-crm`).
    pub(crate) connector: String,
    /// Declared capabilities.
    pub(crate) capabilities: Vec<String>,
    /// The version used in the root `[workspace.dependencies]` line.
    pub(crate) version: String,
}

impl ConnectorCrate {
    /// The crate name in Rust paths (`refsync_acme_crm`).
    pub(crate) fn rust_name(&self) -> String {
        self.package.replace('-', "_")
    }
    /// The module name in the facade (`acme_crm`).
    pub(crate) fn module(&self) -> String {
        self.connector.replace('-', "_")
    }
    /// Whether it declares `capability`.
    pub(crate) fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// Checks that `root` is a cargo workspace root (a `Cargo.toml` with `[workspace]`).
pub(crate) fn check_root(root: &Path) -> Result {
    let manifest = root.join("Cargo.toml");
    let text = read(&manifest)
        .map_err(|e| format!("{e} (is --root {} the workspace root?)", root.display()))?;
    if manifest::section(&text, "workspace").is_none() {
        return Err(format!(
            "{} has no [workspace] table: not the workspace root",
            manifest.display()
        ));
    }
    Ok(())
}

/// `[workspace.package] version` of the root manifest.
pub(crate) fn workspace_version(root: &Path) -> Result<String> {
    let text = read(&root.join("Cargo.toml"))?;
    manifest::get_str(&text, "workspace.package", "version")
        .ok_or_else(|| "Cargo.toml: [workspace.package] has no version".to_owned())
}

/// Every connector crate, sorted by connector name, and the problems found in their metadata
/// (one line each, with the file).
pub(crate) fn connectors(root: &Path) -> Result<(Vec<ConnectorCrate>, Vec<String>)> {
    let ws_version = workspace_version(root).ok();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for dir in subdirs(&root.join("crates"))? {
        let manifest_path = dir.join("Cargo.toml");
        if !manifest_path.is_file() {
            continue;
        }
        let text = read(&manifest_path)?;
        let shown = rel(root, &manifest_path);
        if manifest::get_str(&text, METADATA, "kind").as_deref() != Some("connector") {
            continue;
        }
        let folder = dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let package = manifest::get_str(&text, "package", "name").unwrap_or_default();
        let Some(connector) = manifest::get_str(&text, METADATA, "connector") else {
            problems.push(format!(
                "{shown}: [{METADATA}] has kind = \"connector\" but no `connector = \"<name>\"`"
            ));
            continue;
        };
        if let Err(e) = names::validate(&connector) {
            problems.push(format!("{shown}: [{METADATA}] connector: {e}"));
            continue;
        }
        let expected = format!("refsync-{connector}");
        if package != expected || folder != expected {
            problems.push(format!(
                "{shown}: connector {connector:?} must live in crates/{expected} with package name {expected:?} \
                 (found folder {folder:?}, package {package:?})"
            ));
            continue;
        }
        let capabilities = match manifest::get_array(&text, METADATA, "capabilities") {
            Some(c) => c,
            None => {
                problems.push(format!(
                    "{shown}: [{METADATA}] needs `capabilities = [...]` (names as in refsync_core::Capabilities::names())"
                ));
                Vec::new()
            }
        };
        for c in &capabilities {
            if !CAPABILITIES.contains(&c.as_str()) {
                problems.push(format!(
                    "{shown}: unknown capability {c:?} (known: {})",
                    CAPABILITIES.join(", ")
                ));
            }
        }
        let version = match manifest::get_str(&text, "package", "version") {
            Some(v) => v,
            None => ws_version.clone().unwrap_or_else(|| "0.0.0".to_owned()),
        };
        found.push(ConnectorCrate {
            dir,
            folder,
            package,
            connector,
            capabilities,
            version,
        });
    }
    found.sort_by(|a, b| a.connector.cmp(&b.connector));
    for pair in found.windows(2) {
        if pair[0].connector == pair[1].connector {
            problems.push(format!(
                "connector name {:?} is declared twice",
                pair[0].connector
            ));
        }
    }
    Ok((found, problems))
}

/// The connectors, or an error listing the metadata problems.
pub(crate) fn connectors_strict(root: &Path) -> Result<Vec<ConnectorCrate>> {
    let (found, problems) = connectors(root)?;
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(format!(
            "connector metadata problems:\n  {}",
            problems.join("\n  ")
        ))
    }
}
