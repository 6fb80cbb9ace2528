//! Counters and the Prometheus text of `GET /metrics` (written by hand).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use refsync_core::Result;

use crate::engine::Engine;

type Labels = Vec<(&'static str, String)>;

/// The engine's counters (by label set).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    /// Upstream call latency: (sum of seconds, count) by (target, name).
    latency: Mutex<BTreeMap<Labels, (f64, u64)>>,
}

impl Metrics {
    fn inc(&self, name: &'static str, labels: Labels) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name, labels))
            .or_default() += 1;
    }
    pub(crate) fn inc_received(&self, instance: &str) {
        self.inc(
            "refsync_deliveries_received_total",
            vec![("instance", instance.into())],
        );
    }
    pub(crate) fn inc_rejected(&self, instance: &str, reason: &str) {
        self.inc(
            "refsync_deliveries_rejected_total",
            vec![("instance", instance.into()), ("reason", reason.into())],
        );
    }
    pub(crate) fn inc_deduplicated(&self, instance: &str) {
        self.inc(
            "refsync_deliveries_deduplicated_total",
            vec![("instance", instance.into())],
        );
    }
    pub(crate) fn inc_dead(&self, instance: &str) {
        self.inc(
            "refsync_deliveries_dead_lettered_total",
            vec![("instance", instance.into())],
        );
    }
    /// An upstream call: `target` is `platform` or `connector`, `name` its name, `outcome`
    /// `ok`, `error` or `rate_limited`.
    /// Records the latency of an upstream call.
    pub(crate) fn observe(&self, target: &str, name: &str, seconds: f64) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let e = l
            .entry(vec![("target", target.into()), ("name", name.into())])
            .or_default();
        e.0 += seconds;
        e.1 += 1;
    }
    pub(crate) fn upstream(&self, target: &str, name: &str, outcome: &str) {
        let labels = vec![("target", target.into()), ("name", name.into())];
        self.inc("refsync_upstream_calls_total", {
            let mut l = labels.clone();
            l.push(("outcome", outcome.into()));
            l
        });
        if outcome == "rate_limited" {
            self.inc("refsync_upstream_429_total", labels);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Engine {
    /// The Prometheus text exposition of the engine's metrics at `now`.
    ///
    /// # Errors
    /// Store errors (stats).
    pub async fn metrics_text(&self, now: DateTime<Utc>) -> Result<String> {
        let mut out = String::new();
        let counters = self
            .inner
            .metrics
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let helps: [(&str, &str); 6] = [
            (
                "refsync_deliveries_received_total",
                "Webhook deliveries accepted (verified).",
            ),
            (
                "refsync_deliveries_rejected_total",
                "Webhook requests rejected (bad auth, unknown instance, too large).",
            ),
            (
                "refsync_deliveries_deduplicated_total",
                "Webhook deliveries already stored (redeliveries).",
            ),
            (
                "refsync_deliveries_dead_lettered_total",
                "Deliveries made dead letters.",
            ),
            (
                "refsync_upstream_calls_total",
                "Calls to the platform and to connectors by outcome.",
            ),
            (
                "refsync_upstream_429_total",
                "Upstream calls answered with a rate limit (429).",
            ),
        ];
        for (name, help) in helps {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let mut any = false;
            for ((n, labels), v) in &counters {
                if *n == name {
                    any = true;
                    let _ = writeln!(out, "{name}{} {v}", labels_text(labels));
                }
            }
            if !any {
                let _ = writeln!(out, "{name} 0");
            }
        }
        let latency = self
            .inner
            .metrics
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP refsync_upstream_call_seconds Latency of upstream calls.\n# TYPE refsync_upstream_call_seconds summary"
        );
        for (labels, (sum, count)) in &latency {
            let l = labels_text(labels);
            let _ = writeln!(out, "refsync_upstream_call_seconds_sum{l} {sum}");
            let _ = writeln!(out, "refsync_upstream_call_seconds_count{l} {count}");
        }
        let jobs = self.inner.store.job_stats(now).await?;
        let _ = writeln!(
            out,
            "# HELP refsync_jobs Jobs by state.\n# TYPE refsync_jobs gauge"
        );
        for (state, v) in [
            ("pending", jobs.pending),
            ("leased", jobs.leased),
            ("done", jobs.done),
            ("dead", jobs.dead),
        ] {
            let _ = writeln!(out, "refsync_jobs{{state=\"{state}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP refsync_oldest_pending_job_age_seconds Age of the oldest job not done or dead.\n# TYPE refsync_oldest_pending_job_age_seconds gauge\nrefsync_oldest_pending_job_age_seconds {}",
            jobs.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64())
        );
        let d = self.inner.store.delivery_stats().await?;
        let _ = writeln!(
            out,
            "# HELP refsync_deliveries Deliveries by status.\n# TYPE refsync_deliveries gauge"
        );
        for (status, v) in [
            ("received", d.received),
            ("processed", d.processed),
            ("dead", d.dead),
        ] {
            let _ = writeln!(out, "refsync_deliveries{{status=\"{status}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP refsync_queue_depth Work waiting: received deliveries plus pending and leased jobs.\n# TYPE refsync_queue_depth gauge\nrefsync_queue_depth {}",
            d.received + jobs.pending + jobs.leased
        );
        Ok(out)
    }
}
