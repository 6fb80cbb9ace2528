//! The sender: runs jobs (qualify / unqualify on the platform, pushes through connectors),
//! with retries and dead letters; and [`Engine::run`], the worker loops.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use refsync_core::{CrmObjectRef, Error, QualifyCall, QualifyOutcome, ReferredUser, Result};
use serde_json::json;
use tracing::Instrument;

use crate::engine::{Engine, retryable};
use crate::store::{CrmObject, FailOutcome, Job, NewJob, TimelineEntry};
use crate::worker::outcome_of;

/// The payload of a push job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PushRequest {
    /// The connector instance to push into.
    pub instance: String,
    /// The referred user.
    pub user: ReferredUser,
}

impl Engine {
    /// Enqueues a push of `user` into `instance` (idempotent per instance, campaign and
    /// referral code); returns the job id and whether it was new.
    ///
    /// # Errors
    /// [`refsync_core::ErrorKind::NotFound`] for an unknown instance,
    /// [`refsync_core::ErrorKind::Config`] when it has no push spec; store errors.
    pub async fn enqueue_push(
        &self,
        request: PushRequest,
        now: DateTime<Utc>,
    ) -> Result<(i64, bool)> {
        let inst = self.instance(&request.instance).ok_or_else(|| {
            Error::new(
                refsync_core::ErrorKind::NotFound,
                format!("no connector instance named {:?}", request.instance),
            )
        })?;
        if inst.push.is_none() {
            return Err(Error::config(format!(
                "instance {:?} has no [push] spec",
                inst.name
            )));
        }
        if request.user.referral_code.trim().is_empty() {
            return Err(Error::validation("user.referral_code must not be empty"));
        }
        let key = format!(
            "push:{}:{}:{}",
            request.instance, request.user.campaign.id, request.user.referral_code
        );
        let referral = format!("code:{}", request.user.referral_code);
        let outcome = self
            .inner
            .store
            .enqueue(&NewJob {
                kind: "push".into(),
                idempotency_key: key,
                payload: serde_json::to_value(&request)
                    .map_err(|e| Error::unexpected(e.to_string()))?,
                run_at: now,
            })
            .await?;
        if outcome.is_created() {
            self.timeline_note(
                &referral,
                now,
                "push_queued",
                format!(
                    "push into {} queued (job {})",
                    request.instance,
                    outcome.job().id
                ),
                json!({"job": outcome.job().id}),
            )
            .await?;
        }
        Ok((outcome.job().id, outcome.is_created()))
    }

    async fn timeline_note(
        &self,
        key: &str,
        at: DateTime<Utc>,
        kind: &str,
        message: String,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.inner
            .store
            .append_timeline(
                key,
                &TimelineEntry {
                    at,
                    kind: kind.into(),
                    message,
                    detail,
                },
            )
            .await
    }

