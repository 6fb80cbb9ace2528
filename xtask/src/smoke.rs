//! `cargo xtask smoke-scaffold`: the CI smoke test of the scaffolder (clippy runs
//! `cargo dev new_lint` + `cargo check` in CI). In a temporary copy of the workspace it
//! scaffolds `ci-probe`, checks that a second run refuses, runs `codegen --check`, formats,
//! builds and lints the new crate, and runs its conformance suite, which must run and report
//! the scaffold's unfinished work (`TODO(ci-probe)`) as failures or skips, never pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::features::cargo;
use crate::util::{Log, TempDir, files_under, rel};
use crate::{Result, scaffold, workspace};

/// The probe connector's name.
pub(crate) const PROBE: &str = "ci-probe";

struct Indented;

impl Log for Indented {
    fn line(&mut self, line: &str) {
        println!("    {line}");
    }
}

fn step(n: usize, text: &str) {
    println!("smoke-scaffold: [{n}/8] {text}");
}

/// The workspace's files: `git ls-files -co --exclude-standard` (tracked + untracked but not
/// ignored), or a walk that skips `target/` and `.git/` when git is unavailable.
fn workspace_files(root: &Path) -> Result<Vec<PathBuf>> {
    let git = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-co", "--exclude-standard", "-z"])
        .output();
    if let Ok(out) = git {
        if out.status.success() {
            return Ok(out
                .stdout
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| PathBuf::from(String::from_utf8_lossy(s).into_owned()))
                .collect());
        }
    }
    println!(
        "smoke-scaffold: git ls-files unavailable, copying the tree without target/ and .git/"
    );
    Ok(files_under(root)?
        .into_iter()
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
        .filter(|p| {
            let first = p
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            !matches!(first.as_deref(), Some("target" | ".git"))
        })
        .collect())
}

fn copy_workspace(root: &Path, to: &Path) -> Result<usize> {
    let mut n = 0;
    for file in workspace_files(root)? {
        let from = root.join(&file);
        if !from.is_file() {
            continue; // tracked but deleted, or a submodule
        }
        let dest = to.join(&file);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::copy(&from, &dest)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), dest.display()))?;
        n += 1;
    }
    Ok(n)
}

/// The target directory to share with the copy, so its build is incremental.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn cargo_in(dir: &Path, target: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        // ours (cargo run sets it); the nested cargo must derive everything from `dir`
        .env_remove("CARGO_MANIFEST_DIR")
        .args(args);
    cmd
}

