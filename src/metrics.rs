//! Prometheus metrics of one node: the families, the hooks other modules call, and
//! the gauges computed at scrape time.
//!
//! Every node owns its own [`Metrics`] (several nodes may share one process in
//! tests and in `sessionmesh local-cluster`), reached through
//! [`Node::metrics`](crate::node::Node::metrics). Names are prefixed
//! `sessionmesh_`; the text is OpenMetrics, which Prometheus scrapes natively.
//!
//! Hooks for the replication, handoff and repair code are plain public counters
//! and gauges, so that a call site reads as what it counts:
//!
//! ```ignore
//! node.metrics().replication_writes.inc();
//! node.metrics().handoff_sessions_sent.inc_by(batch.len() as u64);
//! node.metrics().handoff_pending_sessions.set(remaining as i64);
//! ```
//!
//! Cheap on the hot path: a request costs two label-set lookups under a read
//! lock and a few atomic adds; nothing is allocated per request but the matched
//! route pattern, which actix hands out as a `String` (the labels hold it
//! interned: one `&'static str` per distinct pattern).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::membership::gossip::{DropReason, GossipDrops};
use crate::membership::{ClusterView, MemberReport};
use crate::node::Node;
use crate::replication::Replication;
use crate::ring::Ring;
use crate::session::{now_millis, Store};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which listener served a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Listener {
    Public,
    Internal,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    /// A standard method, or `other`: clients choose methods freely, and a label
    /// must not let them create series at will.
    method: &'static str,
    /// The matched route pattern (`/api/sessions/{id}`), never the raw path, so
    /// that the number of series stays bounded; `unmatched` for unknown routes.
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: &'static str,
}

/// Most distinct route patterns interned; past it, `other` (never reached: the
/// patterns are those of the routes the application declares).
const MAX_ROUTES: usize = 1024;

/// The interned copy of a route pattern (leaked once per distinct pattern, shared
/// by every node of the process).
fn intern_route(route: Option<String>) -> &'static str {
    use std::collections::HashSet;
    use std::sync::OnceLock;
    static ROUTES: OnceLock<parking_lot::RwLock<HashSet<&'static str>>> = OnceLock::new();
    let Some(route) = route else {
        return "unmatched";
    };
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(&known) = routes.read().get(route.as_str()) {
        return known;
    }
    let mut routes = routes.write();
    if let Some(&known) = routes.get(route.as_str()) {
        return known;
    }
    if routes.len() >= MAX_ROUTES {
        return "other";
    }
    let leaked: &'static str = Box::leak(route.into_boxed_str());
    routes.insert(leaked);
    leaked
}

/// How a forward to a session's owner ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// The owner answered (whatever its status code).
    Ok,
    /// The owner could not be reached (connect failed, or it is not a member).
    Unavailable,
    /// The owner was reached but the exchange failed (timeout, broken connection).
    Failed,
}

impl ForwardOutcome {
    fn label(self) -> &'static str {
        match self {
            ForwardOutcome::Ok => "ok",
            ForwardOutcome::Unavailable => "unavailable",
            ForwardOutcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    /// `owned`, `replica` or `other`.
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    /// `joining`, `ready`, `leaving`, or `down` for a member gossip still
    /// remembers but no longer considers live.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    node_id: String,
    version: &'static str,
}

fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s, doubling.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Totals kept beside the Prometheus families, cheap to read for the dashboard.
#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    forward_micros: AtomicU64,
}

