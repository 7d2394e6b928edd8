//! Cluster dynamics.
//!
//! - **Join**: `n - 1` in-process nodes (`sessionmesh::start`, port-0 listeners, one
//!   process), then one more; the time from calling `start` for the newcomer until
//!   every node's ring, the newcomer's included, holds all `n`. The newcomer then
//!   leaves gracefully and the next trial joins a fresh id.
//! - **Failure**: `n` real `sessionmesh` processes (replication factor 2); kill -9 of
//!   one; *detection* is the time until every survivor's ring (its `/api/cluster`)
//!   has dropped it. *Takeover* is the time until every session the dead node owned
//!   can be read again (200) through the survivors: that needs replication, so until
//!   the core replicates it is reported as not reached, with how many came back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sessionmesh::config::{Config, Secret};
use sessionmesh::Mesh;

use crate::memory::payload;
use crate::procs::{self, Secrets, SmNode, SmOptions};
use crate::stats::median;

/// Bound on any convergence wait.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Options {
    pub join_sizes: Vec<usize>,
    pub join_trials: usize,
    pub kill_sizes: Vec<usize>,
    pub kill_trials: usize,
    /// Sessions created on the node to be killed, read back for takeover.
    pub takeover_sessions: usize,
    pub takeover_timeout: Duration,
    pub gossip_interval: Duration,
    pub sessionmesh_bin: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct JoinResult {
    pub nodes: usize,
    pub trials_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KillTrial {
    /// Until the last survivor dropped the dead node from its ring.
    pub detection_ms: f64,
    /// Per survivor.
    pub survivors_ms: Vec<f64>,
    /// Until every session of the dead node was readable again; None if not
    /// within the timeout.
    pub takeover_ms: Option<f64>,
    pub takeover_readable: usize,
    pub takeover_sessions: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct KillResult {
    pub nodes: usize,
    pub trials: Vec<KillTrial>,
    pub detection_median_ms: f64,
    pub detection_max_ms: f64,
    pub takeover_median_ms: Option<f64>,
    pub takeover_timeout_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Dynamics {
    pub gossip_interval_ms: f64,
    pub join: Vec<JoinResult>,
    pub kill: Vec<KillResult>,
}

fn config(node_id: &str, secrets: &Secrets, seeds: Vec<String>, gossip: Duration) -> Config {
    let any = "127.0.0.1:0".parse().expect("a socket address");
    Config {
        node_id: node_id.to_owned(),
        cluster_id: "bench-join".to_owned(),
        public_addr: any,
        internal_addr: any,
        gossip_addr: any,
        seeds,
        cookie_secret: Secret::new(secrets.cookie.clone()),
        cluster_secret: Secret::new(secrets.cluster.clone()),
        gossip_interval: gossip,
        workers: 1,
        generated_secrets: false,
        ..Config::default()
    }
}

/// Polls every 5 ms until `done`, or fails after [`WAIT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > WAIT {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn has_all(nodes: &[Mesh], n: usize) -> bool {
    nodes
        .iter()
        .all(|h| sessionmesh::testing::node(h).view().ring.nodes().len() == n)
}

async fn join(n: usize, trials: usize, gossip: Duration) -> anyhow::Result<JoinResult> {
    anyhow::ensure!(n >= 2, "a join needs at least 2 nodes");
    let secrets = Secrets::random();
    let mut base: Vec<Mesh> = Vec::with_capacity(n - 1);
    for i in 1..n {
        let seeds = base
            .first()
            .map(|f| vec![f.gossip_addr().to_string()])
            .unwrap_or_default();
        base.push(Mesh::start(config(&format!("node{i}"), &secrets, seeds, gossip)).await?);
    }
    let seed = base[0].gossip_addr().to_string();
    until(&format!("{} nodes to converge", n - 1), || {
        has_all(&base, n - 1)
    })
    .await?;
    let mut trials_ms = Vec::with_capacity(trials);
    for t in 0..trials {
        let id = format!("joiner{t}");
        let started = Instant::now();
        let newcomer = Mesh::start(config(&id, &secrets, vec![seed.clone()], gossip)).await?;
        until(&format!("{id} in every ring of {n}"), || {
            sessionmesh::testing::node(&newcomer)
                .view()
                .ring
                .nodes()
                .len()
                == n
                && base
                    .iter()
                    .all(|h| sessionmesh::testing::node(h).view().ring.contains(&id))
        })
        .await?;
        let took = started.elapsed();
        eprintln!(
            "bench: join of {id} into {n} nodes visible everywhere after {} ms",
            took.as_millis()
        );
        trials_ms.push(took.as_secs_f64() * 1e3);
        newcomer.shutdown().await;
        until(&format!("{id} to leave every ring"), || {
            base.iter()
                .all(|h| !sessionmesh::testing::node(h).view().ring.contains(&id))
        })
        .await?;
    }
    futures_util::future::join_all(base.iter().map(|m| m.shutdown())).await;
    let mut sorted = trials_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Ok(JoinResult {
        nodes: n,
        median_ms: median(&trials_ms).unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        trials_ms,
    })
}

/// Polls every survivor until none has `victim` in its ring; per survivor, the
/// time since `killed_at`.
async fn detection(
    http: &reqwest::Client,
    survivors: &[SmNode],
    victim: &str,
    killed_at: Instant,
) -> anyhow::Result<Vec<f64>> {
    let mut seen: Vec<Option<f64>> = vec![None; survivors.len()];
    loop {
        for (i, node) in survivors.iter().enumerate() {
            if seen[i].is_none() {
                if let Ok(ring) = procs::ring_of(http, node).await {
                    if !ring.iter().any(|id| id == victim) {
                        seen[i] = Some(killed_at.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if killed_at.elapsed() > WAIT {
            bail!("{victim} still in some ring {WAIT:?} after kill -9");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every id through the survivors (in turn) until all answer 200 or the
/// timeout passes. Returns (time when all were readable, how many were).
async fn takeover(
    http: &reqwest::Client,
    survivors: &[SmNode],
    ids: &[String],
    killed_at: Instant,
    timeout: Duration,
) -> (Option<f64>, usize) {
    let mut readable = vec![false; ids.len()];
    loop {
        for (i, id) in ids.iter().enumerate() {
            if readable[i] {
                continue;
            }
            let node = &survivors[i % survivors.len()];
            let url = node.url(&format!("/api/sessions/{id}"));
            if let Ok(r) = http.get(url).send().await {
                readable[i] = r.status() == reqwest::StatusCode::OK;
            }
        }
        let count = readable.iter().filter(|r| **r).count();
        if count == ids.len() {
            return (Some(killed_at.elapsed().as_secs_f64() * 1e3), count);
        }
        if killed_at.elapsed() > timeout {
            return (None, count);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn kill_trial(
    options: &Options,
    n: usize,
    http: &reqwest::Client,
) -> anyhow::Result<KillTrial> {
    let sm = SmOptions {
        bin: options.sessionmesh_bin.clone(),
        secrets: Secrets::random(),
        replication_factor: 2,
        gossip_interval: Some(format!("{}ms", options.gossip_interval.as_millis())),
        extra_args: Vec::new(),
        extra_env: Vec::new(),
    };
    let mut nodes = procs::start_cluster(&sm, "k", n, http).await?;
    let mut victim = nodes.pop().context("a cluster of at least one node")?;
    // Sessions owned by the victim: a node mints ids it owns.
    let mut ids = Vec::with_capacity(options.takeover_sessions);
    for i in 0..options.takeover_sessions {
        let doc: serde_json::Value = http
            .post(victim.url("/api/sessions"))
            .header("content-type", "application/json")
            .body(payload(i))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if doc["owner"].as_str() != Some(victim.id.as_str()) {
            bail!(
                "a session created on {} is owned by {}",
                victim.id,
                doc["owner"]
            );
        }
        ids.push(
            doc["id"]
                .as_str()
                .context("a document without id")?
                .to_owned(),
        );
    }
    victim.proc.kill9();
    let killed_at = Instant::now();
    let (detected, (takeover_ms, readable)) = tokio::join!(
        detection(http, &nodes, &victim.id, killed_at),
        takeover(http, &nodes, &ids, killed_at, options.takeover_timeout)
    );
    let survivors_ms = detected?;
    let detection_ms = survivors_ms.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "bench: kill -9 of 1 of {n}: gone from every ring after {detection_ms:.0} ms; \
         sessions readable again: {readable}/{} ({})",
        ids.len(),
        takeover_ms.map_or("not within the timeout".to_owned(), |t| format!(
            "{t:.0} ms"
        ))
    );
    Ok(KillTrial {
        detection_ms,
        survivors_ms,
        takeover_ms,
        takeover_readable: readable,
        takeover_sessions: ids.len(),
    })
}

pub async fn run(options: &Options, http: &reqwest::Client) -> anyhow::Result<Dynamics> {
    let mut joins = Vec::new();
    for &n in &options.join_sizes {
        joins.push(join(n, options.join_trials, options.gossip_interval).await?);
    }
    let mut kills = Vec::new();
    for &n in &options.kill_sizes {
        let mut trials = Vec::new();
        for _ in 0..options.kill_trials {
            trials.push(kill_trial(options, n, http).await?);
        }
        let detections: Vec<f64> = trials.iter().map(|t| t.detection_ms).collect();
        let takeovers: Option<Vec<f64>> = trials.iter().map(|t| t.takeover_ms).collect();
        kills.push(KillResult {
            nodes: n,
            detection_median_ms: median(&detections).unwrap_or(0.0),
            detection_max_ms: detections.iter().copied().fold(0.0, f64::max),
            takeover_median_ms: takeovers.and_then(|t| median(&t)),
            takeover_timeout_s: options.takeover_timeout.as_secs_f64(),
            trials,
        });
    }
    Ok(Dynamics {
        gossip_interval_ms: options.gossip_interval.as_secs_f64() * 1e3,
        join: joins,
        kill: kills,
    })
}
