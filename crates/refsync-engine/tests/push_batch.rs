//! Push jobs claimed together reach the connector in one `push_referrals` call (batching
//! connectors coalesce them), and each job then completes or fails on its own result.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use refsync_core::{
    CampaignRef, Capabilities, Connector, ConnectorInfo, CrmEvent, CrmObjectRef, Error,
    FieldMapping, ObjectKind, PushAction, PushOutcome, PushSpec, ReferredUser, Result,
    Verification, WebhookRequest,
};
use refsync_engine::config::EngineConfig;
use refsync_engine::store::{JobFilter, JobState, open_store};
use refsync_engine::{Engine, Instance, PushRequest};
use refsync_ledger::Ledger;

/// Records the size of every `push_referrals` call; refuses emails without `@`.
#[derive(Debug, Default)]
struct Batching {
    /// Whether it declares the `batching` capability.
    batching: bool,
    calls: Mutex<Vec<usize>>,
}

#[async_trait]
impl Connector for Batching {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "batching",
            display_name: "Batching",
            api_version: "test",
            capabilities: Capabilities {
                push: true,
                batching: self.batching,
                ..Capabilities::NONE
            },
            required_mappings: &[],
        }
    }
    fn verify(&self, _: &WebhookRequest, _: DateTime<Utc>) -> Result<Verification> {
        Err(Error::unauthorized("no webhooks"))
    }
    fn parse(&self, _: &WebhookRequest) -> Result<Vec<CrmEvent>> {
        Ok(Vec::new())
    }
    async fn push_referral(&self, user: &ReferredUser, spec: &PushSpec) -> Result<PushOutcome> {
        Ok(self
            .push_referrals(std::slice::from_ref(user), spec)
            .await
            .remove(0)?)
    }
    async fn push_referrals(
        &self,
        users: &[ReferredUser],
        _: &PushSpec,
    ) -> Vec<Result<PushOutcome>> {
        self.calls.lock().unwrap().push(users.len());
        users
            .iter()
            .map(|u| {
                if u.email.contains('@') {
                    Ok(PushOutcome {
                        action: PushAction::Created,
                        links: vec![CrmObjectRef {
                            kind: ObjectKind::Contact,
                            id: format!("c-{}", u.referral_code),
                        }],
                        warnings: Vec::new(),
                    })
                } else {
                    Err(Error::validation(format!("invalid email {:?}", u.email)))
                }
            })
            .collect()
    }
    async fn health_check(&self) -> Result<()> {
        Ok(())
    }
}

fn user(code: &str, email: &str) -> ReferredUser {
    serde_json::from_value(serde_json::json!({
        "first_name": "Ann", "email": email, "referral_code": code,
        "campaign": CampaignRef { id: "1".into(), name: None },
    }))
    .unwrap()
}

/// An engine with push_batch 5 and concurrency 1, and 7 pushes enqueued (the third with a bad
/// email).
async fn engine_with_pushes(batching: bool) -> (Engine, Arc<Batching>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let store = open_store(&url).await.unwrap();
    let connector = Arc::new(Batching {
        batching,
        ..Batching::default()
    });
    let spec = PushSpec {
        object: ObjectKind::Contact,
        fields: FieldMapping::default(),
        duplicates: Default::default(),
        defaults: Default::default(),
    };
    let instance = Instance::new("crm", connector.clone(), Vec::new(), None, Some(spec));
    let mut config = EngineConfig::default();
    config.worker.push_batch = 5;
    config.worker.concurrency = 1;
    let engine = Engine::with_parts(
        store,
        Arc::new(Ledger::open("sqlite::memory:").await.unwrap()),
        vec![instance],
        config,
    )
    .unwrap();
    let now = Utc::now();
    for i in 0..7 {
        let email = if i == 2 {
            "not-an-email".to_owned()
        } else {
            format!("u{i}@example.com")
        };
        let req = PushRequest {
            instance: "crm".into(),
            user: user(&format!("R{i}"), &email),
        };
        engine.enqueue_push(req, now).await.unwrap();
    }
    (engine, connector, dir)
}

#[tokio::test]
async fn pushes_claimed_together_go_in_one_batch_and_fail_one_by_one() {
    let (engine, connector, _dir) = engine_with_pushes(true).await;
    let now = Utc::now();
    // A round claims up to `concurrency` jobs of any kind, then pushes up to `push_batch` in
    // all; the pushes it holds go to the connector in one call.
    assert_eq!(engine.send_jobs_once(now).await.unwrap(), 5);
    assert_eq!(*connector.calls.lock().unwrap(), [5]);
    assert_eq!(engine.send_jobs_once(now).await.unwrap(), 2);
    assert_eq!(*connector.calls.lock().unwrap(), [5, 2]);
    let jobs = engine
        .store()
        .list_jobs(&JobFilter::default())
        .await
        .unwrap();
    let done = jobs.iter().filter(|j| j.state == JobState::Done).count();
    assert_eq!(done, 6, "{jobs:?}");
    let failed: Vec<_> = jobs.iter().filter(|j| j.state != JobState::Done).collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].payload["user"]["email"] == "not-an-email");
    // The pushed objects are linked to their referrals.
    let links = engine.store().links_by_referral("code:R0").await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].object.id, "c-R0");
}

#[tokio::test]
async fn without_a_batching_connector_pushes_are_claimed_like_other_jobs() {
    let (engine, connector, _dir) = engine_with_pushes(false).await;
    let now = Utc::now();
    // `concurrency` (1) per round, each pushed alone.
    assert_eq!(engine.send_jobs_once(now).await.unwrap(), 1);
    assert_eq!(engine.send_jobs_once(now).await.unwrap(), 1);
    assert_eq!(*connector.calls.lock().unwrap(), [1, 1]);
}