/// Counter values the dashboard turns into rates (all monotonic since start).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Stats {
    /// Requests answered, both listeners.
    pub requests: u64,
    /// Answers with a 4xx status.
    pub client_errors: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// Requests forwarded to another node (any outcome).
    pub forwards: u64,
    /// Forwards that did not reach an answer from the owner.
    pub forward_failures: u64,
    /// Sum of forward latencies, seconds.
    pub forward_seconds: f64,
    pub replication_writes: u64,
    pub replication_failures: u64,
    pub handoff_sessions_sent: u64,
    pub handoff_sessions_received: u64,
    pub handoff_pending_sessions: i64,
    pub repair_sessions: u64,
    pub takeover_sessions: u64,
    pub read_through: u64,
    pub ring_changes: u64,
}

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    totals: Totals,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    forwards: Family<OutcomeLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    forward_duration: Histogram,
    sessions: Family<RoleLabels, Gauge>,
    members: Family<StatusLabels, Gauge>,
    ring_members: Gauge,
    /// Mirrored at scrape time from the gossip socket's own counters.
    gossip_dropped: Family<ReasonLabels, Counter>,
    gossip_drops: Option<Arc<GossipDrops>>,
    /// Times the ring (the set of ready members) changed since start.
    pub ring_changes: Counter,
    /// Session reads this node served to peers over links.
    pub link_reads: Counter,
    /// Session operations served to peers over links.
    pub link_ops: Counter,
    /// Times the replies to one link message reached the batch size and were
    /// sent before the rest (so that a reply buffer stays bounded).
    pub link_replies_cut: Counter,

    // ---- mirrored at scrape time from the replication layer's own counters ----
    /// Copies confirmed by replicas for client writes (counted on the writer).
    pub replication_writes: Counter,
    /// Replica deliveries that failed on the write path (each left a hint).
    pub replication_failures: Counter,
    /// Session copies sent to new holders by handoff passes.
    pub handoff_sessions_sent: Counter,
    /// Session copies received from peers (replication and handoff).
    pub handoff_sessions_received: Counter,
    /// Handoff passes started, completed (every copy delivered) and incomplete (retried).
    pub handoffs_started: Counter,
    pub handoffs_completed: Counter,
    pub handoffs_failed: Counter,
    /// Copies still to send in the running handoff pass (0 when idle).
    pub handoff_pending_sessions: Gauge,
    /// Hinted copies delivered late, restoring the replication factor.
    pub repair_sessions: Counter,
    /// Requests sent to the next holder because the owner was unreachable.
    pub takeover_sessions: Counter,
    /// Misses looked up on other holders (read-through).
    pub read_through: Counter,
    /// Stops of the whole process noticed (SIGSTOP, a frozen VM).
    pub pauses: Counter,
    /// Copies put in doubt (after a pause, or held again after a ring change).
    pub doubted_sessions: Counter,
    /// Writes a replica refused because it held a newer copy than the writer.
    pub stale_writes: Counter,
    /// Anti-entropy rounds completed with a peer.
    pub anti_entropy_rounds: Counter,
    /// Copies kept as hints because a peer's outbox was full.
    pub outbox_overflows: Counter,
    /// Copies from peers refused because this node was leaving.
    pub copies_refused_leaving: Counter,
    /// Writes refused because this node did not get the session's lease in time.
    pub writes_without_lease: Counter,
    /// Signed internal requests refused because they came again (a replay).
    pub replayed_requests: Counter,
    /// Dashboard overviews gathered from every member (concurrent requests
    /// share one).
    pub dashboard_gathers: Counter,
    /// Copies anti-entropy sent to a holder that lacked them or held another version.
    pub anti_entropy_sessions: Counter,
    /// Copies from peers refused because their data is over `max_session_bytes`.
    pub refused_copies: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}

