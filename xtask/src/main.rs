//! `cargo xtask`: workspace automation for refsync (std only, no dependencies).
//!
//! Commands: `new-connector`, `codegen [--check]`, `tidy`, `features`, `check-features`,
//! `smoke-scaffold`, `bench`. See `cargo xtask --help` and docs/adding-a-connector.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod codegen;
mod features;
mod manifest;
mod names;
mod scaffold;
mod smoke;
#[cfg(test)]
mod testutil;
mod tidy;
mod util;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

/// The error of every xtask command: a message for people, already carrying its context.
pub(crate) type Result<T = (), E = String> = std::result::Result<T, E>;

const HELP: &str = "\
cargo xtask — workspace automation for refsync

USAGE:
    cargo xtask [--root <dir>] <command> [options]

COMMANDS:
    new-connector <name>   scaffold crates/refsync-<name> (+ docs page, facade feature, README row);
                           refuses to overwrite anything that exists
    codegen [--check]      regenerate the connector lists (root Cargo.toml, facade Cargo.toml,
                           crates/refsync/src/generated.rs); --check fails if they are stale (CI)
    tidy                   workspace lints: every connector has its README, CHANGELOG, docs page,
                           conformance test, fixtures, facade feature and README row; manifests
                           follow the workspace rules
    features               print the facade's connector feature names, one per line
    check-features         cargo check the facade with each connector feature alone and verify
                           with cargo tree that no other connector crate is pulled in
    smoke-scaffold [--keep]
                           CI smoke test of the scaffolder: scaffold `ci-probe` in a temporary copy
                           of the workspace, build it, run its conformance suite (which must report
                           the unfinished work), then delete the copy (--keep keeps it)
    bench [--smoke] [--no-postgres] [--no-micro] [-- <refsync-bench run options>]
                           build refsync and the harness (release), run the criterion micro
                           benchmarks and every scenario (ingest on SQLite and PostgreSQL, drain,
                           cost, footprint); prints the table, writes <target>/bench/report.json,
                           report.txt and ingest-latency.svg (docs/benchmarks.md). --smoke: the
                           tiny version CI runs (dev build, a few hundred deliveries)
    help                   print this help

OPTIONS:
    --root <dir>           the workspace root (default: the parent of the xtask crate)
    -h, --help             print this help
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Parsed command line: the global `--root`, the command and its own arguments.
#[derive(Debug, PartialEq, Eq)]
struct Cli {
    root: Option<PathBuf>,
    command: Option<String>,
    args: Vec<String>,
}

fn parse_cli(argv: Vec<String>) -> Result<Cli> {
    let mut cli = Cli {
        root: None,
        command: None,
        args: Vec::new(),
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--root" {
            let dir = it.next().ok_or("--root needs a directory")?;
            cli.root = Some(PathBuf::from(dir));
        } else if let Some(dir) = arg.strip_prefix("--root=") {
            cli.root = Some(PathBuf::from(dir));
        } else if cli.command.is_none() && (arg == "-h" || arg == "--help") {
            cli.command = Some("help".to_owned());
        } else if cli.command.is_none() && !arg.starts_with('-') {
            cli.command = Some(arg);
        } else if cli.command.is_none() {
            return Err(format!("unknown option {arg:?} (see `cargo xtask --help`)"));
        } else {
            cli.args.push(arg);
        }
    }
    Ok(cli)
}

/// The workspace root when no `--root` is given: the parent of the xtask crate.
///
/// The crate directory comes from `CARGO_MANIFEST_DIR` at run time (cargo sets it for
/// `cargo run`), and only then from the path compiled in: smoke-scaffold builds a copy of the
/// workspace into the same target directory, and a binary built there must not send later runs
/// to the (deleted) copy.
fn default_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("Cargo.toml").is_file() && d.file_name().is_some_and(|n| n == "xtask"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Rejects arguments a command does not take.
fn no_more_args(command: &str, args: &[String]) -> Result {
    match args.first() {
        None => Ok(()),
        Some(a) => Err(format!(
            "`{command}` takes no argument {a:?} (see `cargo xtask --help`)"
        )),
    }
}

fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

fn run(argv: Vec<String>) -> Result<ExitCode> {
    let cli = parse_cli(argv)?;
    let root = cli.root.clone().unwrap_or_else(default_root);
    let args = cli.args;
    let Some(command) = cli.command else {
        print!("{HELP}");
        return Ok(ExitCode::FAILURE);
    };
    if command != "help" && wants_help(&args) {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    match command.as_str() {
        "help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        "new-connector" => {
            let name = match args.as_slice() {
                [name] => name,
                [] => {
                    return Err(
                        "usage: cargo xtask new-connector <name>   (e.g. acme-crm)".to_owned()
                    );
                }
                more => return Err(format!("new-connector takes one name, got {more:?}")),
            };
            let report = scaffold::new_connector(&root, name, &mut util::StdoutLog)?;
            print!("{}", report.next_steps());
            Ok(ExitCode::SUCCESS)
        }
        "codegen" => {
            let check = match args.as_slice() {
                [] => false,
                [flag] if flag == "--check" => true,
                other => return Err(format!("codegen takes only --check, got {other:?}")),
            };
            codegen::command(&root, check)
        }
        "tidy" => {
            no_more_args("tidy", &args)?;
            tidy::command(&root)
        }
        "features" => {
            no_more_args("features", &args)?;
            for feature in features::connector_features(&root)? {
                println!("{feature}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "check-features" => {
            no_more_args("check-features", &args)?;
            features::check_features(&root)
        }
        "smoke-scaffold" => {
            let keep = match args.as_slice() {
                [] => false,
                [flag] if flag == "--keep" => true,
                other => return Err(format!("smoke-scaffold takes only --keep, got {other:?}")),
            };
            smoke::command(&root, keep)
        }
        "bench" => bench::command(&root, &bench::parse(&args)?),
        other => Err(format!(
            "unknown command {other:?} (see `cargo xtask --help`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_root_anywhere_and_command_args() {
        let cli = parse_cli(argv("--root /tmp/x codegen --check")).unwrap();
        assert_eq!(cli.root, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cli.command.as_deref(), Some("codegen"));
        assert_eq!(cli.args, ["--check"]);
        let cli = parse_cli(argv("new-connector acme-crm --root=/r")).unwrap();
        assert_eq!(cli.root, Some(PathBuf::from("/r")));
        assert_eq!(cli.args, ["acme-crm"]);
        assert_eq!(
            parse_cli(argv("--help")).unwrap().command.as_deref(),
            Some("help")
        );
        assert!(parse_cli(argv("--frobnicate")).is_err());
        assert!(parse_cli(argv("--root")).is_err());
    }

    #[test]
    fn help_lists_every_command() {
        for c in [
            "new-connector",
            "codegen",
            "tidy",
            "features",
            "check-features",
            "smoke-scaffold",
            "bench",
        ] {
            assert!(HELP.contains(c), "{c} missing from --help");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(run(argv("codegen --frob")).is_err());
        assert!(run(argv("tidy extra")).is_err());
        assert!(run(argv("new-connector")).is_err());
        assert!(run(argv("no-such-command")).is_err());
    }

    #[test]
    fn default_root_is_the_parent_of_xtask() {
        assert!(default_root().join("xtask").join("Cargo.toml").is_file());
    }
}
