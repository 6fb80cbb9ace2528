//! `refsync serve`: the engine behind HTTP, with its workers, until SIGTERM / SIGINT.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use refsync::Registry;
use refsync_engine::Engine;
use refsync_engine::config::EngineConfig;

/// Arguments of `refsync serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file.
    #[arg(long, short = 'c', default_value = "refsync.toml")]
    pub(crate) config: PathBuf,
}

/// Logs to stderr; `REFSYNC_LOG` filters (`info` by default; `debug`,
/// `warn,refsync_engine=debug`...). Events never carry secrets: the engine logs ids and
/// reasons, not bodies or headers.
pub(crate) fn init_logging() {
    init_logging_with_default("info");
}

/// [`init_logging`] with another default level.
pub(crate) fn init_logging_with_default(default: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("REFSYNC_LOG").unwrap_or_default();
    let filter: Targets = spec
        .trim()
        .parse()
        .ok()
        .filter(|_| !spec.trim().is_empty())
        .unwrap_or_else(|| {
            Targets::new().with_default(default.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO))
        });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}

/// Loads and checks `path` with the registry; prints every problem (like `check-config`).
pub(crate) fn load_config(registry: &Registry, path: &Path) -> Result<EngineConfig, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("refsync: cannot read {}: {e}", path.display());
            return Err(ExitCode::from(crate::REJECTED));
        }
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let loader = refsync_engine::config::Loader::new()
        .file_name(path.display().to_string())
        .base_dir(base_dir)
        .registry(registry);
    match loader.parse(&text) {
        Ok(config) => Ok(config),
        Err(errors) => {
            for p in &errors.problems {
                println!("{p}");
            }
            eprintln!(
                "refsync: {} problem{} in {}",
                errors.problems.len(),
                if errors.problems.len() == 1 { "" } else { "s" },
                path.display()
            );
            Err(ExitCode::from(crate::REJECTED))
        }
    }
}

/// A multi-threaded runtime for the service commands.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn run(args: &ServeArgs) -> ExitCode {
    init_logging();
    let registry = refsync::default_registry();
    let config = match load_config(&registry, &args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let engine = match Engine::new(config, &registry).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("refsync serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        match serve(engine, shutdown_signal(), |addr| {
            println!("listening on {addr}");
            let _ = std::io::stdout().flush();
        })
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("refsync serve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Binds `server.listen`, starts the workers, calls `on_ready` with the bound address, serves
/// until `shutdown` resolves, then stops accepting, finishes in-flight requests and the work in
/// hand, and closes the store.
pub(crate) async fn serve(
    engine: Engine,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let listen = engine.config().server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = {
        let engine = engine.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        })
    };
    let upkeep = {
        let engine = engine.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let worker = engine.config().worker.clone();
            if worker.upkeep_interval_secs == 0 {
                return;
            }
            let interval = std::time::Duration::from_secs(worker.upkeep_interval_secs);
            let overlap = chrono::Duration::seconds(300);
            let mut since = chrono::Utc::now()
                - chrono::Duration::seconds(
                    i64::try_from(worker.reconcile_lookback_secs).unwrap_or(i64::MAX / 2),
                );
            loop {
                let started = chrono::Utc::now();
                tokio::select! {
                    _ = engine.upkeep_once(since, started) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
                // The next round looks back past this one's start: the dedup of delivery ids
                // makes the overlap free.
                since = started - overlap;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        })
    };
    tracing::info!(%addr, instances = ?engine.instance_names(), "serving");
    on_ready(addr);
    let mut http_rx = stop_rx.clone();
    let server = axum::serve(listener, engine.router()).with_graceful_shutdown(async move {
        let _ = http_rx.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests and work");
    let _ = stop_tx.send(true);
    let served = server.await.map_err(std::io::Error::other)?;
    let _ = workers.await;
    let _ = upkeep.await;
    engine.store().close().await;
    tracing::info!("stopped");
    served
}
