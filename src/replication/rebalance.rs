//! Handoff and repair: after the ring changes, every copy goes where the new
//! ring wants it.
//!
//! The rebalancer remembers the placement (ring plus member generations) whose
//! copies it last finished distributing. When the current placement differs, it
//! walks the store shard by shard and asks a [`HandoffPass`] where each entry
//! goes and which copies it may drop (see [`super::core::handoff`]): the first
//! surviving holder sends each entry to its new holders, a node that no longer
//! holds it sends it to all of them and drops its copy once every delivery of
//! the pass succeeded.
//!
//! Receivers merge by version, so a copy sent twice or late changes nothing.
//! Sends are batched per target and throttled to `handoff_rate` copies per
//! second so that serving traffic stays responsive. A pass that had failures is
//! retried; copies that replicas missed on the write path (hints) are retried
//! on the same tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::core::{HandoffPass, Placement};
use super::{Inner, MAX_BATCH};
use crate::membership::ClusterView;
use crate::ring::{NodeId, Ring};
use crate::session::{now_millis, replica_copy, Record, SessionId};

/// How often unfinished work (a failed pass, pending hints) is retried.
const RETRY: Duration = Duration::from_secs(1);

/// Handoff and repair progress, for `/api/cluster` and metrics.
#[derive(Default, Serialize)]
pub struct HandoffProgress {
    /// A pass is running now.
    pub running: AtomicBool,
    /// Copies the current (or last) pass has to send, has sent, and failed to send.
    pub to_move: AtomicU64,
    pub moved: AtomicU64,
    pub failed: AtomicU64,
    /// Copies this node dropped after handing them to their new holders.
    pub dropped: AtomicU64,
    /// Copies sent and failed over all passes.
    pub moved_total: AtomicU64,
    pub failed_total: AtomicU64,
    /// Passes completed (every copy delivered) and passes that had failures
    /// (retried), and how long the last one took.
    pub passes: AtomicU64,
    pub incomplete_passes: AtomicU64,
    pub last_pass_ms: AtomicU64,
    /// Copies per second of the last pass that sent any.
    pub last_rate: AtomicU64,
    /// The ring whose placement is fully distributed.
    #[serde(skip)]
    pub synced: watch::Sender<Option<Arc<Ring>>>,
}

