//! The state one node shares with every part of it: configuration, store,
//! membership, replication, codecs, metrics. [`crate::mesh`] starts and stops
//! it; request handlers and peers' operations reach it through the mesh.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Signer;
use crate::config::Config;
use crate::cookie::CookieCodec;
use crate::membership::{ClusterView, Membership, Status};
use crate::metrics::Metrics;
use crate::replication::Replication;
use crate::ring::NodeId;
use crate::routing;
use crate::session::{now_millis, SessionId, Store};
use crate::tls::PeerTransport;

/// How long one pass of the expiry purge over every store shard takes.
const PURGE_SWEEP: Duration = Duration::from_secs(10);

/// The shared state of a running node, handed to every request handler.
pub struct Node {
    config: Config,
    id: NodeId,
    generation: u64,
    store: Arc<Store>,
    membership: Membership,
    replication: Replication,
    cookies: CookieCodec,
    signer: Signer,
    /// Nonces of the signed internal requests accepted lately.
    replays: crate::auth::Replays,
    status: AtomicU8,
    metrics: Metrics,
    /// How this node dials peers' internal listeners (plain HTTP or mutual TLS).
    transport: PeerTransport,
    /// Cancelled when an operator asks this node to leave (`POST /api/admin/leave`).
    leave: CancellationToken,
    /// Cancelled when the listeners stop: the peer links served here close (an
    /// upgraded connection would otherwise hold the graceful stop for its grace).
    link_stop: CancellationToken,
    /// Cancelled when the node stops: every task and link of it ends.
    stop: CancellationToken,
    /// Unique in this process: keys per-thread state of this node (several
    /// nodes share a process in tests and local clusters).
    key: u64,
    /// The internal listener's and gossip's bound addresses.
    bound: (std::net::SocketAddr, std::net::SocketAddr),
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        id: NodeId,
        generation: u64,
        bound: [std::net::SocketAddr; 2],
        store: Arc<Store>,
        membership: Membership,
        replication: Replication,
        signer: Signer,
        transport: PeerTransport,
        stop: CancellationToken,
    ) -> Node {
        static KEYS: AtomicU64 = AtomicU64::new(1);
        Node {
            cookies: CookieCodec::new(&config),
            signer,
            replays: Default::default(),
            metrics: Metrics::new(&config.node_id).with_gossip_drops(membership.gossip_drops()),
            id,
            generation,
            store,
            membership,
            replication,
            status: AtomicU8::new(0),
            leave: CancellationToken::new(),
            link_stop: CancellationToken::new(),
            stop,
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            bound: (bound[0], bound[1]),
            transport,
            config,
        }
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This node's id, as the ring names it.
    pub fn node_id(&self) -> &NodeId {
        &self.id
    }

    /// The internal listener's and gossip's bound addresses.
    pub(crate) fn bound(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        self.bound
    }

    /// Unique in this process (see the field).
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// Cancelled when the node stops.
    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// This process's generation (start time in unix nanoseconds).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Cancelled when this node's listeners stop: peer links served here close.
    pub fn link_stop(&self) -> &CancellationToken {
        &self.link_stop
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its sessions and copies.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The session cookie's codec.
    pub fn cookies(&self) -> &CookieCodec {
        &self.cookies
    }

    /// Signs and checks internal requests.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The nonces of the signed internal requests accepted lately.
    pub fn replays(&self) -> &crate::auth::Replays {
        &self.replays
    }

    /// Gossip membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Its Prometheus families.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How this node dials peers: every node-to-node client and URL comes from it.
    pub fn transport(&self) -> &PeerTransport {
        &self.transport
    }

    /// Asks the process running this node to leave gracefully, as on SIGTERM
    /// ([`run`] watches for it).
    pub fn request_leave(&self) {
        self.leave.cancel();
    }

    /// Resolves once [`Node::request_leave`] was called.
    pub async fn leave_requested(&self) {
        self.leave.cancelled().await
    }

    /// The owner-side session operations (replicated writes, read-through).
    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// The current cluster view (ring and members).
    pub fn view(&self) -> Arc<ClusterView> {
        self.membership.view()
    }

    /// This node's own status (what it gossips).
    pub fn status(&self) -> Status {
        match self.status.load(Ordering::Acquire) {
            0 => Status::Joining,
            1 => Status::Ready,
            _ => Status::Leaving,
        }
    }

    pub(crate) async fn set_status(&self, status: Status) {
        let code = match status {
            Status::Joining => 0,
            Status::Ready => 1,
            Status::Leaving => 2,
        };
        self.status.store(code, Ordering::Release);
        self.membership.set_status(status).await;
    }

    /// A fresh id that this node owns in its current ring, so that creating the
    /// session needs no forward. `None` when this node is not in the ring.
    pub fn mint_owned_id(&self) -> Option<SessionId> {
        let view = self.view();
        if !view.ring.contains(&self.id) {
            return None;
        }
        // Each try succeeds with probability ~1/N; 64·N tries fail with
        // probability ~e^-64.
        let tries = 64 * view.ring.nodes().len().max(1);
        (0..tries)
            .map(|_| SessionId::random())
            .find(|id| routing::owns(&view.ring, id.as_bytes(), &self.id))
    }
}

/// Before announcing `ready`, a node with seeds waits until it knows its peers,
/// so that the ids it mints and the ring it routes by are the cluster's, not its
/// own alone: until it has heard of at least one peer, and then its members and
/// the ones it admitted (those that proved the cluster secret: only they enter
/// its ring) have not changed for one gossip interval.
///
/// One interval is enough: a single exchange with a seed brings the state of
/// every node the seed knows, and chitchat counts a node live at its second
/// heartbeat, which every node sends each round; an interval spans several
/// exchanges (each node gossips with up to three peers per round, and peers
/// gossip with it), so a quiet interval means no peer is still on its way in.
/// (Three intervals were used before: a join then took 3.5 s to show in every
/// ring with 500 ms gossip.) A member that shows up later is handled as any
/// ring change is: handoff moves the sessions it should own.
///
/// Bounded: a node whose seeds are all down still starts, as a cluster of one.
pub(crate) async fn wait_for_peers(node: &Node) {
    let interval = node.config.gossip_interval;
    let deadline = tokio::time::Instant::now() + (interval * 20).max(Duration::from_secs(2));
    let mut views = node.membership.subscribe();
    let mut stable_since = tokio::time::Instant::now();
    let mut last: (Vec<NodeId>, Vec<NodeId>) = Default::default();
    loop {
        let known = {
            let view = views.borrow_and_update();
            let mut members: Vec<NodeId> = view.members.keys().cloned().collect();
            members.sort();
            let admitted: Vec<NodeId> = view.admitted.iter().cloned().collect();
            (members, admitted)
        };
        if known != last {
            last = known;
            stable_since = tokio::time::Instant::now();
        }
        let now = tokio::time::Instant::now();
        if last.0.len() > 1 && now >= stable_since + interval {
            return;
        }
        if now >= deadline {
            tracing::warn!(node = %node.id, "no peer answered: starting as a cluster of one");
            return;
        }
        let wake = (stable_since + interval)
            .max(now + interval / 4)
            .min(deadline);
        let _ = tokio::time::timeout_at(wake, views.changed()).await;
    }
}

/// Waits until this node is in its own ring (what `/readyz` checks besides the
/// status), so that "node ready" is logged when the node is ready. Its `ready`
/// status reaches its own view with the next round of gossip. Bounded like
/// [`wait_for_peers`]; false when the bound passed.
pub(crate) async fn wait_in_own_ring(node: &Node) -> bool {
    let bound = (node.config.gossip_interval * 20).max(Duration::from_secs(2));
    let mut views = node.membership.subscribe();
    let in_ring = tokio::time::timeout(bound, views.wait_for(|v| v.ring.contains(&node.id)));
    let in_ring = matches!(in_ring.await, Ok(Ok(_)));
    in_ring
}

/// Removes expired sessions, one store shard per tick; after a sweep over every
/// shard that removed anything, gives the freed memory back to the system.
pub(crate) async fn purge_loop(node: Arc<Node>) {
    pin_malloc_thresholds();
    let stop = node.stop.clone();
    let mut ticker = tokio::time::interval(Store::purge_interval(PURGE_SWEEP));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = 0usize;
    let mut purged_in_sweep = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let purged = node.store.purge_shard(tick, now_millis());
        if purged > 0 {
            tracing::debug!(purged, "expired sessions purged");
        }
        purged_in_sweep += purged;
        tick = tick.wrapping_add(1);
        if tick % node.store.shard_count() == 0 && purged_in_sweep > 0 {
            purged_in_sweep = 0;
            release_free_memory();
        }
    }
}