impl Metrics {
    /// The families of one node; `node_id` goes into `sessionmesh_node_info`.
    pub fn new(node_id: &str) -> Metrics {
        let mut registry = Registry::with_prefix("sessionmesh");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, method, matched route pattern and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by listener and matched route pattern",
            http_duration.clone(),
        );
        let forwards = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "forwards",
            "Requests forwarded to the session's owner, by outcome (ok, unavailable, failed)",
            forwards.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Requests refused by a limit, by limit (payload_too_large, header_too_large, request_timeout, node_full, overloaded)",
            limit_hits.clone(),
        );
        let forward_duration = latency_histogram();
        registry.register(
            "forward_duration_seconds",
            "Time from sending a forward to the owner's response head",
            forward_duration.clone(),
        );
        let sessions = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Live sessions held by this node, by role in its ring (owned, replica, other)",
            sessions.clone(),
        );
        let members = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "members",
            "Members known to gossip, by status (joining, ready, leaving, down)",
            members.clone(),
        );
        let ring_members = Gauge::default();
        registry.register(
            "ring_members",
            "Nodes in this node's ring",
            ring_members.clone(),
        );
        let gossip_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gossip_dropped",
            "Gossip datagrams dropped unread, by reason (malformed, unsealed, unknown_key, bad_mac, stale, replayed, undecodable)",
            gossip_dropped.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            node_id: node_id.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register("node_info", "This node's id and version (always 1)", info);

        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let ring_changes = counter("ring_changes", "Changes of the ring since start");
        let link_reads = counter(
            "link_reads",
            "Session reads served to peers of versions before link operations",
        );
        let link_ops = counter(
            "link_ops",
            "Session operations served to peers over links (requests that entered another node)",
        );
        let link_replies_cut = counter(
            "link_replies_cut",
            "Times the replies to one link message reached the batch size (256 KiB) and were sent before the rest",
        );
        let replication_writes = counter(
            "replication_writes",
            "Writes applied and acknowledged by a replica",
        );
        let replication_failures = counter(
            "replication_failures",
            "Writes a replica did not acknowledge in time",
        );
        let handoff_sessions_sent = counter(
            "handoff_sessions_sent",
            "Sessions streamed to their new owner after a ring change",
        );
        let handoff_sessions_received = counter(
            "handoff_sessions_received",
            "Sessions received from their previous owner",
        );
        let handoffs_started = counter("handoffs_started", "Handoffs started");
        let handoffs_completed = counter(
            "handoffs_completed",
            "Handoffs finished with every session delivered",
        );
        let handoffs_failed = counter("handoffs_failed", "Handoffs given up");
        let repair_sessions = counter(
            "repair_sessions",
            "Replica copies re-created to restore the replication factor",
        );
        let takeover_sessions = counter(
            "takeover_sessions",
            "Sessions taken over as owner after their owner died",
        );
        let read_through = counter(
            "read_through",
            "Misses read through from the previous owner or a replica",
        );
        let pauses = counter(
            "pauses",
            "Stops of the whole process noticed (its copies were then checked with their other holders)",
        );
        let doubted_sessions = counter(
            "doubted_sessions",
            "Copies checked with their other holders before use (after a pause, or held again after a ring change)",
        );
        let anti_entropy_rounds = counter(
            "anti_entropy_rounds",
            "Anti-entropy rounds completed with a peer (digests of the sessions both hold compared)",
        );
        let dashboard_gathers = counter(
            "dashboard_gathers",
            "Dashboard overviews gathered from every live member (concurrent and repeated requests share one)",
        );
        let replayed_requests = counter(
            "replayed_requests",
            "Signed internal requests refused because their nonce was seen before within the timestamp window (a replay)",
        );
        let outbox_overflows = counter(
            "outbox_overflows",
            "Copies for a peer kept as hints (re-sent later, one per session) because its outbox was full: the peer is slow or frozen",
        );
        let copies_refused_leaving = counter(
            "copies_refused_leaving",
            "Copies from peers refused because this node was leaving (its last handoff may be over: the writer sends them to a stand-in)",
        );
        let writes_without_lease = counter(
            "writes_without_lease",
            "Writes refused (503 no_lease) because this node did not get the session's ownership lease within two terms: another node may serve it",
        );
        let anti_entropy_sessions = counter(
            "anti_entropy_sessions",
            "Copies anti-entropy sent to a holder that lacked them or held another version",
        );
        let stale_writes = counter(
            "stale_writes",
            "Writes refused by a replica holding a newer copy than the writer's",
        );
        let refused_copies = counter(
            "refused_copies",
            "Session copies from peers refused because their data is over max_session_bytes",
        );
        let handoff_pending_sessions = Gauge::default();
        registry.register(
            "handoff_pending_sessions",
            "Sessions still to hand off in the running handoff",
            handoff_pending_sessions.clone(),
        );

        Metrics {
            registry,
            limit_hits,
            totals: Totals::default(),
            http_requests,
            http_duration,
            forwards,
            forward_duration,
            sessions,
            members,
            ring_members,
            gossip_dropped,
            gossip_drops: None,
            ring_changes,
            link_reads,
            link_ops,
            link_replies_cut,
            replication_writes,
            replication_failures,
            handoff_sessions_sent,
            handoff_sessions_received,
            handoffs_started,
            handoffs_completed,
            handoffs_failed,
            handoff_pending_sessions,
            repair_sessions,
            takeover_sessions,
            read_through,
            pauses,
            doubted_sessions,
            stale_writes,
            anti_entropy_rounds,
            anti_entropy_sessions,
            outbox_overflows,
            copies_refused_leaving,
            writes_without_lease,
            dashboard_gathers,
            replayed_requests,
            refused_copies,
        }
    }

    /// Exports the counters of this node's gossip socket.
    pub fn with_gossip_drops(mut self, drops: Arc<GossipDrops>) -> Metrics {
        self.gossip_drops = Some(drops);
        self.mirror_gossip_drops();
        self
    }

    /// Counts one answered request. `route` is the matched pattern, `None` when no
    /// route matched.
    pub fn observe_request(
        &self,
        listener: Listener,
        method: &str,
        route: Option<String>,
        status: u16,
        elapsed: Duration,
    ) {
        let route = intern_route(route);
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.totals.client_errors.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.totals.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        self.http_duration
            .get_or_create(&RouteLabels {
                listener: listener.label(),
                route,
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                listener: listener.label(),
                method: method_label(method),
                route,
                status,
            })
            .inc();
    }

    /// Counts one forward to an owner and how long it took.
    pub fn observe_forward(&self, outcome: ForwardOutcome, elapsed: Duration) {
        self.forwards
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        self.totals
            .forward_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.forward_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused by `limit`.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Sets the gauges that are computed at scrape time from the node's state.
    /// `copies` is the replication factor (owner included).
    pub fn refresh(
        &self,
        view: &ClusterView,
        members: &[MemberReport],
        store: &Store,
        replication: &Replication,
        copies: usize,
    ) {
        self.mirror(replication);
        self.mirror_gossip_drops();
        let counts = session_counts(&view.ring, store, &view.self_id, copies);
        for (role, n) in [
            ("owned", counts.owned),
            ("replica", counts.replica),
            ("other", counts.other),
        ] {
            self.sessions
                .get_or_create(&RoleLabels { role })
                .set(n as i64);
        }
        let mut by_status = [("joining", 0i64), ("ready", 0), ("leaving", 0), ("down", 0)];
        for m in members {
            let key = if !m.live {
                "down"
            } else {
                m.member.status.as_str()
            };
            if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == key) {
                slot.1 += 1;
            }
        }
        for (status, n) in by_status {
            self.members.get_or_create(&StatusLabels { status }).set(n);
        }
        self.ring_members.set(view.ring.nodes().len() as i64);
    }

    /// Copies the replication layer's counters (its single source of truth)
    /// into the exported families.
    fn mirror(&self, replication: &Replication) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let set = |counter: &Counter, value: u64| counter.inner().store(value, Ordering::Relaxed);
        let stats = replication.stats();
        let progress = replication.progress();
        set(&self.replication_writes, load(&stats.replicated));
        set(&self.replication_failures, load(&stats.replica_failures));
        set(&self.handoff_sessions_sent, load(&progress.moved_total));
        set(
            &self.handoff_sessions_received,
            load(&stats.copies_received),
        );
        let running = u64::from(progress.running.load(Ordering::Relaxed));
        let (done, incomplete) = (load(&progress.passes), load(&progress.incomplete_passes));
        set(&self.handoffs_started, done + incomplete + running);
        set(&self.handoffs_completed, done);
        set(&self.handoffs_failed, incomplete);
        let pending = if running == 1 {
            load(&progress.to_move).saturating_sub(load(&progress.moved) + load(&progress.failed))
        } else {
            0
        };
        self.handoff_pending_sessions.set(pending as i64);
        set(&self.repair_sessions, load(&stats.hints_delivered));
        set(&self.takeover_sessions, load(&stats.takeovers));
        set(&self.read_through, load(&stats.read_throughs));
        set(&self.pauses, load(&stats.pauses));
        set(&self.doubted_sessions, load(&stats.doubted_copies));
        set(&self.stale_writes, load(&stats.stale_writes));
        set(&self.anti_entropy_rounds, load(&stats.anti_entropy_rounds));
        set(&self.outbox_overflows, load(&stats.outbox_overflows));
        set(
            &self.copies_refused_leaving,
            load(&stats.copies_refused_leaving),
        );
        set(
            &self.writes_without_lease,
            load(&stats.writes_without_lease),
        );
        set(
            &self.anti_entropy_sessions,
            load(&stats.anti_entropy_copies),
        );
        set(&self.refused_copies, load(&stats.refused_copies));
    }

    /// Copies the gossip socket's drop counters (every reason, zeros included).
    fn mirror_gossip_drops(&self) {
        let Some(drops) = &self.gossip_drops else {
            return;
        };
        for reason in DropReason::ALL {
            self.gossip_dropped
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .inner()
                .store(drops.get(reason), Ordering::Relaxed);
        }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Monotonic counters for the dashboard, which derives rates from them.
    pub fn stats(&self) -> Stats {
        let forward = |outcome: ForwardOutcome| {
            self.forwards
                .get(&OutcomeLabels {
                    outcome: outcome.label(),
                })
                .map_or(0, |c| c.get())
        };
        let ok = forward(ForwardOutcome::Ok);
        let failures = forward(ForwardOutcome::Unavailable) + forward(ForwardOutcome::Failed);
        Stats {
            requests: self.totals.requests.load(Ordering::Relaxed),
            client_errors: self.totals.client_errors.load(Ordering::Relaxed),
            server_errors: self.totals.server_errors.load(Ordering::Relaxed),
            forwards: ok + failures,
            forward_failures: failures,
            forward_seconds: self.totals.forward_micros.load(Ordering::Relaxed) as f64 / 1e6,
            replication_writes: self.replication_writes.get(),
            replication_failures: self.replication_failures.get(),
            handoff_sessions_sent: self.handoff_sessions_sent.get(),
            handoff_sessions_received: self.handoff_sessions_received.get(),
            handoff_pending_sessions: self.handoff_pending_sessions.get(),
            repair_sessions: self.repair_sessions.get(),
            takeover_sessions: self.takeover_sessions.get(),
            read_through: self.read_through.get(),
            ring_changes: self.ring_changes.get(),
        }
    }
}

