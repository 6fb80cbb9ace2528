//! The engine store on both backends: SQLite (a temporary file) and PostgreSQL (a fresh
//! schema per test; skipped without `REFSYNC_TEST_POSTGRES_URL`, failing in CI).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use refsync_engine::store::{
    CrmObject, DeliveryFilter, DeliveryStatus, EnqueueOutcome, FailOutcome, InsertOutcome,
    JobFilter, JobState, NewDelivery, NewJob, TimelineEntry, open_store,
};
use refsync_testkit::services::PgSchema;
use serde_json::json;

/// A database for one test: the URL, and what keeps it alive.
enum Fixture {
    /// The directory is removed when dropped.
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Pg(PgSchema),
}

impl Fixture {
    fn url(&self) -> &str {
        match self {
            Fixture::Sqlite { url, .. } => url,
            Fixture::Pg(s) => s.url(),
        }
    }
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("engine.db").display());
    Fixture::Sqlite { _dir: dir, url }
}

async fn postgres(suite: &str) -> Option<Fixture> {
    PgSchema::create("eng", suite).await.map(Fixture::Pg)
}

/// Runs `$case(url)` against SQLite and against PostgreSQL.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let f = super::sqlite();
                super::$name(f.url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(f) = super::postgres(concat!("store::", stringify!($name))).await else {
                    return;
                };
                super::$name(f.url()).await;
            }
        }
    };
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap()
}

fn delivery(instance: &str, key: &str, body: &str, at: DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        instance: instance.into(),
        dedup_key: key.into(),
        body: body.as_bytes().to_vec(),
        headers: json!({"content-type": "application/json"}),
        received_at: at,
    }
}

fn job(kind: &str, key: &str, at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: kind.into(),
        idempotency_key: key.into(),
        payload: json!({"key": key}),
        run_at: at,
    }
}

const LEASE: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(86_400);

both!(deliveries_are_deduplicated);
async fn deliveries_are_deduplicated(url: &str) {
    let store = open_store(url).await.unwrap();
    let first = store
        .insert_delivery(&delivery("pd", "evt-1", "{\"a\":1}", t(0)))
        .await
        .unwrap();
    let InsertOutcome::Inserted(id) = first else {
        panic!("{first:?}")
    };
    // A redelivery (even with another body) is a duplicate of the first.
    let again = store
        .insert_delivery(&delivery("pd", "evt-1", "{\"a\":2}", t(5)))
        .await
        .unwrap();
    assert_eq!(again, InsertOutcome::Duplicate(id));
    // The same key at another instance is another delivery.
    let other = store
        .insert_delivery(&delivery("hubspot", "evt-1", "{}", t(6)))
        .await
        .unwrap();
    assert!(matches!(other, InsertOutcome::Inserted(o) if o != id));

    let d = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(d.body, b"{\"a\":1}");
    assert_eq!(d.headers, json!({"content-type": "application/json"}));
    assert_eq!(d.received_at, t(0));
    assert_eq!(d.status, DeliveryStatus::Received);
    assert_eq!(d.attempts, 0);
    assert_eq!(store.delivery_stats().await.unwrap().received, 2);
    assert!(store.get_delivery(id + 1000).await.unwrap().is_none());
    store.close().await;
}

both!(concurrent_enqueue_creates_one_job_per_key);
async fn concurrent_enqueue_creates_one_job_per_key(url: &str) {
    let a = open_store(url).await.unwrap();
    let b = open_store(url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for k in 0..5 {
                outcomes.push(
                    store
                        .enqueue(&job("qualify", &format!("qualify:c1:r{k}:rule"), t(i)))
                        .await
                        .unwrap(),
                );
            }
            outcomes
        }));
    }
    let mut created: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, BTreeSet<i64>> = HashMap::new();
    for task in tasks {
        for outcome in task.await.unwrap() {
            let j = outcome.job();
            *created.entry(j.idempotency_key.clone()).or_default() +=
                usize::from(outcome.is_created());
            ids.entry(j.idempotency_key.clone())
                .or_default()
                .insert(j.id);
        }
    }
    assert_eq!(created.len(), 5);
    assert!(created.values().all(|&n| n == 1), "{created:?}");
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");
    assert_eq!(a.list_jobs(&JobFilter::default()).await.unwrap().len(), 5);

    // Completed jobs keep their key forever: enqueueing again returns the done job.
    let j = a.claim("w", &[], t(100), 1, LEASE).await.unwrap().remove(0);
    assert!(a.complete(j.id, "w", t(101)).await.unwrap());
    let again = b
        .enqueue(&job("qualify", &j.idempotency_key, t(200)))
        .await
        .unwrap();
    let EnqueueOutcome::Existing(existing) = again else {
        panic!("{again:?}")
    };
    assert_eq!((existing.id, existing.state), (j.id, JobState::Done));
    a.close().await;
    b.close().await;
}