pub(super) async fn run(inner: Arc<Inner>, mut views: watch::Receiver<Arc<ClusterView>>) {
    let mut synced = Placement::of(&views.borrow_and_update());
    inner
        .progress
        .synced
        .send_replace(Some(synced.ring.clone()));
    let mut pending = false;
    loop {
        let retry = async {
            if pending {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            changed = views.changed() => if changed.is_err() { return },
            _ = retry => {}
            // New hints: a replica missed copies with no ring change (slow,
            // frozen, its outbox full). Without this they would wait for
            // the next ring change.
            _ = inner.hinted.notified(), if !pending => {}
        }
        let current = Placement::of(&views.borrow_and_update());
        let mut complete = true;
        if !current.same(&synced) {
            complete = pass(&inner, &synced, &current).await;
            if complete {
                synced = current;
                inner
                    .progress
                    .synced
                    .send_replace(Some(synced.ring.clone()));
            }
        }
        let hints_left = deliver_hints(&inner).await;
        pending = !complete || hints_left;
    }
}

/// One handoff pass from `old` to `new`. Returns whether every copy arrived.
async fn pass(inner: &Arc<Inner>, old: &Placement, new: &Placement) -> bool {
    let started = Instant::now();
    let progress = &inner.progress;
    progress.running.store(true, Ordering::Relaxed);
    for counter in [&progress.to_move, &progress.moved, &progress.failed] {
        counter.store(0, Ordering::Relaxed);
    }
    let rf = inner.config.replication_factor;
    let mut handoff: HandoffPass<SessionId> =
        HandoffPass::new(old.clone(), new.clone(), inner.self_id.clone(), rf);
    let mut batches: HashMap<NodeId, Vec<Record>> = HashMap::new();
    let mut throttle = Throttle::new(inner.config.handoff_rate);

    for shard in 0..inner.store.shard_count() {
        if inner.stop.is_cancelled() {
            progress.running.store(false, Ordering::Relaxed);
            return false;
        }
        for (id, entry) in inner.store.shard_entries(shard, now_millis()) {
            let targets = handoff.entry(id, id.as_bytes(), entry.version());
            if targets.is_empty() {
                continue;
            }
            let record = Record::from_entry(id.as_str(), &replica_copy(&entry));
            for target in targets {
                progress.to_move.fetch_add(1, Ordering::Relaxed);
                let batch = batches.entry(target.clone()).or_default();
                batch.push(record.clone());
                if batch.len() >= MAX_BATCH {
                    let batch = std::mem::take(batch);
                    handoff.sent(send(inner, &target, batch, &mut throttle).await);
                }
            }
        }
    }
    for (target, batch) in batches {
        if !batch.is_empty() {
            handoff.sent(send(inner, &target, batch, &mut throttle).await);
        }
    }
    let ok = handoff.ok();
    let dropped = handoff
        .drops()
        .iter()
        .filter(|(id, version)| inner.store.discard(id, *version))
        .count();
    progress
        .dropped
        .fetch_add(dropped as u64, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let moved = progress.moved.load(Ordering::Relaxed);
    progress
        .last_pass_ms
        .store(elapsed.as_millis() as u64, Ordering::Relaxed);
    if moved > 0 {
        progress.last_rate.store(
            (moved as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
            Ordering::Relaxed,
        );
    }
    if ok {
        progress.passes.fetch_add(1, Ordering::Relaxed);
    } else {
        progress.incomplete_passes.fetch_add(1, Ordering::Relaxed);
    }
    progress.running.store(false, Ordering::Relaxed);
    if moved > 0 || !ok {
        tracing::info!(
            to_move = progress.to_move.load(Ordering::Relaxed),
            moved,
            failed = progress.failed.load(Ordering::Relaxed),
            ms = elapsed.as_millis() as u64,
            complete = ok,
            "handoff pass"
        );
    }
    ok
}

async fn send(
    inner: &Arc<Inner>,
    target: &NodeId,
    batch: Vec<Record>,
    throttle: &mut Throttle,
) -> bool {
    let n = batch.len() as u64;
    throttle.wait(n).await;
    match inner.push(target, batch).await {
        Ok(()) => {
            inner.progress.moved.fetch_add(n, Ordering::Relaxed);
            inner.progress.moved_total.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(error) => {
            tracing::debug!(%target, %error, "handoff batch failed");
            inner.progress.failed.fetch_add(n, Ordering::Relaxed);
            inner.progress.failed_total.fetch_add(n, Ordering::Relaxed);
            false
        }
    }
}

/// Delivers hinted copies to peers that still hold the sessions. Returns
/// whether hints remain.
async fn deliver_hints(inner: &Arc<Inner>) -> bool {
    let hints = std::mem::take(&mut *inner.hints.lock());
    if hints.is_empty() {
        return false;
    }
    let view = inner.view.load_full();
    let rf = inner.config.replication_factor;
    for (peer, ids) in hints {
        let records: Vec<Record> = ids
            .iter()
            .filter(|id| view.ring.holds(id.as_bytes(), &peer, rf))
            .filter_map(|id| {
                Some(Record::from_entry(
                    id.as_str(),
                    &replica_copy(&inner.store.entry(id, now_millis())?),
                ))
            })
            .collect();
        if records.is_empty() {
            continue;
        }
        let n = records.len() as u64;
        let mut delivered = true;
        for chunk in records.chunks(MAX_BATCH) {
            if inner.push(&peer, chunk.to_vec()).await.is_err() {
                delivered = false;
                break;
            }
        }
        if delivered {
            inner.stats.hints_delivered.fetch_add(n, Ordering::Relaxed);
        } else {
            let mut hints = inner.hints.lock();
            hints.entry(peer).or_default().extend(ids);
        }
    }
    !inner.hints.lock().is_empty()
}

/// Paces sends to at most `rate` copies per second.
pub(super) struct Throttle {
    rate: f64,
    started: Instant,
    sent: u64,
}

impl Throttle {
    pub(super) fn new(rate: u32) -> Throttle {
        Throttle {
            rate: f64::from(rate.max(1)),
            started: Instant::now(),
            sent: 0,
        }
    }

    pub(super) async fn wait(&mut self, n: u64) {
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
        self.sent += n;
    }
}
