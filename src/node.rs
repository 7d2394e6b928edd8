//! A sessionmesh node: start-up in order, graceful leave in reverse order.
//!
//! Start: bind the listeners (port 0 allowed), start gossip as `joining`, start the
//! public and internal HTTP servers and the expiry purge, then announce `ready`.
//! Leave: announce `leaving` (peers drop the node from their rings and `/readyz`
//! turns 503), keep serving for a few gossip rounds, stop the HTTP servers letting
//! in-flight requests finish, then stop the purge task and gossip.
//!
//! Either HTTP listener serves TLS when the configuration carries certificates
//! ([`crate::tls`]); the limits (request timeout, connections, headers) are the
//! same on both kinds.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Signer;
use crate::config::Config;
use crate::cookie::CookieCodec;
use crate::http;
use crate::membership::{ClusterView, Membership, MembershipConfig, Status};
use crate::metrics::{self, Metrics};
use crate::peer_client::PeerClient;
use crate::replication::client::InternalClient;
use crate::replication::{Replication, ReplicationConfig, FALLBACKS};
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
    status: AtomicU8,
    metrics: Metrics,
    /// How this node dials peers' internal listeners (plain HTTP or mutual TLS).
    transport: PeerTransport,
    /// Cancelled when an operator asks this node to leave (`POST /api/admin/leave`).
    leave: CancellationToken,
    /// Cancelled when the listeners stop: the peer links served here close (an
    /// upgraded connection would otherwise hold the graceful stop for its grace).
    link_stop: CancellationToken,
}

