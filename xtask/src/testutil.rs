//! Small fake workspaces in temporary directories, for the tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::util::{TempDir, files_under, rel};

/// A minimal refsync-shaped workspace: root manifest with the codegen markers, refsync-core,
/// the facade with its markers, a README with the connector table. Removed on drop.
#[derive(Debug)]
pub(crate) struct FakeWorkspace {
    dir: TempDir,
}

const ROOT_TOML: &str = r#"[workspace]
resolver = "3"
members = ["crates/*"]

[workspace.package]
version = "0.1.0"
edition = "2024"

[workspace.dependencies]
refsync-core = { path = "crates/refsync-core", version = "0.1.0", default-features = false }
# BEGIN GENERATED: connector crates (cargo xtask codegen)
# END GENERATED: connector crates
serde = { version = "1", default-features = false }

[workspace.lints.rust]
unsafe_code = "forbid"
"#;

const FACADE_TOML: &str = r#"[package]
name = "refsync"
version.workspace = true
edition.workspace = true

[dependencies]
refsync-core.workspace = true
# BEGIN GENERATED: connector dependencies (cargo xtask codegen)
# END GENERATED: connector dependencies

[features]
default = []
# BEGIN GENERATED: connector features (cargo xtask codegen)
# END GENERATED: connector features

[lints]
workspace = true
"#;

const CORE_TOML: &str = r#"[package]
name = "refsync-core"
version.workspace = true
edition.workspace = true

[lints]
workspace = true
"#;

const README: &str = "# refsync\n\n## Connectors\n\n<!-- BEGIN connector table -->\n\
| Connector | Feature | Capabilities | Status |\n|---|---|---|---|\n<!-- END connector table -->\n";

impl FakeWorkspace {
    pub(crate) fn new() -> FakeWorkspace {
        let ws = FakeWorkspace {
            dir: TempDir::new("xtask-test-ws").expect("temp dir"),
        };
        ws.write("Cargo.toml", ROOT_TOML);
        ws.write("crates/refsync-core/Cargo.toml", CORE_TOML);
        ws.write("crates/refsync-core/src/lib.rs", "");
        ws.write("crates/refsync/Cargo.toml", FACADE_TOML);
        ws.write(
            "crates/refsync/src/lib.rs",
            "mod generated;\npub use generated::*;\n",
        );
        ws.write("README.md", README);
        fs::create_dir_all(ws.root().join("docs/connectors")).expect("docs dir");
        ws
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn write(&self, path: &str, text: &str) {
        let full = self.root().join(path);
        fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        fs::write(full, text).expect("write");
    }

    pub(crate) fn remove(&self, path: &str) {
        let full = self.root().join(path);
        if full.is_dir() {
            fs::remove_dir_all(full).expect("rm -r");
        } else {
            fs::remove_file(full).expect("rm");
        }
    }

    /// A connector crate manifest only.
    pub(crate) fn add_connector(&self, name: &str, capabilities: &[&str]) {
        let caps: Vec<String> = capabilities.iter().map(|c| format!("\"{c}\"")).collect();
        self.write(
            &format!("crates/refsync-{name}/Cargo.toml"),
            &format!(
                "[package]\nname = \"refsync-{name}\"\nversion.workspace = true\nedition.workspace = true\n\n\
                 [package.metadata.refsync]\nkind = \"connector\"\nconnector = \"{name}\"\ncapabilities = [{}]\n\n\
                 [dependencies]\nrefsync-core.workspace = true\n\n[lints]\nworkspace = true\n",
                caps.join(", ")
            ),
        );
    }

    /// A connector with everything tidy asks for (run codegen for the facade feature).
    pub(crate) fn add_complete_connector(&self, name: &str, capabilities: &[&str]) {
        self.add_connector(name, capabilities);
        let dir = format!("crates/refsync-{name}");
        self.write(&format!("{dir}/README.md"), "# readme\n");
        self.write(&format!("{dir}/CHANGELOG.md"), "# changelog\n");
        self.write(&format!("{dir}/src/lib.rs"), "");
        self.write(&format!("{dir}/tests/conformance.rs"), "fn main() {}\n");
        self.write(&format!("{dir}/tests/fixtures/README.md"), "# fixtures\n");
        self.write(&format!("{dir}/tests/fixtures/deal-won.json"), "{}\n");
        self.write(
            &format!("{dir}/tests/fixtures/deal-won.source.txt"),
            "Origin: vendor docs\n",
        );
        self.write(
            &format!("{dir}/tests/fixtures/deal-won.expected.json"),
            "{\"events\": []}\n",
        );
        self.write(&format!("docs/connectors/{name}.md"), "# docs\n");
        let readme = self.read("README.md").replace(
            "<!-- END connector table -->",
            &format!("| [{name}](docs/connectors/{name}.md) | `{name}` | x | usable |\n<!-- END connector table -->"),
        );
        self.write("README.md", &readme);
    }

    /// Every file and its bytes, to compare before/after.
    pub(crate) fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        files_under(self.root())
            .expect("walk")
            .into_iter()
            .map(|p| (rel(self.root(), &p), fs::read(&p).expect("read")))
            .collect()
    }
}

/// `text` formatted by `rustfmt --edition 2024`, or `None` when rustfmt is not available.
pub(crate) fn rustfmt(text: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        panic!("rustfmt failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout).ok()
}