    /// Claims due jobs and runs each one; returns how many were claimed.
    ///
    /// # Errors
    /// Store errors.
    pub async fn send_jobs_once(&self, now: DateTime<Utc>) -> Result<usize> {
        let w = &self.inner.config.worker;
        let limit = i64::try_from(w.concurrency.max(1)).unwrap_or(4);
        // With a batching connector, pushes up to `push_batch` in all: those of one instance go
        // to the connector together (one call per 100 for HubSpot). Without one, as many as any
        // other job: they would be pushed one after the other within one lease.
        let push_limit = if self.pushes_in_batches() {
            i64::try_from(w.push_batch.max(1)).unwrap_or(100)
        } else {
            limit
        };
        let store = &self.inner.store;
        // Up to `concurrency` jobs of any kind, then pushes up to `push_limit` in all.
        let mut jobs = store
            .claim(&self.inner.worker_id, &[], now, limit, w.job_lease())
            .await?;
        let pushes = i64::try_from(jobs.iter().filter(|j| j.kind == "push").count()).unwrap_or(0);
        if push_limit > pushes {
            jobs.extend(
                store
                    .claim(
                        &self.inner.worker_id,
                        &["push"],
                        now,
                        push_limit - pushes,
                        w.job_lease(),
                    )
                    .await?,
            );
        }
        let n = jobs.len();
        let (pushes, others): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.kind == "push");
        if !pushes.is_empty() {
            self.send_push_jobs(pushes, now).await?;
        }
        for job in others {
            let span = tracing::info_span!("job", job_id = job.id, kind = %job.kind, attempt = job.attempts);
            self.send_job(job, now).instrument(span).await?;
        }
        Ok(n)
    }

    async fn send_job(&self, job: Job, now: DateTime<Utc>) -> Result<()> {
        let (referral, result) = self.run_job(&job).await;
        self.settle_job(&job, referral, result, now).await
    }

    /// Completes or fails `job` per `result`, and notes it in the referral's timeline.
    async fn settle_job(
        &self,
        job: &Job,
        referral: Option<String>,
        result: Result<(&'static str, String, serde_json::Value)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let worker = &self.inner.worker_id;
        match result {
            Ok((kind, message, detail)) => {
                if store.complete(job.id, worker, now).await? {
                    tracing::info!(%message, "job done");
                    if let Some(r) = &referral {
                        self.timeline_note(r, now, kind, message, detail).await?;
                    }
                } else {
                    tracing::warn!("job lease lost before completion");
                }
            }
            Err(e) => {
                let reason = format!("{}: {}", e.kind().as_str(), e.message());
                let retry_at = retryable(&e)
                    .then(|| Engine::after(now, self.delay(job.attempts, e.retry_after())));
                let outcome = store
                    .fail_job(
                        job.id,
                        worker,
                        &reason,
                        retry_at,
                        self.inner.config.worker.max_age(),
                        now,
                    )
                    .await?;
                tracing::warn!(%reason, ?outcome, "job failed");
                if let (Some(r), FailOutcome::Dead) = (&referral, outcome) {
                    self.timeline_note(
                        r,
                        now,
                        "dead",
                        format!("{} job {} is a dead letter: {reason}", job.kind, job.id),
                        json!({"job": job.id}),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Runs a job; returns the referral key (for the timeline) and the outcome.
    async fn run_job(
        &self,
        job: &Job,
    ) -> (
        Option<String>,
        Result<(&'static str, String, serde_json::Value)>,
    ) {
        let m = &self.inner.metrics;
        match job.kind.as_str() {
            "qualify" | "unqualify" => {
                let call: QualifyCall = match serde_json::from_value(job.payload["call"].clone()) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(Error::validation(format!("bad payload: {e}")))),
                };
                let key = call.referral.canonical();
                let platform = &self.inner.platform;
                let started = std::time::Instant::now();
                let r = if job.kind == "qualify" {
                    platform.qualify(&call).await
                } else {
                    platform.unqualify(&call).await
                };
                m.observe("platform", platform.name(), started.elapsed().as_secs_f64());
                m.upstream(
                    "platform",
                    platform.name(),
                    r.as_ref().map_or_else(outcome_of, |_| "ok"),
                );
                let r = r.map(|o| {
                    let msg = match &o {
                        QualifyOutcome::Qualified { .. } => {
                            format!("qualified on {} (rule {})", platform.name(), call.rule)
                        }
                        QualifyOutcome::AlreadyQualified { .. } => {
                            format!("already qualified on {}", platform.name())
                        }
                        QualifyOutcome::Unqualified => {
                            format!("unqualified on {} (rule {})", platform.name(), call.rule)
                        }
                        other => format!("{other:?}"),
                    };
                    let kind = if job.kind == "qualify" {
                        "qualified"
                    } else {
                        "unqualified"
                    };
                    (kind, msg, json!({"job": job.id, "rule": call.rule}))
                });
                (Some(key), r)
            }
            other => (
                None,
                Err(Error::validation(format!("unknown job kind {other:?}"))),
            ),
        }
    }

    /// Runs claimed push jobs: those of one instance go to the connector in one
    /// [`refsync_core::Connector::push_referrals`] call (batching connectors coalesce them), and
    /// each job then completes or fails on its own result.
    async fn send_push_jobs(&self, jobs: Vec<Job>, now: DateTime<Utc>) -> Result<()> {
        let mut groups: Vec<(String, Vec<(Job, PushRequest)>)> = Vec::new();
        for job in jobs {
            match serde_json::from_value::<PushRequest>(job.payload.clone()) {
                Ok(req) => match groups.iter_mut().find(|(i, _)| *i == req.instance) {
                    Some((_, items)) => items.push((job, req)),
                    None => groups.push((req.instance.clone(), vec![(job, req)])),
                },
                Err(e) => {
                    let err = Error::validation(format!("bad payload: {e}"));
                    self.settle_job(&job, None, Err(err), now).await?;
                }
            }
        }
        for (instance, items) in groups {
            let span = tracing::info_span!("push_batch", %instance, jobs = items.len());
            self.send_push_group(&instance, items, now)
                .instrument(span)
                .await?;
        }
        Ok(())
    }

    async fn send_push_group(
        &self,
        instance: &str,
        items: Vec<(Job, PushRequest)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let key = |req: &PushRequest| format!("code:{}", req.user.referral_code);
        let inst = self.instance(instance);
        let Some((inst, spec)) = inst.as_ref().and_then(|i| Some((i, i.push.as_ref()?))) else {
            let problem = match inst {
                None => format!("no instance {instance:?}"),
                Some(_) => format!("instance {instance:?} has no push spec"),
            };
            for (job, req) in &items {
                let err = Error::config(problem.clone());
                self.settle_job(job, Some(key(req)), Err(err), now).await?;
            }
            return Ok(());
        };
        let users: Vec<ReferredUser> = items.iter().map(|(_, r)| r.user.clone()).collect();
        let m = &self.inner.metrics;
        let name = inst.connector.info().name;
        let started = std::time::Instant::now();
        let mut results = inst
            .connector
            .push_referrals(&users, spec)
            .await
            .into_iter();
        m.observe("connector", name, started.elapsed().as_secs_f64());
        for (job, req) in &items {
            let key = key(req);
            let r = results.next().unwrap_or_else(|| {
                Err(Error::unexpected(format!(
                    "connector {name} returned fewer push results than pushes"
                )))
            });
            m.upstream(
                "connector",
                name,
                r.as_ref().map_or_else(outcome_of, |_| "ok"),
            );
            let result = match r {
                Ok(outcome) => self.record_push(&inst.name, &key, job, outcome, now).await,
                Err(e) => Err(e),
            };
            let span = tracing::info_span!("job", job_id = job.id, kind = %job.kind, attempt = job.attempts);
            self.settle_job(job, Some(key), result, now)
                .instrument(span)
                .await?;
        }
        Ok(())
    }

    /// Links the pushed objects to the referral; the timeline entry of a done push.
    async fn record_push(
        &self,
        instance: &str,
        key: &str,
        job: &Job,
        outcome: refsync_core::PushOutcome,
        now: DateTime<Utc>,
    ) -> Result<(&'static str, String, serde_json::Value)> {
        for CrmObjectRef { kind, id } in &outcome.links {
            let object = CrmObject {
                instance: instance.to_owned(),
                kind: kind.as_string(),
                id: id.clone(),
            };
            self.inner.store.put_link(key, &object, now).await?;
        }
        let msg = format!(
            "pushed into {instance} ({:?}): {}",
            outcome.action,
            outcome
                .links
                .iter()
                .map(|l| format!("{} {}", l.kind, l.id))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(("pushed", msg, json!({"job": job.id, "outcome": outcome})))
    }

    /// Runs the delivery worker and `worker.concurrency` senders on the current runtime until
    /// `shutdown` completes; then stops claiming, lets the work in hand finish and returns
    /// (what was not claimed stays persisted).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let poll = Duration::from_millis(250);
        {
            let engine = self.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                while !*rx.borrow() {
                    let n = match engine.process_deliveries_once(Utc::now()).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::error!(error = %e, "delivery worker");
                            0
                        }
                    };
                    if n == 0 {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = rx.changed() => {}
                        }
                    }
                }
            });
        }
        for _ in 0..self.inner.config.worker.concurrency.max(1) {
            let engine = self.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                while !*rx.borrow() {
                    let n = match engine.send_jobs_once(Utc::now()).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::error!(error = %e, "sender");
                            0
                        }
                    };
                    if n == 0 {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = rx.changed() => {}
                        }
                    }
                }
            });
        }
        shutdown.await;
        tracing::info!("shutting down: finishing work in hand");
        let _ = tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
}