/// Returns the memory that malloc holds free to the operating system.
///
/// glibc's malloc gives back by itself only the free memory at the top of a
/// heap, past its trim threshold; the free chunks inside stay in its arenas, so
/// after sessions expire a node's RSS would stay near its peak. `malloc_trim`
/// releases the pages of those chunks (not the tops of the per-thread arenas:
/// see [`pin_malloc_thresholds`]). Once per purge sweep (10 s) at most, and
/// only after one that removed something.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Largest allocation that glibc's malloc serves from its arenas (larger ones
/// are mapped on their own and unmapped when freed), and the free memory at the
/// top of an arena past which `free` gives it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_THRESHOLD_BYTES: i32 = 1 << 20;

/// Pins glibc malloc's mmap and trim thresholds to [`MALLOC_THRESHOLD_BYTES`],
/// once per process, unless the operator set malloc's tunables (environment).
///
/// By default glibc raises both thresholds whenever a mapped block is freed,
/// the mmap threshold to that block's size (up to 32 MiB) and the trim
/// threshold to twice that; and `malloc_trim` never shrinks the top of a
/// per-thread arena, only `free` does, past the trim threshold. A node frees
/// blocks of several MiB (replication batches of large sessions, their
/// bodies), after which the tops of its arenas kept up to that much each,
/// freed but resident, for good. Measured with 4 nodes (debug build), 3000
/// sessions of 32 KiB, 30 s after every session expired: thresholds at 6.9 to
/// 8.4 MiB and 16.9 MiB, arena tops of 2 to 13 MiB, 3 MiB of heap in use,
/// RSS 20 to 30 MB over the baseline (14 to 47 MB in another run); with the
/// thresholds pinned at 1 MiB, tops under 1 MiB and RSS 5 to 7 MB over it.
/// Blocks over 1 MiB are rare here (batches that large travel over HTTP).
fn pin_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static PINNED: std::sync::Once = std::sync::Once::new();
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
        if tuned {
            return;
        }
        PINNED.call_once(|| {
            // SAFETY: mallopt takes no pointer; it only changes malloc's
            // parameters, under malloc's own lock.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_THRESHOLD_BYTES);
                libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_THRESHOLD_BYTES);
            }
        });
    }
}

/// Makes `span` the span of every later log line of this thread that is in no
/// other span, for a thread that works for one node only (the node's HTTP
/// workers, local-cluster's per-node runtime). A no-op without a span, and for a
/// thread that has one already.
pub(crate) fn log_on_this_thread_in(span: &tracing::Span) {
    thread_local!(static IN_SPAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if span.is_none() || IN_SPAN.with(|entered| entered.replace(true)) {
        return;
    }
    // Never exited: an exit while the thread's locals are torn down could touch
    // tracing's own thread-locals after their destruction.
    std::mem::forget(span.clone().entered());
}