impl Node {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Cancelled when this node's listeners stop: peer links served here close.
    pub fn link_stop(&self) -> &CancellationToken {
        &self.link_stop
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cookies(&self) -> &CookieCodec {
        &self.cookies
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

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

    async fn set_status(&self, status: Status) {
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

/// The addresses a started node actually listens on.
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub gossip: SocketAddr,
}

/// A running node and the handles to stop it.
pub struct NodeHandle {
    node: web::Data<Node>,
    addrs: BoundAddrs,
    public: ServerHandle,
    internal: ServerHandle,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    purge_stop: CancellationToken,
    purge: JoinHandle<()>,
    /// Counts ring changes; ends when gossip shuts down.
    ring_counter: JoinHandle<()>,
}

impl NodeHandle {
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Leaves the cluster gracefully (see the module doc); bounded by
    /// `shutdown_grace` plus gossip shutdown.
    pub async fn shutdown(self) {
        let grace = self.node.config.shutdown_grace;
        let started = std::time::Instant::now();
        tracing::info!(node = %self.node.id, "leaving the cluster");
        self.node.set_status(Status::Leaving).await;
        // Hand every session to the holders of a ring without this node, while
        // still serving (requests that reach us are served, or forwarded).
        let handed_off = self.node.replication.wait_handed_off(grace).await;
        if !handed_off {
            tracing::warn!(node = %self.node.id, ?grace, "handoff did not finish within shutdown_grace");
        }
        // Keep serving while peers learn, through gossip, to route elsewhere.
        let rounds =
            (self.node.config.gossip_interval * 3).min(grace.saturating_sub(started.elapsed()));
        tokio::time::sleep(rounds).await;
        // Stop accepting; in-flight requests finish within `shutdown_grace`.
        self.node.link_stop.cancel();
        tokio::join!(self.public.stop(true), self.internal.stop(true));
        for server in self.servers {
            let _ = server.await;
        }
        self.node.replication.shutdown().await;
        self.purge_stop.cancel();
        let _ = self.purge.await;
        self.node.membership.shutdown().await;
        let _ = self.ring_counter.await;
        tracing::info!(node = %self.node.id, "left the cluster");
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("binding the {what} listener on {addr}"))
}

/// A concrete gossip port: chitchat binds its own socket and must advertise the
/// port it binds, so a requested port 0 is resolved here first.
fn gossip_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let socket =
        UdpSocket::bind(addr).with_context(|| format!("finding a free gossip port on {addr}"))?;
    Ok(socket.local_addr()?)
}

/// Starts a node. Returns once it serves and has announced itself `ready`.
pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
    let public_listener = bind_tcp(config.public_addr, "public")?;
    let internal_listener = bind_tcp(config.internal_addr, "internal")?;
    let public_addr = public_listener.local_addr()?;
    let internal_addr = internal_listener.local_addr()?;
    let generation = unix_nanos();

    let public_advertise = config.advertised_addr(public_addr);
    let internal_advertise = config.advertised_addr(internal_addr);
    let transport = PeerTransport::new(&config);

    // Gossip: when the port was chosen for us, a race with another process for it
    // is possible between probing and chitchat's bind; retry with a new port.
    let mut attempt = 0;
    let (membership, gossip_addr) = loop {
        attempt += 1;
        let gossip_listen = gossip_port(config.gossip_addr)?;
        let gossip_advertise = {
            let host = config.advertised_addr(gossip_listen);
            let candidates = host.clone();
            tokio::task::spawn_blocking(move || candidates.to_socket_addrs().map(|mut a| a.next()))
                .await?
                .with_context(|| format!("resolving the advertised gossip address {host}"))?
                .with_context(|| {
                    format!("the advertised gossip address {host} resolves to no address")
                })?
        };
        let membership_config = MembershipConfig {
            node_id: config.node_id.clone(),
            generation,
            cluster_id: config.cluster_id.clone(),
            gossip_listen,
            gossip_advertise,
            seeds: config.seeds.clone(),
            gossip_interval: config.gossip_interval,
            dead_node_grace: config.dead_node_grace,
            public_advertise: public_advertise.clone(),
            internal_advertise: internal_advertise.clone(),
            vnodes: config.vnodes.get(),
            ring_copies: config.replication_factor.get() + FALLBACKS,
            initial_status: Status::Joining,
            signer: Signer::new(config.cluster_secret.clone()),
            transport: transport.clone(),
        };
        match Membership::start(membership_config).await {
            Ok(m) => break (m, gossip_listen),
            Err(e) if config.gossip_addr.port() == 0 && attempt < 5 => {
                tracing::debug!(error = %e, "gossip port taken, trying another");
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(node = %config.node_id, generation, gossip = %gossip_addr, seeds = ?config.seeds, "gossip started");

    let id: NodeId = config.node_id.as_str().into();
    let signer = Signer::new(config.cluster_secret.clone());
    let store = Arc::new(Store::default());
    let replication = Replication::start(
        id.clone(),
        ReplicationConfig {
            replication_factor: config.replication_factor.get(),
            timeout: config.replication_timeout,
            handoff_rate: config.handoff_rate,
            max_sessions: config.max_sessions,
            // The others need several gossip intervals to declare a node dead.
            pause_threshold: (config.gossip_interval * 2).max(Duration::from_millis(200)),
        },
        store.clone(),
        membership.view_cell().clone(),
        membership.subscribe(),
        InternalClient::new(
            id.clone(),
            signer.clone(),
            config.forward_timeout,
            &transport,
        )?,
    )
    .context("starting the pause watch thread")?;
    let node = web::Data::new(Node {
        cookies: CookieCodec::new(&config),
        signer,
        id: id.clone(),
        generation,
        store,
        membership,
        replication,
        status: AtomicU8::new(0),
        metrics: Metrics::new(&config.node_id),
        leave: CancellationToken::new(),
        link_stop: CancellationToken::new(),
        transport,
        config,
    });
    let workers = node.config.workers;
    let grace = node.config.shutdown_grace.as_secs().max(1);
    let forward_timeout = node.config.forward_timeout;
    let max_forwards = node.config.max_forwards;
    let max_connections = node.config.max_connections;
    let request_timeout = node.config.request_timeout;
    let public_tls = node
        .config
        .public_tls
        .as_ref()
        .map(|tls| tls.server_config());
    let internal_tls = node
        .config
        .internal_tls
        .as_ref()
        .map(|tls| tls.server_config());

    // Called on each HTTP worker thread as it starts: the worker's log lines
    // belong to the span the node was started in (local-cluster's per-node
    // span), if any.
    let log_span = tracing::Span::current();
    let peer_client = {
        let node = node.clone();
        move || -> web::Data<PeerClient> {
            log_on_this_thread_in(&log_span);
            let client = PeerClient::new(
                node.id.clone(),
                node.signer.clone(),
                forward_timeout,
                max_forwards,
                &node.transport,
            )
            .expect("the peer client was built once before the servers started");
            web::Data::new(client)
        }
    };
    // Fail here, not in a worker thread, if the peer client cannot be built.
    PeerClient::new(
        id.clone(),
        node.signer.clone(),
        forward_timeout,
        max_forwards,
        &node.transport,
    )
    .context("building the client for peers")?;
    let public_server = {
        let node = node.clone();
        let peer_client = peer_client.clone();
        let server = HttpServer::new(move || http::public_app(node.clone(), peer_client()))
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(grace)
            // Longer than common client pools keep idle connections (browsers,
            // load balancers), so that the server rarely closes one under a request.
            .keep_alive(Duration::from_secs(30))
            // A client must send its request head within this, and idle or
            // half-open connections are bounded in number.
            .client_request_timeout(request_timeout)
            .max_connections(max_connections)
            // Answers leave in one segment or more without waiting on Nagle
            // (a streamed answer is written in several pieces).
            .tcp_nodelay(true);
        match public_tls {
            Some(tls) => server.listen_rustls_0_23(public_listener, tls)?,
            None => server.listen(public_listener)?,
        }
        .run()
    };
    let internal_server = {
        let node = node.clone();
        let server = HttpServer::new(move || http::internal_app(node.clone(), peer_client()))
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(grace)
            // Longer than the peers' pool idle timeout, so that a pooled
            // connection is never closed under a request.
            .keep_alive(Duration::from_secs(75))
            .client_request_timeout(request_timeout)
            .max_connections(max_connections)
            .tcp_nodelay(true);
        match internal_tls {
            Some(tls) => server.listen_rustls_0_23(internal_listener, tls)?,
            None => server.listen(internal_listener)?,
        }
        .run()
    };
    let public = public_server.handle();
    let internal = internal_server.handle();
    let servers = vec![tokio::spawn(public_server), tokio::spawn(internal_server)];

    let purge_stop = CancellationToken::new();
    let purge = tokio::spawn(purge_loop(node.clone(), purge_stop.clone()));
    let ring_counter = tokio::spawn(metrics::count_ring_changes(
        node.clone().into_inner(),
        node.membership.subscribe(),
    ));

    if !node.config.seeds.is_empty() {
        wait_for_peers(&node).await;
    }
    node.set_status(Status::Ready).await;
    if !wait_in_own_ring(&node).await {
        tracing::warn!(node = %id, "announced ready but not in its own ring yet: /readyz answers 503 until it is");
    }
    let addrs = BoundAddrs {
        public: public_addr,
        internal: internal_addr,
        gossip: gossip_addr,
    };
    tracing::info!(
        node = %id,
        public = %public_addr,
        internal = %internal_addr,
        gossip = %gossip_addr,
        advertised_public = %public_advertise,
        advertised_internal = %internal_advertise,
        replication_factor = node.config.replication_factor.get(),
        public_scheme = %node.config.public_scheme(),
        internal_scheme = %node.config.internal_scheme(),
        "node ready: open {}",
        node.config.public_scheme().url(&public_advertise, "/")
    );
    Ok(NodeHandle {
        node,
        addrs,
        public,
        internal,
        servers,
        purge_stop,
        purge,
        ring_counter,
    })
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
async fn wait_for_peers(node: &Node) {
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
async fn wait_in_own_ring(node: &Node) -> bool {
    let bound = (node.config.gossip_interval * 20).max(Duration::from_secs(2));
    let mut views = node.membership.subscribe();
    let in_ring = tokio::time::timeout(bound, views.wait_for(|v| v.ring.contains(&node.id)));
    let in_ring = matches!(in_ring.await, Ok(Ok(_)));
    in_ring
}

/// Removes expired sessions, one store shard per tick; after a sweep over every
/// shard that removed anything, gives the freed memory back to the system.
async fn purge_loop(node: web::Data<Node>, stop: CancellationToken) {
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
/// glibc's malloc gives back only the free memory at the top of a heap; the rest
/// stays in its arenas, so after sessions expire a node's RSS stays at its peak.
/// Measured by `tests/chaos.rs` (debug build): 21 MB at start, 86 to 95 MB once
/// every session had expired; with this, 27 to 39 MB. Once per purge sweep (10 s)
/// at most, and only after one that removed something.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs a node until `shutdown` resolves or an operator asks it to leave, then
/// leaves gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let handle = start(config).await?;
    tokio::select! {
        _ = shutdown => {}
        _ = handle.node().leave_requested() => {}
    }
    handle.shutdown().await;
    Ok(())
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