fn run_step(dir: &Path, target: &Path, args: &[&str]) -> Result {
    println!("    $ cargo {}", args.join(" "));
    let status = cargo_in(dir, target, args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo {}` failed in the scaffolded workspace ({status})",
            args.join(" ")
        ))
    }
}

/// Runs clippy on the new crate and fails on any diagnostic in its files. (`-D warnings` would
/// also fail on warnings in other workspace crates, which are not the scaffolder's business.)
fn clippy_clean(ws: &Path, target: &Path, krate: &str) -> Result {
    let args = [
        "clippy",
        "-p",
        krate,
        "--all-targets",
        "--message-format",
        "short",
    ];
    println!("    $ cargo {}", args.join(" "));
    let out = cargo_in(ws, target, &args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("crates/{krate}/");
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    for line in &ours {
        println!("    {line}");
    }
    if !out.status.success() {
        for line in text.lines().filter(|l| l.contains("error")) {
            println!("    {line}");
        }
        return Err(format!("`cargo {}` failed", args.join(" ")));
    }
    if !ours.is_empty() {
        return Err(format!(
            "clippy reports {} diagnostic(s) in the scaffolded crate",
            ours.len()
        ));
    }
    println!("    no clippy diagnostic in {prefix}");
    Ok(())
}

/// Judges the conformance run of the fresh scaffold: it must have run, and reported the
/// unfinished work as failures or skips naming `TODO(<name>)` — never all passes. Returns the
/// summary line.
pub(crate) fn judge_conformance(success: bool, output: &str, name: &str) -> Result<String> {
    let summary = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("test result:"))
        .map(|l| l.trim().to_owned());
    let Some(summary) = summary else {
        return Err(
            "the conformance suite did not run (no `test result:` line); see the output above"
                .to_owned(),
        );
    };
    let count = |what: &str| -> usize {
        summary
            .split(';')
            .find_map(|part| {
                let mut words = part.split_whitespace().rev();
                (words.next() == Some(what)).then(|| words.next().and_then(|n| n.parse().ok()))?
            })
            .unwrap_or(0)
    };
    let (passed, failed, ignored) = (count("passed"), count("failed"), count("ignored"));
    let todo = format!("TODO({name})");
    if !output.contains(&todo) {
        return Err(format!(
            "the conformance output never mentions {todo}: the scaffold's unfinished work is not reported ({summary})"
        ));
    }
    if success && failed == 0 && ignored == 0 {
        return Err(format!(
            "every conformance test passed on an unfinished scaffold ({summary})"
        ));
    }
    if success && failed == 0 {
        // Everything unfinished was skipped: acceptable only because the skips name the TODOs.
        return Ok(format!(
            "the scaffold's suite ran: {passed} passing, {ignored} skipped with TODO reasons"
        ));
    }
    if failed == 0 {
        return Err(format!(
            "the suite failed without failing tests (a crash?): {summary}"
        ));
    }
    // Worded without libtest's "test result:" so CI logs show one test summary: the workspace's.
    Ok(format!(
        "the scaffold's suite ran: {failed} failing and {ignored} skipped tests report the unfinished work ({passed} passing)"
    ))
}

/// `cargo xtask smoke-scaffold [--keep]`.
pub(crate) fn command(root: &Path, keep: bool) -> Result<ExitCode> {
    workspace::check_root(root)?;
    let started = Instant::now();
    let mut tmp = TempDir::new("refsync-smoke-scaffold")?;
    if keep {
        tmp.keep();
    }
    let result = smoke(root, tmp.path());
    if keep {
        println!("smoke-scaffold: kept {}", tmp.path().display());
    } else if result.is_err() {
        println!(
            "smoke-scaffold: removing {} (rerun with --keep to inspect it)",
            tmp.path().display()
        );
    }
    result?;
    drop(tmp);
    println!(
        "smoke-scaffold: ok ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn smoke(root: &Path, ws: &Path) -> Result {
    let target = target_dir(root);
    step(1, &format!("copying the workspace to {}", ws.display()));
    let n = copy_workspace(root, ws)?;
    println!("    {n} files; target dir {}", target.display());

    step(2, &format!("new-connector {PROBE}"));
    let report = scaffold::new_connector(ws, PROBE, &mut Indented)?;
    for f in &report.created {
        if !ws.join(f).is_file() {
            return Err(format!("new-connector reported {f} but it does not exist"));
        }
    }
    for f in [
        "crates/refsync-ci-probe/src/lib.rs",
        "crates/refsync-ci-probe/tests/conformance.rs",
        "docs/connectors/ci-probe.md",
    ] {
        if !report.created.iter().any(|c| c == f) {
            return Err(format!("new-connector did not create {f}"));
        }
    }

    step(
        3,
        &format!("a second new-connector {PROBE} must refuse and change nothing"),
    );
    let before = snapshot(ws)?;
    match scaffold::new_connector(ws, PROBE, &mut Indented) {
        Ok(_) => {
            return Err(
                "the second new-connector run succeeded: it must refuse to overwrite".to_owned(),
            );
        }
        Err(e) if e.contains("refusing to overwrite") => {
            println!("    refused: {}", e.lines().next().unwrap_or(""))
        }
        Err(e) => {
            return Err(format!(
                "the second run failed, but not with `refusing to overwrite`: {e}"
            ));
        }
    }
    if snapshot(ws)? != before {
        return Err("the refused second run changed files".to_owned());
    }

    let krate = format!("refsync-{PROBE}");
    step(4, "cargo xtask codegen --check");
    run_step(ws, &target, &["xtask", "codegen", "--check"])?;

    step(5, &format!("cargo fmt --check -p {krate}"));
    run_step(ws, &target, &["fmt", "--check", "-p", &krate])?;

    step(6, &format!("cargo build -p {krate} --tests"));
    run_step(ws, &target, &["build", "-p", &krate, "--tests"])?;

    step(
        7,
        &format!("cargo clippy -p {krate} --all-targets (no warning in the scaffold)"),
    );
    clippy_clean(ws, &target, &krate)?;

    step(
        8,
        &format!("cargo test -p {krate} --test conformance (must run and report TODO({PROBE}))"),
    );
    let out = cargo_in(
        ws,
        &target,
        &["test", "-p", &krate, "--test", "conformance"],
    )
    .stdin(Stdio::null())
    .output()
    .map_err(|e| format!("cannot run cargo: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The scaffold's expected failures are echoed only when the judgement fails, so a CI log
    // never ends with a failing libtest summary from the throwaway crate.
    let verdict = judge_conformance(out.status.success(), &text, PROBE).inspect_err(|_| {
        for line in text.lines() {
            println!("    | {line}");
        }
    })?;
    println!("    {verdict}");
    Ok(())
}

/// Every file under `dir` except `target/` with its bytes, to prove a refused run changed nothing.
fn snapshot(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    files_under(dir)?
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("target")))
        .map(|p| {
            let bytes = fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok((rel(dir, &p), bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_verdicts() {
        let failing = "test verify::accepts_valid ... FAILED\n\nfailures:\n---- verify ----\nTODO(ci-probe): authenticate\n\n\
                       test result: FAILED. 9 passed; 17 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.1s\n";
        assert!(
            judge_conformance(false, failing, "ci-probe")
                .unwrap()
                .contains("17 failing")
        );
        // all passes: refused
        let all_pass = "TODO(ci-probe) in a comment\ntest result: ok. 29 passed; 0 failed; 0 ignored; 0 measured\n";
        assert!(
            judge_conformance(true, all_pass, "ci-probe")
                .unwrap_err()
                .contains("every conformance test passed")
        );
        // skips with TODO reasons: accepted
        let skipped = "conformance: skip push::create: TODO(ci-probe): simulator\ntest result: ok. 9 passed; 0 failed; 20 ignored; 0 measured\n";
        assert!(judge_conformance(true, skipped, "ci-probe").is_ok());
        // a build failure never ran
        assert!(
            judge_conformance(false, "error[E0425]: cannot find value\n", "ci-probe")
                .unwrap_err()
                .contains("did not run")
        );
        // failures that do not name the TODOs
        let anonymous = "test result: FAILED. 1 passed; 1 failed; 0 ignored\n";
        assert!(
            judge_conformance(false, anonymous, "ci-probe")
                .unwrap_err()
                .contains("never mentions TODO(ci-probe)")
        );
    }
}
