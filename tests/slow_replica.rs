//! A stalled replica holds the owner up in nothing and costs it a bounded
//! amount of memory, and nothing it missed is lost: the owner's outbox to a
//! peer is bounded, copies past the bound are kept as hints (one per session,
//! however many copies of it piled up) and counted, and once the replica
//! answers again every copy it missed reaches it.
//!
//! Two in-process nodes. The stall is real: an iptables rule drops every TCP
//! segment sent to the replica's internal port (its peer links), while gossip
//! (UDP) flows, so the replica stays in the ring. Needs root and iptables;
//! under `CI` it must run (`.ci/run` installs iptables), elsewhere it says why
//! it skips.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::firewall::{spec, Rules};
use common::{wait_for, Cluster, WAIT};
use futures_util::StreamExt;
use serde_json::json;
use sessionmesh::testing::session::{now_millis, replica_copy, Entry, SessionId};

/// More expiry refreshes than the owner's outbox to one peer holds (4,096
/// copies, plus a batch of 512 in flight).
const SESSIONS: usize = 6_000;
/// Long enough that no session expires during the test, however slowly a
/// loaded machine creates them; a read refreshes a replica's expiry once a
/// quarter of it ran ahead (15 s after the last copy).
const TTL: Duration = Duration::from_secs(60);

/// The replica's copy of `id`, if any.
fn copy(cluster: &Cluster, node: usize, id: &SessionId) -> Option<Entry> {
    cluster.nodes[node].node().store().entry(id, now_millis())
}

