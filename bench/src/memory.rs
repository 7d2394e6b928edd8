//! Memory per session: the same sessions (about 200 bytes of JSON each) created
//! through sessionmesh's API (`POST /api/sessions` on a single node, replication
//! factor 1: one copy) and through the peer's `POST /api/sessions` (actix-session
//! writing them to Redis exactly as an application would).
//!
//! sessionmesh: growth of the node's resident set (`VmRSS`), everything included
//! (map, ids, JSON text, expiry fields, allocator overhead, spare hash capacity).
//! Redis: growth of `used_memory` (what Redis says its data takes) and, for the
//! like-for-like process view, of `used_memory_rss`. Both sides are warmed up with
//! the same number of sessions first, so that buffers and thread stacks allocated
//! by the first requests do not count as sessions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::procs::{self, Peer, Redis, Secrets, SmNode, SmOptions};

#[derive(Clone, Debug)]
pub struct Options {
    pub sessions: usize,
    pub concurrency: usize,
    pub sessionmesh_bin: PathBuf,
    pub peer_bin: PathBuf,
}

/// The data of session `i`: about 200 bytes of compact JSON.
pub fn payload(i: usize) -> String {
    serde_json::json!({
        "user_id": 1_000_000 + i,
        "name": format!("user-{i:07}"),
        "email": format!("user-{i:07}@example.com"),
        "roles": ["reader", "editor"],
        "locale": "en-GB",
        "theme": "dark",
        "cart": [{"sku": format!("SKU-{:05}", i % 99_991), "qty": 1 + i % 3}],
        "csrf": procs::random_hex(16),
    })
    .to_string()
}

#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub before_bytes: u64,
    pub after_bytes: u64,
    pub bytes_per_session: f64,
    pub load_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub sessions: usize,
    pub warmup_sessions: usize,
    pub payload_bytes_avg: f64,
    /// sessionmesh node, `VmRSS`.
    pub sessionmesh_rss: Side,
    /// Sessions the node reports holding after the load (warm-up included).
    pub sessionmesh_sessions_held: u64,
    /// Redis `used_memory`.
    pub redis_used_memory: Side,
    /// Redis `used_memory_rss`.
    pub redis_rss: Side,
    /// Keys in Redis after the load (warm-up included).
    pub redis_keys: u64,
    /// One stored session in Redis: key and value lengths in bytes.
    pub redis_sample_key_bytes: usize,
    pub redis_sample_value_bytes: usize,
}

/// POSTs `payload(i)` for `i` in `range` to `url` with `concurrency` requests in
/// flight; every answer must be 201.
async fn load(
    http: &reqwest::Client,
    url: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(range.start));
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(FirstFailure::default());
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (http, url, next, failures, first) = (
                http.clone(),
                url.to_owned(),
                next.clone(),
                failures.clone(),
                first_failure.clone(),
            );
            let end = range.end;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let result = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(payload(i))
                        .send()
                        .await;
                    let ok = match result {
                        Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                            // Drain the body so the connection is reused.
                            r.bytes().await.is_ok()
                        }
                        Ok(r) => {
                            first.set(format!("{url}: {}", r.status()));
                            false
                        }
                        Err(e) => {
                            first.set(format!("{url}: {e}"));
                            false
                        }
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "{failed} session creations failed, first: {}",
            first_failure.get()
        );
    }
    Ok(started.elapsed())
}

/// The first failure of a load, kept for the error message.
#[derive(Default)]
struct FirstFailure(std::sync::Mutex<Option<String>>);

impl FirstFailure {
    fn set(&self, text: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(text);
        }
    }

    fn get(&self) -> String {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_default()
    }
}

fn side(before: u64, after: u64, n: usize, load: Duration) -> Side {
    Side {
        before_bytes: before,
        after_bytes: after,
        bytes_per_session: (after as f64 - before as f64) / n.max(1) as f64,
        load_seconds: load.as_secs_f64(),
    }
}

pub async fn run(options: &Options, http: &reqwest::Client) -> anyhow::Result<Memory> {
    let n = options.sessions;
    let warmup = (n / 10).clamp(1, 10_000);
    let total = warmup + n;
    let payload_bytes_avg =
        (0..1000).map(|i| payload(i * 997).len()).sum::<usize>() as f64 / 1000.0;

    // Redis through actix-session.
    let redis = Redis::start()?;
    let peer = Peer::start(
        &options.peer_bin,
        "prm",
        Some(&redis.url()),
        &procs::random_hex(64),
    )?;
    let peer_url = peer.url("/api/sessions");
    load(http, &peer_url, 0..warmup, options.concurrency).await?;
    let (used0, rss0) = (
        redis.memory_field("used_memory")?,
        redis.memory_field("used_memory_rss")?,
    );
    let took = load(http, &peer_url, warmup..total, options.concurrency).await?;
    let (used1, rss1) = (
        redis.memory_field("used_memory")?,
        redis.memory_field("used_memory_rss")?,
    );
    let redis_keys: u64 = redis.cli(&["DBSIZE"])?.trim().parse()?;
    let sample = redis.cli(&["RANDOMKEY"])?.trim().to_owned();
    let sample_value: usize = redis.cli(&["STRLEN", &sample])?.trim().parse()?;
    eprintln!(
        "bench: redis: {n} sessions in {:.1} s, used_memory +{} B/session",
        took.as_secs_f64(),
        (used1 - used0) / n.max(1) as u64
    );
    let redis_used_memory = side(used0, used1, n, took);
    let redis_rss = side(rss0, rss1, n, took);
    drop(peer);
    drop(redis);

    // sessionmesh: one node, one copy of each session.
    let node = SmNode::start(
        &SmOptions {
            bin: options.sessionmesh_bin.clone(),
            secrets: Secrets::random(),
            replication_factor: 1,
            gossip_interval: None,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        },
        "smm",
        &[],
    )?;
    procs::wait_rings(
        http,
        std::slice::from_ref(&node),
        std::slice::from_ref(&node.id),
        Duration::from_secs(30),
    )
    .await?;
    let sm_url = node.url("/api/sessions");
    load(http, &sm_url, 0..warmup, options.concurrency).await?;
    let before = node.proc.rss()?;
    let took = load(http, &sm_url, warmup..total, options.concurrency).await?;
    let after = node.proc.rss()?;
    let view: serde_json::Value = http
        .get(node.url("/api/cluster"))
        .send()
        .await?
        .json()
        .await?;
    let held = view["sessions"]["owned"]
        .as_u64()
        .context("/api/cluster without sessions.owned")?;
    eprintln!(
        "bench: sessionmesh: {n} sessions in {:.1} s, RSS +{} B/session",
        took.as_secs_f64(),
        (after.saturating_sub(before)) / n.max(1) as u64
    );
    if held != total as u64 || redis_keys != total as u64 {
        bail!(
            "expected {total} sessions on each side, sessionmesh holds {held}, Redis {redis_keys}"
        );
    }
    Ok(Memory {
        sessions: n,
        warmup_sessions: warmup,
        payload_bytes_avg,
        sessionmesh_rss: side(before, after, n, took),
        sessionmesh_sessions_held: held,
        redis_used_memory,
        redis_rss,
        redis_keys,
        redis_sample_key_bytes: sample.len(),
        redis_sample_value_bytes: sample_value,
    })
}