both!(concurrent_claimers_process_each_job_once);
async fn concurrent_claimers_process_each_job_once(url: &str) {
    // Two independent pools on one database, as two processes would have.
    let a = open_store(url).await.unwrap();
    let b = open_store(url).await.unwrap();
    const JOBS: i64 = 200;
    for i in 0..JOBS {
        a.enqueue(&job("qualify", &format!("k{i}"), t(i % 7)))
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            loop {
                let jobs = store
                    .claim(&worker, &["qualify"], t(10), 3, LEASE)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                for j in jobs {
                    assert_eq!(j.state, JobState::Leased);
                    assert_eq!(j.lease_owner.as_deref(), Some(worker.as_str()));
                    seen.lock().unwrap().push(j.id);
                    tokio::task::yield_now().await;
                    assert!(store.complete(j.id, &worker, t(11)).await.unwrap());
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "a job was claimed twice");
    assert_eq!(unique.len() as i64, JOBS);
    let stats = a.job_stats(t(20)).await.unwrap();
    assert_eq!((stats.done, stats.pending, stats.leased), (JOBS, 0, 0));
    assert_eq!(stats.oldest_pending_age, None);
    a.close().await;
    b.close().await;
}

both!(claim_filters_kinds_and_due_time);
async fn claim_filters_kinds_and_due_time(url: &str) {
    let store = open_store(url).await.unwrap();
    store.enqueue(&job("push", "p1", t(0))).await.unwrap();
    store.enqueue(&job("qualify", "q1", t(0))).await.unwrap();
    store.enqueue(&job("qualify", "q2", t(20))).await.unwrap();
    let got = store.claim("w", &["push"], t(1), 10, LEASE).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key, "p1");
    assert_eq!(got[0].payload, json!({"key": "p1"}));
    let got = store
        .claim("w", &["qualify", "push"], t(1), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(
        got.iter()
            .map(|j| j.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        ["q1"]
    );
    assert!(
        store
            .claim("w", &[], t(19), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let got = store.claim("w", &[], t(20), 10, LEASE).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key, "q2");
    assert!(
        store
            .claim("w", &[], t(20), 0, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

both!(expired_lease_makes_a_crashed_workers_job_claimable);
async fn expired_lease_makes_a_crashed_workers_job_claimable(url: &str) {
    let store = open_store(url).await.unwrap();
    let id = store
        .enqueue(&job("qualify", "k", t(0)))
        .await
        .unwrap()
        .job()
        .id;
    let first = store.claim("crashed", &[], t(0), 1, LEASE).await.unwrap();
    assert_eq!(first[0].lease_until, Some(t(30)));
    // While the lease runs nobody else gets it.
    assert!(
        store
            .claim("w2", &[], t(29), 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // The worker "crashes"; its lease ends; another worker takes over.
    let second = store.claim("w2", &[], t(31), 1, LEASE).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].id, second[0].attempts), (id, 2));
    // The crashed worker, back from the dead, no longer holds the job.
    assert!(!store.complete(id, "crashed", t(32)).await.unwrap());
    assert!(
        !store
            .extend_lease(id, "crashed", t(32), LEASE)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .fail_job(id, "crashed", "late", Some(t(40)), DAY, t(32))
            .await
            .unwrap(),
        FailOutcome::LeaseLost
    );
    assert!(store.extend_lease(id, "w2", t(50), LEASE).await.unwrap());
    assert!(
        store
            .claim("w3", &[], t(70), 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.complete(id, "w2", t(70)).await.unwrap());
    let done = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.completed_at, Some(t(70)));
    assert!(
        store
            .claim("w3", &[], t(1000), 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

both!(failed_jobs_retry_then_die_after_max_age_and_replay);
async fn failed_jobs_retry_then_die_after_max_age_and_replay(url: &str) {
    let store = open_store(url).await.unwrap();
    let max_age = Duration::from_secs(3600);
    let id = store
        .enqueue(&job("qualify", "k", t(0)))
        .await
        .unwrap()
        .job()
        .id;
    store.claim("w", &[], t(0), 1, LEASE).await.unwrap();
    assert_eq!(
        store
            .fail_job(id, "w", "503 from upstream", Some(t(60)), max_age, t(1))
            .await
            .unwrap(),
        FailOutcome::Retrying(t(60))
    );
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Pending);
    assert_eq!(j.last_error.as_deref(), Some("503 from upstream"));
    let stats = store.job_stats(t(100)).await.unwrap();
    assert_eq!(stats.pending, 1);
    assert_eq!(stats.oldest_pending_age, Some(Duration::from_secs(100)));
    // Not due before the retry time.
    assert!(
        store
            .claim("w", &[], t(59), 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim("w", &[], t(60), 1, LEASE).await.unwrap().len(),
        1
    );
    // A retry beyond the maximum age makes a dead letter.
    assert_eq!(
        store
            .fail_job(id, "w", "still 503", Some(t(3601)), max_age, t(61))
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    let dead = store
        .list_jobs(&JobFilter {
            state: Some(JobState::Dead),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("still 503"));
    assert_eq!(dead[0].attempts, 2);
    assert!(
        store
            .claim("w", &[], t(10_000), 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // Replay: due now, and its maximum age counts again from the replay.
    assert!(store.requeue_job(id, t(10_000)).await.unwrap());
    assert!(
        !store.requeue_job(id, t(10_000)).await.unwrap(),
        "only dead jobs replay"
    );
    store.claim("w", &[], t(10_000), 1, LEASE).await.unwrap();
    assert_eq!(
        store
            .fail_job(id, "w", "once more", Some(t(10_060)), max_age, t(10_001))
            .await
            .unwrap(),
        FailOutcome::Retrying(t(10_060))
    );
    store.claim("w", &[], t(10_060), 1, LEASE).await.unwrap();
    // A permanent failure (no retry) is dead at once; replay by filter.
    assert_eq!(
        store
            .fail_job(id, "w", "422", None, max_age, t(10_061))
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    let other = store
        .enqueue(&job("push", "p", t(0)))
        .await
        .unwrap()
        .job()
        .id;
    store.claim("w", &["push"], t(1), 1, LEASE).await.unwrap();
    store
        .fail_job(other, "w", "400", None, max_age, t(2))
        .await
        .unwrap();
    let replayed = store
        .requeue_dead_jobs(
            &JobFilter {
                kind: Some("qualify".into()),
                ..JobFilter::default()
            },
            t(20_000),
        )
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    let stats = store.job_stats(t(20_000)).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 1));
    store.close().await;
}

both!(dead_letter_deliveries_and_replay);
async fn dead_letter_deliveries_and_replay(url: &str) {
    let store = open_store(url).await.unwrap();
    let mut ids = Vec::new();
    for (i, instance) in ["pd", "pd", "woo", "woo"].iter().enumerate() {
        let i = i as i64;
        ids.push(
            store
                .insert_delivery(&delivery(instance, &format!("e{i}"), "{}", t(i)))
                .await
                .unwrap()
                .id(),
        );
    }
    let claimed = store.claim_deliveries("w", t(10), 10, LEASE).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    // Leased: another worker gets nothing until the lease ends.
    assert!(
        store
            .claim_deliveries("w2", t(20), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.mark_delivery_processed(ids[0], t(11)).await.unwrap());
    assert!(
        store
            .mark_delivery_dead(ids[1], "unparseable: expected JSON", t(11))
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_delivery_dead(ids[2], "unknown event", t(11))
            .await
            .unwrap()
    );
    assert!(
        store
            .retry_delivery(ids[3], "ledger down", t(100), t(11))
            .await
            .unwrap()
    );
    assert!(!store.mark_delivery_processed(ids[1], t(12)).await.unwrap());

    let dead = store
        .list_deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("unparseable: expected JSON")
    );
    let pd_dead = store
        .list_deliveries(&DeliveryFilter {
            instance: Some("pd".into()),
            status: Some(DeliveryStatus::Dead),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pd_dead.len(), 1);
    let page = store
        .list_deliveries(&DeliveryFilter {
            after_id: Some(ids[0]),
            limit: Some(2),
            received_before: Some(t(3)),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    let stats = store.delivery_stats().await.unwrap();
    assert_eq!((stats.received, stats.processed, stats.dead), (1, 1, 2));

    // The retried one comes back when due.
    assert!(
        store
            .claim_deliveries("w", t(99), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries("w", t(100), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (ids[3], 2));
    assert_eq!(again[0].last_error.as_deref(), Some("ledger down"));
    store.mark_delivery_processed(ids[3], t(101)).await.unwrap();

    // Replay one by id, then the rest by filter.
    assert!(store.requeue_delivery(ids[1], t(200)).await.unwrap());
    assert!(!store.requeue_delivery(ids[3] + 100, t(200)).await.unwrap());
    let replayed = store
        .claim_deliveries("w", t(200), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(replayed.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[1]]);
    assert!(store.mark_delivery_processed(ids[1], t(201)).await.unwrap());
    let n = store
        .requeue_deliveries(
            &DeliveryFilter {
                instance: Some("woo".into()),
                status: Some(DeliveryStatus::Dead),
                ..DeliveryFilter::default()
            },
            t(300),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let replayed = store
        .claim_deliveries("w", t(300), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(replayed.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);
    assert_eq!(replayed[0].status, DeliveryStatus::Received);
    store.close().await;
}

both!(links_both_ways);
async fn links_both_ways(url: &str) {
    let store = open_store(url).await.unwrap();
    let person = CrmObject {
        instance: "pd".into(),
        kind: "person".into(),
        id: "17".into(),
    };
    let deal = CrmObject {
        instance: "pd".into(),
        kind: "deal".into(),
        id: "17".into(),
    };
    let other_instance = CrmObject {
        instance: "pd-eu".into(),
        ..person.clone()
    };
    store.put_link("REF-A", &person, t(0)).await.unwrap();
    store.put_link("REF-A", &deal, t(1)).await.unwrap();
    store
        .put_link("REF-B", &other_instance, t(2))
        .await
        .unwrap();
    // Linking again is idempotent.
    store.put_link("REF-A", &person, t(3)).await.unwrap();

    let link = store.link_by_object(&person).await.unwrap().unwrap();
    assert_eq!(
        (link.referral_key.as_str(), link.created_at),
        ("REF-A", t(0))
    );
    assert_eq!(
        store
            .link_by_object(&other_instance)
            .await
            .unwrap()
            .unwrap()
            .referral_key,
        "REF-B"
    );
    let objects: Vec<CrmObject> = store
        .links_by_referral("REF-A")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect();
    assert_eq!(objects, [person.clone(), deal.clone()]);
    assert!(
        store
            .link_by_object(&CrmObject {
                id: "18".into(),
                ..person.clone()
            })
            .await
            .unwrap()
            .is_none()
    );
    // Re-linking an object moves it.
    store.put_link("REF-C", &deal, t(4)).await.unwrap();
    assert_eq!(store.links_by_referral("REF-A").await.unwrap().len(), 1);
    assert_eq!(
        store.links_by_referral("REF-C").await.unwrap()[0].object,
        deal
    );
    store.close().await;
}

both!(timeline_is_in_time_order);
async fn timeline_is_in_time_order(url: &str) {
    let store = open_store(url).await.unwrap();
    let entry = |at, kind: &str| TimelineEntry {
        at,
        kind: kind.into(),
        message: format!("{kind} happened"),
        detail: json!({"kind": kind}),
    };
    for e in [
        entry(t(10), "pushed"),
        entry(t(0), "joined"),
        entry(t(10), "lead_converted"),
        entry(t(20), "qualified"),
    ] {
        store.append_timeline("REF-A", &e).await.unwrap();
    }
    store
        .append_timeline("REF-B", &entry(t(5), "joined"))
        .await
        .unwrap();
    let timeline = store.timeline("REF-A").await.unwrap();
    assert_eq!(
        timeline.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["joined", "pushed", "lead_converted", "qualified"]
    );
    assert_eq!(timeline[3].detail, json!({"kind": "qualified"}));
    assert_eq!(timeline[3].at, t(20));
    assert!(store.timeline("REF-none").await.unwrap().is_empty());
    store.close().await;
}

both!(oauth_tokens);
async fn oauth_tokens(url: &str) {
    let store = open_store(url).await.unwrap();
    assert_eq!(store.get_token("hubspot").await.unwrap(), None);
    store
        .put_token("hubspot", r#"{"access":"a"}"#, t(0))
        .await
        .unwrap();
    store
        .put_token("hubspot", r#"{"access":"b"}"#, t(1))
        .await
        .unwrap();
    assert_eq!(
        store.get_token("hubspot").await.unwrap().as_deref(),
        Some(r#"{"access":"b"}"#)
    );
    assert!(store.delete_token("hubspot").await.unwrap());
    assert!(!store.delete_token("hubspot").await.unwrap());
    store.close().await;
}

both!(reopening_keeps_everything);
async fn reopening_keeps_everything(url: &str) {
    let store = open_store(url).await.unwrap();
    let d = store
        .insert_delivery(&delivery("pd", "e1", "body", t(0)))
        .await
        .unwrap()
        .id();
    let leased = store
        .enqueue(&job("qualify", "k1", t(0)))
        .await
        .unwrap()
        .job()
        .id;
    store.enqueue(&job("qualify", "k2", t(0))).await.unwrap();
    store
        .claim("crashed", &["qualify"], t(0), 1, LEASE)
        .await
        .unwrap();
    store
        .put_link(
            "REF",
            &CrmObject {
                instance: "pd".into(),
                kind: "deal".into(),
                id: "1".into(),
            },
            t(0),
        )
        .await
        .unwrap();
    store
        .append_timeline(
            "REF",
            &TimelineEntry {
                at: t(0),
                kind: "joined".into(),
                message: "m".into(),
                detail: json!(null),
            },
        )
        .await
        .unwrap();
    store.put_token("tok", "v", t(0)).await.unwrap();
    // The process ends (here: the pool closes and the value is dropped).
    store.close().await;
    drop(store);

    let store = open_store(url).await.unwrap();
    assert_eq!(
        store
            .insert_delivery(&delivery("pd", "e1", "body", t(5)))
            .await
            .unwrap(),
        InsertOutcome::Duplicate(d)
    );
    assert_eq!(store.get_delivery(d).await.unwrap().unwrap().body, b"body");
    assert!(
        !store
            .enqueue(&job("qualify", "k1", t(5)))
            .await
            .unwrap()
            .is_created()
    );
    // The unleased job is claimable at once; the crashed worker's one after its lease.
    let now = store.claim("w", &[], t(1), 10, LEASE).await.unwrap();
    assert_eq!(
        now.iter()
            .map(|j| j.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        ["k2"]
    );
    let later = store.claim("w", &[], t(30), 10, LEASE).await.unwrap();
    assert_eq!(later.iter().map(|j| j.id).collect::<Vec<_>>(), [leased]);
    assert_eq!(store.links_by_referral("REF").await.unwrap().len(), 1);
    assert_eq!(store.timeline("REF").await.unwrap().len(), 1);
    assert_eq!(store.get_token("tok").await.unwrap().as_deref(), Some("v"));
    store.close().await;
}

#[tokio::test]
async fn sqlite_file_is_created_on_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = open_store(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    assert_eq!(store.backend(), refsync_engine::store::Backend::Sqlite);
    store.close().await;
}

#[tokio::test]
async fn unsupported_url_is_a_config_error() {
    let err = open_store("mysql://localhost/x").await.unwrap_err();
    assert_eq!(err.kind(), &refsync_core::ErrorKind::Config);
}

mod interleavings {
    //! Random interleavings of enqueue / claim / complete / fail / time passing, checked
    //! against a model of the queue, on one store per backend (each case has its own job
    //! kind and keys).

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;
    use refsync_engine::store::{FailOutcome, Store, open_store};

    use super::{LEASE, job, t};

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(u8),
        Claim(u8, i64),
        Complete(u8, u8),
        Fail(u8, u8),
        Advance(i64),
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Model {
        Pending(i64),
        Leased(u8, i64),
        Done,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Enqueue),
            (0u8..3, 1i64..3).prop_map(|(w, n)| Op::Claim(w, n)),
            (0u8..3, 0u8..4).prop_map(|(w, k)| Op::Complete(w, k)),
            (0u8..3, 0u8..4).prop_map(|(w, k)| Op::Fail(w, k)),
            (0i64..40).prop_map(Op::Advance),
        ]
    }

    async fn run(store: &Arc<dyn Store>, case: u64, ops: &[Op]) {
        let kind = format!("kind{case}");
        let key = |k: u8| format!("case{case}:{k}");
        let lease = LEASE.as_secs() as i64;
        let mut model: BTreeMap<u8, (i64, Model)> = BTreeMap::new();
        let mut now = 0i64;
        for op in ops {
            match *op {
                Op::Enqueue(k) => {
                    let out = store.enqueue(&job(&kind, &key(k), t(now))).await.unwrap();
                    assert_eq!(out.is_created(), !model.contains_key(&k), "{op:?}");
                    model
                        .entry(k)
                        .or_insert((out.job().id, Model::Pending(now)));
                    assert_eq!(model[&k].0, out.job().id);
                }
                Op::Claim(w, limit) => {
                    let claimable: Vec<u8> = model
                        .iter()
                        .filter(|(_, (_, m))| match *m {
                            Model::Pending(at) => at <= now,
                            Model::Leased(_, until) => until <= now,
                            Model::Done => false,
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    let got = store
                        .claim(&format!("w{w}"), &[kind.as_str()], t(now), limit, LEASE)
                        .await
                        .unwrap();
                    assert_eq!(got.len(), claimable.len().min(limit as usize), "{op:?}");
                    for j in got {
                        let (k, _) = model
                            .iter()
                            .find(|(_, (id, _))| *id == j.id)
                            .map(|(k, v)| (*k, *v))
                            .expect("a job of this case");
                        assert!(claimable.contains(&k), "claimed a job not claimable: {k}");
                        model.get_mut(&k).unwrap().1 = Model::Leased(w, now + lease);
                    }
                }
                Op::Complete(w, k) => {
                    let Some(&(id, m)) = model.get(&k) else {
                        continue;
                    };
                    let holds = matches!(m, Model::Leased(owner, _) if owner == w);
                    let ok = store.complete(id, &format!("w{w}"), t(now)).await.unwrap();
                    assert_eq!(ok, holds, "{op:?} on {m:?}");
                    if ok {
                        model.get_mut(&k).unwrap().1 = Model::Done;
                    }
                }
                Op::Fail(w, k) => {
                    let Some(&(id, m)) = model.get(&k) else {
                        continue;
                    };
                    let holds = matches!(m, Model::Leased(owner, _) if owner == w);
                    let out = store
                        .fail_job(
                            id,
                            &format!("w{w}"),
                            "boom",
                            Some(t(now + 5)),
                            super::DAY,
                            t(now),
                        )
                        .await
                        .unwrap();
                    if holds {
                        assert_eq!(out, FailOutcome::Retrying(t(now + 5)));
                        model.get_mut(&k).unwrap().1 = Model::Pending(now + 5);
                    } else {
                        assert_eq!(out, FailOutcome::LeaseLost);
                    }
                }
                Op::Advance(s) => now += s,
            }
        }
    }

    fn check(store: &Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        proptest!(ProptestConfig::with_cases(48), |(ops in proptest::collection::vec(op(), 1..40))| {
            let case = CASE.fetch_add(1, Ordering::Relaxed);
            rt.block_on(run(store, case, &ops));
        });
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn sqlite() {
        let rt = runtime();
        let f = super::sqlite();
        let store = rt.block_on(open_store(f.url())).unwrap();
        check(&store, &rt);
    }

    #[test]
    fn postgres() {
        let rt = runtime();
        let Some(f) = rt.block_on(super::postgres("store::interleavings")) else {
            return;
        };
        let store = rt.block_on(open_store(f.url())).unwrap();
        check(&store, &rt);
    }
}