/// 1. node1 and node2, replication factor 2 (gossip every 2 s: the owner's
///    leases last 8 s, so it keeps serving from memory while its links to
///    node2 are stalled); once node1 holds node2's lease, 6,000 sessions
///    created through node1 (it owns them);
/// 2. once a read would refresh every replica's expiry, node2's internal port
///    is cut, and every session is read through node1: every read is served;
///    node1 counts outbox overflows (what did not fit is kept as hints);
/// 3. the cut is lifted: every session's copy on node2 gets the expiry the
///    reads gave it, and node1 has no hint left. (Before `hint` woke the
///    rebalancer, hints waited for the next ring change: with none, the
///    overflowed refreshes never arrived.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_behind_a_stalled_replica_are_bounded_and_arrive_later() {
    let cluster = Cluster::start_with(2, |config| {
        config.replication_factor = 2.try_into().unwrap();
        config.gossip_interval = Duration::from_secs(2);
        config.replication_timeout = Duration::from_secs(1);
    })
    .await;
    let owner = cluster.nodes[0].mesh();
    let replication = cluster.nodes[0].node().replication();
    // node1 serves from memory only with node2's lease (a process grants
    // none in its first term). Sessions are created once it holds it: a copy
    // made without it is put in doubt when the lease comes (others may have
    // taken the session over meanwhile), and its next read asks node2 first,
    // which the cut below would make wait for a connection timeout.
    wait_for("node1 to hold node2's lease", WAIT, || async {
        replication.lease_held().then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let mut ids = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let doc = owner
            .create(json!({"user": format!("u{i}")}), Some(TTL))
            .await
            .expect("create through node1");
        assert_eq!(doc.served_by(), "node1", "node1 mints ids it owns");
        ids.push(doc.id);
    }
    let created_in = started.elapsed();
    let created = |id: &SessionId| copy(&cluster, 1, id).map(|e| e.expires_at());
    let before: Vec<u64> = ids
        .iter()
        .map(|id| created(id).expect("node2 holds every acknowledged session"))
        .collect();

    // A read refreshes the replica once the expiry ran a quarter TTL ahead.
    let due = TTL / 4 + Duration::from_millis(100);
    wait_for("every refresh to be due", WAIT, || async {
        let now = now_millis();
        ids.iter()
            .all(|id| match copy(&cluster, 0, id) {
                Some(Entry::Live(s)) => s
                    .synced_expires_at
                    .is_some_and(|synced| now >= synced - s.ttl_ms + due.as_millis() as u64),
                _ => false,
            })
            .then_some(())
    })
    .await;

    // Still held (renewed all along): from now on, for a term without
    // renewal, so through the cut below.
    let due_at = started.elapsed();
    wait_for("node1 to hold node2's lease still", WAIT, || async {
        replication.lease_held().then_some(())
    })
    .await;
    let leased_at = started.elapsed();

    let port = cluster.nodes[1].addrs().internal.port().to_string();
    let Some(cut) = Rules::drop_all(&[spec(&["-o", "lo", "-p", "tcp", "--dport", &port])]) else {
        return;
    };
    let overflows = || replication.stats().outbox_overflows.load(Ordering::Relaxed);
    let overflows_before = overflows();
    let cut_at = started.elapsed();
    let counters_at_cut = serde_json::to_string(replication.stats()).unwrap_or_default();
    // Concurrent reads, as clients make them: all of them must be served
    // within the lease's term (it cannot be renewed through the cut), also
    // on a loaded machine. One by one, they once outlasted it: each read
    // after that waits for node2 to time out, and sessions expired unread.
    let reads = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move {
            let sent = started.elapsed();
            let read = owner.get(id).await;
            (i, id, sent, started.elapsed() - sent, read)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let read_in = started.elapsed() - cut_at;
    // The first read that took long, if any: when node1 stopped serving from
    // memory (each read then waits for node2's connection to time out).
    let first_slow = reads
        .iter()
        .filter(|(.., took, _)| *took > Duration::from_millis(200))
        .map(|(_, _, sent, took, _)| (*sent, *took))
        .min();
    for (i, id, _, _, read) in reads {
        if let Err(error) = read {
            panic!(
                "node1 must serve {id} (read {i} of {SESSIONS}) from memory: {error:?} ({:?} \
                 since the first creation; created by {created_in:?}, refreshes due by \
                 {due_at:?}, lease held by {leased_at:?}, cut at {cut_at:?}, every read \
                 answered {read_in:?} after the cut, the first slow read (sent, took): \
                 {first_slow:?}); node1 holds {:?}, holds its leases now: {}; its counters: {} (at the cut: {counters_at_cut})",
                started.elapsed(),
                copy(&cluster, 0, id),
                replication.lease_held(),
                serde_json::to_string(replication.stats()).unwrap_or_default(),
            );
        }
    }
    let overflowed = overflows() - overflows_before;
    assert!(
        overflowed > 0,
        "{SESSIONS} refreshes for a stalled peer must overflow its outbox"
    );
    let refreshed: Vec<u64> = ids
        .iter()
        .map(|id| match copy(&cluster, 0, id) {
            Some(entry) => replica_copy(&entry).expires_at(),
            None => panic!("node1 lost {id}"),
        })
        .collect();
    drop(cut);
    let lifted = std::time::Instant::now();

    let lagging = || {
        ids.iter()
            .zip(&refreshed)
            .filter(|(id, want)| created(id).is_none_or(|got| got < **want))
            .count()
    };
    let arrived = tokio::time::timeout(Duration::from_secs(60), async {
        while lagging() > 0 {
            // Paces the poll; the condition above decides.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let example = ids
        .iter()
        .zip(&refreshed)
        .find(|(id, want)| created(id).is_none_or(|got| got < **want))
        .map(|(id, want)| (id, *want, created(id), copy(&cluster, 0, id)));
    assert!(
        arrived.is_ok(),
        "60 s after the cut was lifted, {} of {SESSIONS} copies on node2 still lack the refresh \
         ({overflowed} overflowed the outbox, {} hints pending); e.g. {example:?}",
        lagging(),
        replication.hints_pending(),
    );
    wait_for("node1's hints delivered", WAIT, || async {
        (replication.hints_pending() == 0).then_some(())
    })
    .await;
    let later = ids
        .iter()
        .zip(&before)
        .filter(|(id, before)| created(id).is_some_and(|got| got > **before))
        .count();
    assert_eq!(later, SESSIONS, "every replica's expiry moved on");
    eprintln!(
        "{SESSIONS} refreshes behind a stalled replica (created in {created_in:?}, read in \
         {read_in:?}, first slow read {first_slow:?}): {overflowed} overflowed its outbox and \
         were kept as hints; all on the replica {:?} after the cut was lifted (node1's \
         counters: {}; at the cut: {counters_at_cut})",
        lifted.elapsed(),
        serde_json::to_string(replication.stats()).unwrap_or_default(),
    );
    cluster.shutdown().await;
}
