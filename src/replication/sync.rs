//! The anti-entropy task: every round, this node compares the sessions it owns
//! with one peer that holds copies of them, in turn, and repairs what differs
//! (the decisions are in [`super::anti_entropy`]; this is their I/O).
//!
//! A copy lost on a replica with no ring change and no write is re-created
//! within one rotation through the peers: `(ring members - 1)` rounds of
//! `anti_entropy_interval`, plus the round itself.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::anti_entropy::{self, to_send, Digest, Summary, MAX_SUMMARIES};
use super::client::{PeerError, SyncReply, SyncRequest};
use super::rebalance::Throttle;
use super::{Inner, MAX_BATCH};
use crate::ring::{NodeId, Ring};
use crate::session::{now_millis, replica_copy, Entry, Record, SessionId, Store};

/// Whether `ring` makes `owner` the owner of `id` and `holder` one of its
/// other holders.
fn shared(ring: &Ring, rf: usize, id: &SessionId, owner: &str, holder: &str) -> bool {
    let mut holders = ring.preference_list(id.as_bytes(), rf);
    holders.next().is_some_and(|n| &**n == owner) && holders.any(|n| &**n == holder)
}

/// The digest of the copies `store` holds of sessions that `owner` owns and
/// `holder` holds under `ring`.
pub(crate) fn digest(store: &Store, ring: &Ring, rf: usize, owner: &str, holder: &str) -> Digest {
    let mut digest = Digest::default();
    store.for_each_entry(now_millis(), |id, entry| {
        if shared(ring, rf, id, owner, holder) {
            digest.add_copy(id.as_str(), entry);
        }
    });
    digest
}

/// The summaries of those copies in `buckets`, at most [`MAX_SUMMARIES`].
fn summaries(
    store: &Store,
    ring: &Ring,
    rf: usize,
    (owner, holder): (&str, &str),
    buckets: &HashSet<usize>,
) -> Vec<Summary> {
    let mut out = Vec::new();
    store.for_each_entry(now_millis(), |id, entry| {
        if out.len() < MAX_SUMMARIES
            && buckets.contains(&anti_entropy::bucket(id.as_str()))
            && shared(ring, rf, id, owner, holder)
        {
            out.push(Summary::of(id.as_str(), entry));
        }
    });
    out
}

/// Runs `walk` (a walk over the whole store: milliseconds per 100,000
/// sessions, see BENCHMARKS.md) on tokio's blocking threads, off the runtime
/// that serves links and requests.
async fn off_runtime<T: Send + 'static>(
    walk: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PeerError> {
    tokio::task::spawn_blocking(walk)
        .await
        .map_err(|e| PeerError::Failed(format!("anti-entropy walk: {e}")))
}

/// [`answer`] off the runtime.
pub(super) async fn answer_off_runtime(
    inner: Arc<Inner>,
    request: SyncRequest,
) -> Result<SyncReply, PeerError> {
    off_runtime(move || answer(&inner, &request)).await
}

/// A peer's round with this node: the summaries of the copies that differ
/// from its digest, or `ring_differs` when its ring is not this node's.
pub(super) fn answer(inner: &Inner, request: &SyncRequest) -> SyncReply {
    let view = inner.view.load();
    let ring = &view.ring;
    if ring.fingerprint() != request.fingerprint {
        return SyncReply {
            ring_differs: true,
            ..SyncReply::default()
        };
    }
    let rf = inner.config.replication_factor;
    let pair = (request.from.as_str(), &*inner.self_id);
    let differing = digest(&inner.store, ring, rf, pair.0, pair.1).differing(&request.sums);
    let buckets: HashSet<usize> = differing.iter().copied().collect();
    SyncReply {
        ring_differs: false,
        summaries: if buckets.is_empty() {
            Vec::new()
        } else {
            summaries(&inner.store, ring, rf, pair, &buckets)
        },
        buckets: differing,
    }
}

/// The task: a round every `anti_entropy_interval`, with the ring's other
/// members in turn.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.config.anti_entropy_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let ring = inner.view.load().ring.clone();
        let peers: Vec<&NodeId> = ring
            .nodes()
            .iter()
            .filter(|n| **n != inner.self_id)
            .collect();
        if peers.is_empty() || !ring.contains(&inner.self_id) {
            continue;
        }
        let peer = peers[turn % peers.len()].clone();
        turn = turn.wrapping_add(1);
        match round(&inner, &ring, &peer).await {
            Ok(sent) => {
                inner
                    .stats
                    .anti_entropy_rounds
                    .fetch_add(1, Ordering::Relaxed);
                if sent > 0 {
                    tracing::info!(%peer, sent, "anti-entropy repaired copies");
                }
            }
            Err(error) => tracing::debug!(%peer, %error, "anti-entropy round failed"),
        }
    }
}

/// One round with `peer`: how many copies were sent.
async fn round(inner: &Arc<Inner>, ring: &Arc<Ring>, peer: &NodeId) -> Result<u64, PeerError> {
    let rf = inner.config.replication_factor;
    let Some(addr) = inner.address(peer) else {
        return Ok(0);
    };
    let sums = {
        let (inner, ring, peer) = (inner.clone(), ring.clone(), peer.clone());
        off_runtime(move || digest(&inner.store, &ring, rf, &inner.self_id, &peer)).await?
    };
    let request = SyncRequest {
        from: inner.self_id.to_string(),
        fingerprint: ring.fingerprint().to_owned(),
        sums: sums.sums().to_vec(),
    };
    let reply = inner.client.sync(&addr, &request).await?;
    if reply.ring_differs || reply.buckets.is_empty() {
        return Ok(0);
    }
    // The reply is the peer's: its buckets are taken only as far as they name
    // buckets, and its summaries only as ids to compare.
    let buckets: HashSet<usize> = reply
        .buckets
        .iter()
        .copied()
        .filter(|&b| b < anti_entropy::BUCKETS)
        .collect();
    let mine = {
        let (inner, ring, peer) = (inner.clone(), ring.clone(), peer.clone());
        off_runtime(move || summaries(&inner.store, &ring, rf, (&inner.self_id, &peer), &buckets))
            .await?
    };
    let now = now_millis();
    let records: Vec<Record> = to_send(&mine, &reply.summaries)
        .iter()
        .filter_map(|id| {
            let id = SessionId::parse(id)?;
            let entry: Entry = inner.store.entry(&id, now)?;
            Some(Record::from_entry(id.as_str(), &replica_copy(&entry)))
        })
        .collect();
    let mut throttle = Throttle::new(inner.config.handoff_rate);
    let mut sent = 0;
    for batch in records.chunks(MAX_BATCH) {
        throttle.wait(batch.len() as u64).await;
        inner.push(peer, batch.to_vec()).await?;
        sent += batch.len() as u64;
        inner
            .stats
            .anti_entropy_copies
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    Ok(sent)
}
