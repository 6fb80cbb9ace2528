//! The processes of a benchmark run: `refsync serve` (started, measured, killed) and the load
//! generator (this binary's `load` command, in its own process).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::loadgen::LoadResult;

/// How long `refsync serve` may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `refsync serve`; killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From spawn to the `listening on` line (store opened and migrated, workers started).
    pub startup: Duration,
    stderr: PathBuf,
}

impl Serve {
    /// Starts `<bin> serve -c <config>` (stderr to `<config dir>/serve.stderr`) and waits for
    /// its `listening on <addr>` line.
    ///
    /// # Errors
    /// It could not start, exited, or did not listen within a minute (with its stderr).
    pub fn start(bin: &Path, config: &Path) -> Result<Serve, String> {
        let dir = config.parent().unwrap_or(Path::new("."));
        let stderr = dir.join("serve.stderr");
        let log = std::fs::File::create(&stderr)
            .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let line = rx.recv_timeout(START_TIMEOUT);
        let startup = started.elapsed();
        let mut serve = Serve {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            startup,
            stderr,
        };
        match line {
            Ok(addr) => {
                serve.addr = addr
                    .parse()
                    .map_err(|e| format!("bad listening address {addr:?}: {e}"))?;
                Ok(serve)
            }
            Err(_) => {
                let _ = serve.child.kill();
                let _ = serve.child.wait();
                Err(format!(
                    "refsync serve did not listen within {} s; its stderr:\n{}",
                    START_TIMEOUT.as_secs(),
                    serve.stderr_tail()
                ))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last 40 lines of its stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Resident memory now and at its peak (KiB): `VmRSS` and `VmHWM` of /proc.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        memory_kib(self.pid())
    }

    /// SIGKILL (a crash: no shutdown, no flush), and reap it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to 30 s (SIGKILL after that).
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` and `VmHWM` (KiB) of process `pid`, from /proc (Linux).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples `VmRSS` of `pid` every 50 ms until dropped; the largest value seen (KiB).
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling.
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((rss, _)) = memory_kib(pid) {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// Stops; the largest `VmRSS` seen (KiB).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs this binary's `load` command in its own process and reads its JSON result.
///
/// # Errors
/// It could not run, failed, or printed no JSON (with its stderr).
pub fn run_load_process(
    url: &str,
    payloads: &Path,
    rate: Option<f64>,
    concurrency: usize,
) -> Result<LoadResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find refsync-bench: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("load")
        .arg("--url")
        .arg(url)
        .arg("--payloads")
        .arg(payloads)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--json");
    if let Some(r) = rate {
        cmd.arg("--rate").arg(format!("{r}"));
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the load generator: {e}"))?;
    if !out.status.success() {
        return Err(format!("the load generator failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "the load generator printed no result ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