/// Sessions held here by role, as in `/api/cluster`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub owned: u64,
    pub replica: u64,
    pub other: u64,
}

/// Counts the live sessions in `store` by this node's place in their preference
/// list of `copies` nodes: first (owned), later (replica), absent (other: held
/// here but placed elsewhere by the current ring, e.g. during a handoff).
pub fn session_counts(ring: &Ring, store: &Store, self_id: &str, copies: usize) -> SessionCounts {
    let mut counts = SessionCounts::default();
    store.for_each_live(now_millis(), |id| {
        match ring
            .preference_list(id.as_bytes(), copies)
            .position(|n| &**n == self_id)
        {
            Some(0) => counts.owned += 1,
            Some(_) => counts.replica += 1,
            None => counts.other += 1,
        }
    });
    counts
}

/// Counts ring changes until the membership's view stream ends (at gossip
/// shutdown). The caller owns the task.
pub async fn count_ring_changes(node: Arc<Node>, mut views: watch::Receiver<Arc<ClusterView>>) {
    let mut ring = views.borrow_and_update().ring.clone();
    let stop = node.stop_token().clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = views.changed() => if changed.is_err() { return },
        }
        let next = views.borrow_and_update().ring.clone();
        if !Arc::ptr_eq(&ring, &next) {
            node.metrics().ring_changes.inc();
            ring = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_prefixed_and_requests_use_the_pattern() {
        let m = Metrics::new("n1");
        m.observe_request(
            Listener::Public,
            "GET",
            Some("/api/sessions/{id}".into()),
            200,
            Duration::from_millis(2),
        );
        m.observe_request(Listener::Public, "GET", None, 404, Duration::ZERO);
        m.observe_request(Listener::Public, "BREW", None, 405, Duration::ZERO);
        m.observe_forward(ForwardOutcome::Ok, Duration::from_millis(1));
        m.observe_forward(ForwardOutcome::Unavailable, Duration::ZERO);
        m.replication_writes.inc();
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"sessionmesh_http_requests_total{listener="public",method="GET",route="/api/sessions/{id}",status="200"} 1"#
        ), "{text}");
        assert!(text.contains(r#"route="unmatched",status="404"} 1"#));
        assert!(text.contains(r#"method="other",route="unmatched",status="405"} 1"#));
        assert!(text.contains(r#"sessionmesh_forwards_total{outcome="ok"} 1"#));
        assert!(text.contains("sessionmesh_forward_duration_seconds_bucket"));
        assert!(text.contains("sessionmesh_replication_writes_total 1"));
        assert!(text.contains(r#"sessionmesh_node_info{node_id="n1""#));
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("sessionmesh_"), "{line}");
        }
        let stats = m.stats();
        assert_eq!(
            (
                stats.requests,
                stats.client_errors,
                stats.forwards,
                stats.forward_failures
            ),
            (3, 2, 2, 1)
        );
    }
}
