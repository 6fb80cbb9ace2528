//! End-to-end test support (feature `testing`): an engine served over loopback, as
//! `refsync serve` runs it, with a `settle` that drives its workers until nothing is left.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use refsync_core::{ReferralPlatform, ReferredUser};

use crate::config::EngineConfig;
use crate::store::{JobFilter, JobState, open_store};
use crate::{Engine, Instance, PushRequest};

/// An engine with default settings, its store an SQLite file (`<dir>/engine.db`), serving
/// `instances` and qualifying on `platform`.
///
/// # Panics
/// When the store cannot be opened or the instances are invalid (a test set-up error).
pub async fn sqlite_engine(
    dir: &Path,
    platform: Arc<dyn ReferralPlatform>,
    instances: Vec<Instance>,
) -> Engine {
    let store = open_store(&format!("sqlite://{}", dir.join("engine.db").display()))
        .await
        .expect("open the engine store");
    Engine::with_parts(store, platform, instances, EngineConfig::default()).expect("engine")
}

/// An [`Engine`] whose router listens on `127.0.0.1` (an ephemeral port) until dropped.
#[derive(Debug)]
pub struct LoopbackEngine {
    /// The engine.
    pub engine: Engine,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl LoopbackEngine {
    /// Serves `engine.router()` on a loopback port.
    ///
    /// # Errors
    /// The listener could not be bound.
    pub async fn serve(engine: Engine) -> std::io::Result<LoopbackEngine> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve_on(listener, engine)
    }

    /// Serves `engine.router()` on `listener` — bound beforehand when the instances must know
    /// their own webhook URL (HubSpot signs it).
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn serve_on(
        listener: tokio::net::TcpListener,
        engine: Engine,
    ) -> std::io::Result<LoopbackEngine> {
        let base = format!("http://{}", listener.local_addr()?);
        let router = engine.router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LoopbackEngine {
            engine,
            base,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The webhook endpoint of `instance`: `<base>/hooks/<instance>`.
    pub fn hook_url(&self, instance: &str) -> String {
        format!("{}/hooks/{instance}", self.base)
    }

    /// Enqueues a push of each of `users` into `instance` (as the referral platform's webhook
    /// or `refsync push` would), then settles.
    ///
    /// # Panics
    /// When a push cannot be enqueued (a test set-up error).
    pub async fn push(&self, instance: &str, users: impl IntoIterator<Item = ReferredUser>) {
        for user in users {
            let request = PushRequest {
                instance: instance.to_owned(),
                user,
            };
            self.engine
                .enqueue_push(request, Utc::now())
                .await
                .expect("enqueue a push");
        }
        self.settle().await;
    }

    /// The emails of the push jobs that did not complete (waiting for a retry, or dead).
    ///
    /// # Panics
    /// On a store error.
    pub async fn unfinished_push_emails(&self) -> Vec<String> {
        let filter = JobFilter {
            kind: Some("push".into()),
            ..JobFilter::default()
        };
        self.engine
            .store()
            .list_jobs(&filter)
            .await
            .expect("list jobs")
            .into_iter()
            .filter(|j| j.state != JobState::Done)
            .filter_map(|j| j.payload["user"]["email"].as_str().map(str::to_owned))
            .collect()
    }

    /// Runs the delivery worker and the senders until a round finds nothing to do.
    ///
    /// # Panics
    /// On a store error, or when work is still left after 20 rounds (a loop in the pipeline).
    pub async fn settle(&self) {
        for _ in 0..20 {
            let now = Utc::now();
            let d = self
                .engine
                .process_deliveries_once(now)
                .await
                .expect("delivery worker");
            let j = self.engine.send_jobs_once(now).await.expect("sender");
            if d == 0 && j == 0 {
                return;
            }
        }
        panic!("the engine did not settle in 20 rounds");
    }
}

impl Drop for LoopbackEngine {
    fn drop(&mut self) {
        self.server.abort();
    }
}
