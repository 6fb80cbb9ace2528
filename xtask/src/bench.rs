//! `cargo xtask bench`: builds `refsync` and the harness (`crates/refsync-bench`), runs the
//! criterion micro benchmarks, then every scenario (`refsync-bench run`), which prints the
//! table and writes the report under `<target dir>/bench/`. See docs/benchmarks.md.
//!
//! `--smoke` is the tiny version CI runs so the harness cannot rot: a dev build (the one the
//! tests already made), each micro benchmark once as a test, a few hundred deliveries.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::Result;
use crate::features::cargo;

/// The variable holding the PostgreSQL URL (the test suites read the same one).
const POSTGRES_ENV: &str = "REFSYNC_TEST_POSTGRES_URL";

/// Parsed `bench` options.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) smoke: bool,
    pub(crate) postgres: bool,
    pub(crate) micro: bool,
    /// Passed on to `refsync-bench run` (after `--`).
    pub(crate) run_args: Vec<String>,
}

pub(crate) fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        postgres: true,
        micro: true,
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => o.smoke = true,
            "--no-postgres" => o.postgres = false,
            "--no-micro" => o.micro = false,
            "--" => {
                o.run_args = it.cloned().collect();
                break;
            }
            other => {
                return Err(format!(
                    "bench takes --smoke, --no-postgres, --no-micro and `-- <refsync-bench run options>`, got {other:?}"
                ));
            }
        }
    }
    Ok(o)
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root.join(d) }
        }
        _ => root.join("target"),
    }
}

fn run(root: &Path, what: &str, cmd: &mut Command) -> Result {
    let status = cmd
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

pub(crate) fn command(root: &Path, o: &Options) -> Result<ExitCode> {
    let started = Instant::now();
    let steps = 4;
    let step = |n: usize, text: &str| {
        println!(
            "bench: [{n}/{steps}] {text} ({} s)",
            started.elapsed().as_secs()
        );
    };
    let target = target_dir(root);
    let profile = if o.smoke { "debug" } else { "release" };

    step(1, "PostgreSQL");
    let mut postgres_url = std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    if o.postgres && postgres_url.is_none() {
        println!("bench: {POSTGRES_ENV} is not set: starting a local server with .ci/postgres.sh");
        let out = Command::new("bash")
            .arg(root.join(".ci/postgres.sh"))
            .current_dir(root)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!(".ci/postgres.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                ".ci/postgres.sh failed ({}); run with --no-postgres to measure SQLite only",
                out.status
            ));
        }
        postgres_url = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }

    step(
        2,
        &format!("building refsync and refsync-bench ({profile})"),
    );
    let mut build = Command::new(cargo());
    build.args([
        "build",
        "--locked",
        "-p",
        "refsync-cli",
        "-p",
        "refsync-bench",
    ]);
    if !o.smoke {
        build.arg("--release");
    }
    run(root, "cargo build", &mut build)?;

    step(
        3,
        "micro benchmarks (criterion: verify + parse + rules per connector)",
    );
    if !o.micro {
        println!("bench: skipped (--no-micro)");
    } else if o.smoke {
        // Each benchmark once, as a test: it must run, its numbers are not kept.
        run(
            root,
            "micro benchmarks (test mode)",
            Command::new(cargo()).args([
                "test",
                "--locked",
                "-p",
                "refsync-bench",
                "--bench",
                "micro",
            ]),
        )?;
    } else {
        run(
            root,
            "cargo bench",
            Command::new(cargo()).args([
                "bench",
                "--locked",
                "-p",
                "refsync-bench",
                "--bench",
                "micro",
            ]),
        )?;
    }

    step(4, "scenarios: ingest, drain, cost, footprint");
    let bin = target.join(profile);
    let mut cmd = Command::new(bin.join("refsync-bench"));
    cmd.arg("run")
        .arg("--refsync")
        .arg(bin.join("refsync"))
        .arg("--out")
        .arg(target.join("bench"))
        .arg("--criterion-dir")
        .arg(target.join("criterion"));
    if o.smoke {
        cmd.arg("--smoke");
    }
    if let Some(url) = &postgres_url {
        if o.postgres {
            cmd.arg("--postgres").env(POSTGRES_ENV, url);
        }
    }
    cmd.args(&o.run_args);
    run(root, "refsync-bench run", &mut cmd)?;
    println!("bench: done in {} s", started.elapsed().as_secs());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_and_pass_through() {
        assert_eq!(
            parse(&args("")).unwrap(),
            Options {
                smoke: false,
                postgres: true,
                micro: true,
                run_args: vec![]
            }
        );
        let o = parse(&args("--smoke --no-postgres -- --rates 100,200 --smoke")).unwrap();
        assert!(o.smoke && !o.postgres && o.micro);
        assert_eq!(o.run_args, args("--rates 100,200 --smoke"));
        assert!(parse(&args("--fast")).is_err());
    }
}
