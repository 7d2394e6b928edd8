//! The handle an application holds: [`Mesh`], a running node of the cluster
//! and the typed session operations on it.
//!
//! A mesh owns everything of a node except the application's own HTTP server:
//! gossip membership, the ring, replication and handoff, peer links and the
//! internal listener peers talk to. Its operations ([`Mesh::get`],
//! [`Mesh::create`], [`Mesh::replace`], [`Mesh::merge_patch`],
//! [`Mesh::delete`], [`Mesh::touch`], [`Mesh::renew`], ...) reach the
//! session's holders by the routing rules of [`crate::routing`]: served here
//! when this node owns the session, else sent once over a peer link to the
//! owner (or, when the owner cannot be reached, to the replica that takes
//! over), which executes it from its memory. Errors are one typed [`Error`],
//! whichever node refused.
//!
//! START, in order (each step undone if a later one fails): bind the internal
//! listener, start gossip as `joining`, start replication (and its pause
//! watch), serve the internal listener, start the expiry purge, wait until the
//! member list has settled, announce `ready`.
//!
//! STOP, in reverse: [`Mesh::leave`] announces `leaving` (peers drop the node
//! from their rings), hands every session to its new holders while still
//! serving, and waits a few gossip rounds; [`Mesh::shutdown`] then stops the
//! internal listener, replication, the purge and gossip. Dropping the last
//! clone of a mesh that was not shut down stops all of it at once, without
//! the handoff.

mod document;
mod error;
mod peers;
mod serve;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use anyhow::Context;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use document::{Document, IfMatch};
pub use error::Error;

pub(crate) use document::{to_data, DocumentWire};
pub(crate) use error::ErrorWire;
pub(crate) use peers::{ENTRY_NODE, FORWARD_PREFIX};
pub(crate) use serve::merge_patch;

use crate::auth::Signer;
use crate::config::Config;
use crate::http;
use crate::membership::{Membership, MembershipConfig, Status};
use crate::metrics::{self, ForwardOutcome};
use crate::node::{self, Node};
use crate::protocol::{Field, Request};
use crate::replication::client::InternalClient;
use crate::replication::{Replication, ReplicationConfig, FALLBACKS};
use crate::ring::NodeId;
use crate::routing::{self, Target};
use crate::session::{SessionId, Store};
use crate::tls::PeerTransport;
use peers::{Asked, Peers};

tokio::task_local! {
    /// Set while a request that a peer forwarded over HTTP is served: its
    /// operations are served here, never sent on (one hop).
    static FROM_PEER: ();
}

/// Runs `f` as the service of a request a peer forwarded: every operation it
/// makes is served by this node.
pub(crate) async fn from_peer<F: Future>(f: F) -> F::Output {
    FROM_PEER.scope((), f).await
}

fn serving_a_peer() -> bool {
    FROM_PEER.try_with(|_| ()).is_ok()
}

/// A running node of a sessionmesh cluster, and the session operations on it.
/// Cheap to clone; every clone is the same node.
///
/// A lone node on loopback (a cluster of one; with `seeds`, it joins others):
///
/// ```
/// use sessionmesh::{Config, Error, IfMatch, Mesh};
///
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let any = "127.0.0.1:0".parse()?;
/// let config = Config {
///     public_addr: any,
///     internal_addr: any,
///     gossip_addr: any,
///     ..Config::default() // or Config::load(&args): flags, SESSIONMESH_*, a TOML file
/// };
/// let mesh = Mesh::start(config).await?;
///
/// let session = mesh.create(serde_json::json!({"user": "ada"}), None).await?;
/// let read = mesh.get(&session.id).await?;
/// assert_eq!(read.get::<String>("user")?.as_deref(), Some("ada"));
///
/// // Writes may name the version they expect (HTTP's If-Match).
/// let patched = mesh
///     .merge_patch(&session.id, serde_json::json!({"cart": [1, 2]}), session.version)
///     .await?;
/// assert_eq!(patched.version, 2);
/// let stale = mesh.replace(&session.id, serde_json::json!({}), session.version).await;
/// assert_eq!(stale.unwrap_err(), Error::PreconditionFailed { current: 2 });
///
/// mesh.delete(&session.id, IfMatch::any()).await?;
/// assert_eq!(mesh.get(&session.id).await.unwrap_err(), Error::NotFound);
/// mesh.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mesh {
    node: Arc<Node>,
    /// `None` for the handle the internal listener's handlers get: they must
    /// not keep the node alive (nor stop it).
    life: Option<Arc<Life>>,
}

/// What stops with the last clone of a [`Mesh`].
struct Life {
    node: Arc<Node>,
    internal: ServerHandle,
    /// The internal server, the purge and the ring-change counter.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises `leave` and `shutdown` (and makes them idempotent).
    lifecycle: tokio::sync::Mutex<Phase>,
    stopped: AtomicBool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Running,
    Left,
    Stopped,
}

impl Drop for Life {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        // Dropped without `shutdown`: stop everything now, without the handoff.
        // The tasks end on the cancelled token; the internal server's task
        // ends once it has processed the stop command (sent at once: the
        // returned future only waits for it), which aborting it would prevent.
        self.node.stop_token().cancel();
        self.node.link_stop().cancel();
        drop(self.internal.stop(false));
        self.node.replication().stop_now();
        self.node.membership().stop_now();
        self.tasks.lock().clear();
    }
}

/// Why a mesh could not start. Nothing it started is left running.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct StartError(anyhow::Error);

impl StartError {
    pub(crate) fn new(message: String) -> StartError {
        StartError(anyhow::anyhow!(message))
    }
}

/// Starts a [`Mesh`]: the configuration, plus what only the application knows.
///
/// ```no_run
/// # async fn example(config: sessionmesh::Config) -> Result<(), sessionmesh::StartError> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let mesh = sessionmesh::Mesh::builder(config)
///     .public_addr(listener.local_addr().unwrap())
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct MeshBuilder {
    config: Config,
    public_addr: Option<SocketAddr>,
    forwarded_routes: Option<ForwardedRoutes>,
    fail_after: Option<&'static str>,
}

/// The application's routes, served to peers that forward whole requests.
pub(crate) type ForwardedRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

impl MeshBuilder {
    /// The address the application's public HTTP server listens on, when it is
    /// not `config.public_addr` (it bound port 0, say). Peers and operators
    /// see it (advertised with `advertise_host`).
    pub fn public_addr(mut self, addr: SocketAddr) -> MeshBuilder {
        self.public_addr = Some(addr);
        self
    }

    /// Routes served under `/fwd` on the internal listener, for peers of
    /// versions that forward whole HTTP requests (before operation frames):
    /// during a rolling upgrade they forward the requests of these routes. The
    /// JSON session API is always served there.
    pub fn forwarded_routes(
        mut self,
        routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> MeshBuilder {
        self.forwarded_routes = Some(Arc::new(routes));
        self
    }

    /// Fails the start right after `step` (one of the step names logged at
    /// start), to test that a failed start leaves nothing running.
    #[doc(hidden)]
    pub fn fail_after(mut self, step: &'static str) -> MeshBuilder {
        self.fail_after = Some(step);
        self
    }

    /// Starts the node (see the module doc for the steps) and returns once it
    /// is `ready`. On error, whatever was started is stopped again.
    pub async fn start(self) -> Result<Mesh, StartError> {
        start(self).await.map_err(StartError)
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

/// What a start has brought up so far: stopped in reverse order when a later
/// step fails.
#[derive(Default)]
struct Started {
    membership: Option<Membership>,
    replication: Option<Replication>,
    internal: Option<(ServerHandle, JoinHandle<()>)>,
}

impl Started {
    async fn undo(self) {
        if let Some((handle, task)) = self.internal {
            handle.stop(false).await;
            let _ = task.await;
        }
        if let Some(replication) = self.replication {
            replication.shutdown().await;
        }
        if let Some(membership) = self.membership {
            membership.shutdown().await;
        }
    }
}

async fn start(builder: MeshBuilder) -> anyhow::Result<Mesh> {
    let MeshBuilder {
        config,
        public_addr,
        forwarded_routes,
        fail_after,
    } = builder;
    let mut started = Started::default();
    match start_steps(
        config,
        public_addr,
        forwarded_routes,
        fail_after,
        &mut started,
    )
    .await
    {
        Ok(mesh) => Ok(mesh),
        Err(error) => {
            started.undo().await;
            Err(error)
        }
    }
}

fn step(name: &'static str, fail_after: Option<&'static str>) -> anyhow::Result<()> {
    tracing::debug!(step = name, "started");
    match fail_after == Some(name) {
        true => anyhow::bail!("stopped after {name}, as asked"),
        false => Ok(()),
    }
}

async fn start_steps(
    config: Config,
    public_addr: Option<SocketAddr>,
    forwarded_routes: Option<ForwardedRoutes>,
    fail_after: Option<&'static str>,
    started: &mut Started,
) -> anyhow::Result<Mesh> {
    let internal_listener = TcpListener::bind(config.internal_addr)
        .with_context(|| format!("binding the internal listener on {}", config.internal_addr))?;
    let internal_addr = internal_listener.local_addr()?;
    let public_addr = public_addr.unwrap_or(config.public_addr);
    let generation = unix_nanos();
    let public_advertise = config.advertised_addr(public_addr);
    let internal_advertise = config.advertised_addr(internal_addr);
    let transport = PeerTransport::new(&config);
    step("internal listener bound", fail_after)?;

    // Gossip: when the port was chosen for us, a race with another process for it
    // is possible between probing and chitchat's bind; retry with a new port.
    let mut attempt = 0;
    let (membership, gossip_addr) = loop {
        attempt += 1;
        let gossip_listen = gossip_port(config.gossip_addr)?;
        let gossip_advertise = {
            let host = config.advertised_addr(gossip_listen);
            match host.parse::<SocketAddr>() {
                Ok(addr) => addr,
                // A name: resolved off the runtime's threads.
                Err(_) => {
                    let candidates = host.clone();
                    tokio::task::spawn_blocking(move || {
                        candidates.to_socket_addrs().map(|mut a| a.next())
                    })
                    .await?
                    .with_context(|| format!("resolving the advertised gossip address {host}"))?
                    .with_context(|| {
                        format!("the advertised gossip address {host} resolves to no address")
                    })?
                }
            }
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
            signer: Signer::for_cluster(&config),
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
    let views = membership.subscribe();
    let view_cell = membership.view_cell().clone();
    started.membership = Some(membership);
    step("gossip started", fail_after)?;

    let id: NodeId = config.node_id.as_str().into();
    let signer = Signer::for_cluster(&config);
    let store = Arc::new(Store::new(config.max_session_bytes));
    let stop = CancellationToken::new();
    let replication = Replication::start(
        id.clone(),
        ReplicationConfig {
            replication_factor: config.replication_factor.get(),
            timeout: config.replication_timeout,
            handoff_rate: config.handoff_rate,
            max_sessions: config.max_sessions,
            // The others need several gossip intervals to declare a node dead.
            pause_threshold: (config.gossip_interval * 2).max(Duration::from_millis(200)),
            // Several gossip intervals, at least a second: a grant outlives a
            // few lost renewals, and takeover after a crash waits at most this.
            lease_term: (config.gossip_interval * 4).max(Duration::from_secs(1)),
            // Ten gossip intervals (5 s by default), at least a second: a lost
            // copy comes back within (ring members - 1) of these.
            anti_entropy_interval: (config.gossip_interval * 10).max(Duration::from_secs(1)),
        },
        store.clone(),
        view_cell,
        views.clone(),
        InternalClient::new(
            id.clone(),
            signer.clone(),
            config.forward_timeout,
            &transport,
            stop.child_token(),
        )?,
    )
    .context("starting the pause watch thread")?;
    started.replication = Some(replication.clone());
    step("replication started", fail_after)?;

    let membership = started
        .membership
        .take()
        .context("gossip was started above")?;
    let node = Arc::new(Node::new(
        config,
        id.clone(),
        generation,
        [internal_addr, gossip_addr],
        store,
        membership,
        replication,
        signer,
        transport,
        stop,
    ));
    // From here the node owns gossip and replication: stopped through it.
    started.replication = None;
    let internal = match serve_internal(&node, internal_listener, forwarded_routes) {
        Ok(internal) => internal,
        Err(error) => {
            stop_node(&node).await;
            return Err(error);
        }
    };
    let internal_handle = internal.0.clone();
    started.internal = Some(internal);
    if let Err(error) = step("internal listener serving", fail_after) {
        if let Some(internal) = started.internal.take() {
            Started {
                internal: Some(internal),
                ..Started::default()
            }
            .undo()
            .await;
        }
        stop_node(&node).await;
        return Err(error);
    }
    let (_, server_task) = started
        .internal
        .take()
        .context("the internal listener was started above")?;
    let purge = tokio::spawn(node::purge_loop(node.clone()));
    let ring_counter = tokio::spawn(metrics::count_ring_changes(node.clone(), views));
    let mesh = Mesh {
        node: node.clone(),
        life: Some(Arc::new(Life {
            node: node.clone(),
            internal: internal_handle,
            tasks: Mutex::new(vec![server_task, purge, ring_counter]),
            lifecycle: tokio::sync::Mutex::new(Phase::Running),
            stopped: AtomicBool::new(false),
        })),
    };

    if !node.config().seeds.is_empty() {
        node::wait_for_peers(&node).await;
    }
    node.set_status(Status::Ready).await;
    // Logged once `/readyz` answers 200: in its own ring, which its `ready`
    // status reaches with the next round of gossip.
    if !node::wait_in_own_ring(&node).await {
        tracing::warn!(node = %id, "announced ready but not in its own ring yet: /readyz answers 503 until it is");
    }
    tracing::info!(
        node = %id,
        public = %public_addr,
        internal = %internal_addr,
        gossip = %gossip_addr,
        advertised_public = %public_advertise,
        advertised_internal = %internal_advertise,
        replication_factor = node.config().replication_factor.get(),
        public_scheme = %node.config().public_scheme(),
        internal_scheme = %node.config().internal_scheme(),
        "node ready: open {}",
        node.config().public_scheme().url(&public_advertise, "/")
    );
    Ok(mesh)
}

/// Stops a node whose start failed after it took over gossip and replication.
async fn stop_node(node: &Node) {
    node.stop_token().cancel();
    node.replication().shutdown().await;
    node.membership().shutdown().await;
}

/// Serves the internal listener (peers only, every request signed).
fn serve_internal(
    node: &Arc<Node>,
    listener: TcpListener,
    forwarded_routes: Option<ForwardedRoutes>,
) -> anyhow::Result<(ServerHandle, JoinHandle<()>)> {
    let config = node.config();
    let tls = config.internal_tls.as_ref().map(|tls| tls.server_config());
    let data = web::Data::from(node.clone());
    let server =
        HttpServer::new(move || http::internal_app(data.clone(), forwarded_routes.clone()))
            .workers(config.workers)
            .disable_signals()
            .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
            // Longer than the peers' pool idle timeout, so that a pooled
            // connection is never closed under a request.
            .keep_alive(Duration::from_secs(75))
            .client_request_timeout(config.request_timeout)
            .max_connections(config.max_connections)
            .tcp_nodelay(true);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    let task = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the internal listener stopped with an error");
        }
    });
    Ok((handle, task))
}

/// Session operations.
impl Mesh {
    /// Starts a node with `config` (see [`MeshBuilder`] for more settings).
    pub async fn start(config: Config) -> Result<Mesh, StartError> {
        Mesh::builder(config).start().await
    }

    /// A builder for a node with `config`.
    pub fn builder(config: Config) -> MeshBuilder {
        MeshBuilder {
            config,
            public_addr: None,
            forwarded_routes: None,
            fail_after: None,
        }
    }

    /// The session `id`. Slides its expiry.
    pub async fn get(&self, id: &SessionId) -> Result<Document, Error> {
        self.document(Request::Get { id: *id }).await
    }

    /// A new session holding `data` (a JSON object), expiring after `ttl` idle
    /// (`session_ttl` when `None`). Its id is one this node owns, so that its
    /// next requests need no hop.
    pub async fn create(
        &self,
        data: impl Serialize,
        ttl: Option<Duration>,
    ) -> Result<Document, Error> {
        let data = to_data(&data)?;
        self.document(Request::Create {
            data,
            ttl_ms: ttl.map(|t| t.as_millis() as u64),
        })
        .await
    }

    /// Stores `data` under `id`, replacing whatever is there or creating it.
    /// For stores whose caller names the keys (tower-sessions); applications
    /// should let [`Mesh::create`] mint ids.
    pub async fn put(
        &self,
        id: &SessionId,
        data: impl Serialize,
        ttl: Option<Duration>,
    ) -> Result<Document, Error> {
        let data = to_data(&data)?;
        self.document(Request::Put {
            id: *id,
            data,
            ttl_ms: ttl.map(|t| t.as_millis() as u64),
        })
        .await
    }

    /// Replaces the session's data, if it is at a version `if_match` allows.
    pub async fn replace(
        &self,
        id: &SessionId,
        data: impl Serialize,
        if_match: impl Into<IfMatch>,
    ) -> Result<Document, Error> {
        let data = to_data(&data)?;
        self.document(Request::Replace {
            id: *id,
            data,
            if_match: if_match.into().versions().to_vec(),
        })
        .await
    }

    /// Applies an RFC 7386 JSON merge patch (a JSON object: `null` removes a
    /// field, objects merge, anything else replaces) to the session's data, if
    /// it is at a version `if_match` allows.
    pub async fn merge_patch(
        &self,
        id: &SessionId,
        patch: impl Serialize,
        if_match: impl Into<IfMatch>,
    ) -> Result<Document, Error> {
        let patch = to_data(&patch)?;
        self.document(Request::Merge {
            id: *id,
            patch,
            if_match: if_match.into().versions().to_vec(),
        })
        .await
    }

    /// Deletes the session, if it is at a version `if_match` allows.
    pub async fn delete(&self, id: &SessionId, if_match: impl Into<IfMatch>) -> Result<(), Error> {
        match self
            .execute(Request::Delete {
                id: *id,
                if_match: if_match.into().versions().to_vec(),
            })
            .await?
        {
            None => Ok(()),
            Some(_) => Err(Error::Failed(
                "the holder answered a session to a deletion".into(),
            )),
        }
    }

    /// Slides the session's expiry; with `ttl`, gives it a new idle timeout.
    pub async fn touch(&self, id: &SessionId, ttl: Option<Duration>) -> Result<Document, Error> {
        self.document(Request::Touch {
            id: *id,
            ttl_ms: ttl.map(|t| t.as_millis() as u64),
        })
        .await
    }

    /// The session's data under a new id (one this node owns), the old id
    /// deleted: what a login does against session fixation. A write to the old
    /// id that lands meanwhile is carried over; a deletion wins.
    pub async fn renew(&self, id: &SessionId) -> Result<Document, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let old = self.get(id).await?;
            let (version, ttl) = (old.version, old.ttl);
            let fresh = self
                .document(Request::Create {
                    data: old.into_data(),
                    ttl_ms: Some(ttl.as_millis() as u64),
                })
                .await?;
            match self.delete(id, version).await {
                Ok(()) => return Ok(fresh),
                // Written meanwhile: again, from the newer data.
                Err(Error::PreconditionFailed { .. }) if tries < 3 => {
                    let _ = self.delete(&fresh.id, IfMatch::any()).await;
                }
                Err(error) => {
                    let _ = self.delete(&fresh.id, IfMatch::any()).await;
                    return Err(error);
                }
            }
        }
    }

    /// An optimistic transaction on top-level fields (see
    /// [`crate::protocol::Request::Commit`]).
    pub(crate) async fn commit(
        &self,
        id: &SessionId,
        base: u64,
        reads: Vec<Field>,
        writes: Vec<Field>,
        clear: bool,
    ) -> Result<Document, Error> {
        self.document(Request::Commit {
            id: *id,
            base,
            reads,
            writes,
            clear,
        })
        .await
    }

    async fn document(&self, request: Request) -> Result<Document, Error> {
        self.execute(request)
            .await?
            .ok_or_else(|| Error::Failed("the holder answered a deletion".into()))
    }

    /// Executes `request` where the routing rules say (see [`crate::routing`]).
    pub(crate) async fn execute(&self, request: Request) -> Result<Option<Document>, Error> {
        let node = &self.node;
        let from_peer = serving_a_peer();
        let view = node.view();
        let random;
        let key = match request.id() {
            Some(id) => id.as_bytes(),
            // A creation is served here when this node can own the new id.
            None if from_peer || view.ring.is_empty() || view.ring.contains(node.id()) => {
                return node.serve(request, None).await;
            }
            // Else by the owner of a random id, which mints one of its own.
            None => {
                random = SessionId::random();
                random.as_bytes()
            }
        };
        let copies = node.config().replication_factor.get();
        let mut failure = None;
        let plan = routing::plan(&view.ring, key, node.id(), copies, from_peer);
        // Served here as the owner under this ring: the lease check needs no
        // second ring lookup.
        let owned = routing::owned_here(&plan, &view.ring, from_peer).then_some(&view.ring);
        for target in plan {
            if failure.is_some() {
                // The owner (or an earlier holder) is down: a replica takes over.
                let stats = node.replication().stats();
                stats.takeovers.fetch_add(1, Ordering::Relaxed);
            }
            let holder = match target {
                Target::Here => return node.serve(request, owned).await,
                Target::Peer(holder) => holder,
            };
            let Some(addr) = view.internal_addr(holder) else {
                continue;
            };
            let started = Instant::now();
            let asked = Peers::of(node)?.ask(node, holder, addr, &request).await;
            let outcome = match &asked {
                Asked::Answered(_) => ForwardOutcome::Ok,
                Asked::Failed(routing::Failure::Unreachable, _) => ForwardOutcome::Unavailable,
                Asked::Failed(..) => ForwardOutcome::Failed,
            };
            node.metrics().observe_forward(outcome, started.elapsed());
            match asked {
                Asked::Answered(answer) => return answer,
                Asked::Failed(kind, error) if routing::try_next(kind, request.is_read()) => {
                    failure = Some(error)
                }
                Asked::Failed(_, error) => return Err(error),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => node.serve(request, None).await,
        }
    }
}

/// The node and its life.
impl Mesh {
    /// A handle for this crate's handlers on the internal listener: it neither
    /// keeps the node running nor stops it.
    pub(crate) fn detached(node: Arc<Node>) -> Mesh {
        Mesh { node, life: None }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    /// The address the internal listener is bound to.
    pub fn internal_addr(&self) -> SocketAddr {
        self.node.bound().0
    }

    /// The address gossip is bound to.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.node.bound().1
    }

    /// Whether this node is `ready` in its own ring (what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.node.status() == Status::Ready && self.node.view().ring.contains(self.node.id())
    }

    /// Resolves when an operator asked this node to leave (`sessionmesh leave`,
    /// `POST /api/admin/leave`): the application should then shut down.
    pub async fn leave_requested(&self) {
        self.node.leave_requested().await
    }

    /// Leaves the cluster gracefully while still serving: announces `leaving`
    /// (peers drop this node from their rings), hands every session to its
    /// new holders (bounded by `shutdown_grace`), then waits a few gossip
    /// rounds for peers to route elsewhere. Stop the application's server
    /// after it, then call [`Mesh::shutdown`]. Later calls return at once.
    pub async fn leave(&self) {
        let Some(life) = &self.life else { return };
        let mut phase = life.lifecycle.lock().await;
        if *phase != Phase::Running {
            return;
        }
        let node = &self.node;
        let grace = node.config().shutdown_grace;
        let started = Instant::now();
        tracing::info!(node = %node.id(), "leaving the cluster");
        node.set_status(Status::Leaving).await;
        match node.replication().wait_handed_off(grace).await {
            // Read-through on the others stops asking this node.
            true => node.membership().set_handed_off().await,
            false => {
                tracing::warn!(node = %node.id(), ?grace, "handoff did not finish within shutdown_grace")
            }
        }
        let rounds =
            (node.config().gossip_interval * 3).min(grace.saturating_sub(started.elapsed()));
        tokio::time::sleep(rounds).await;
        *phase = Phase::Left;
    }

    /// Leaves (see [`Mesh::leave`]) if it has not, then stops the internal
    /// listener, replication, the expiry purge and gossip. Operations that
    /// need a peer fail with [`Error::Unavailable`] afterwards. Later calls
    /// return at once.
    pub async fn shutdown(&self) {
        let Some(life) = &self.life else { return };
        self.leave().await;
        let mut phase = life.lifecycle.lock().await;
        if *phase == Phase::Stopped {
            return;
        }
        let node = &self.node;
        node.link_stop().cancel();
        life.internal.stop(true).await;
        node.stop_token().cancel();
        node.replication().shutdown().await;
        let tasks: Vec<JoinHandle<()>> = life.tasks.lock().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        node.membership().shutdown().await;
        life.stopped.store(true, Ordering::Release);
        *phase = Phase::Stopped;
        tracing::info!(node = %node.id(), "left the cluster");
    }

    /// The node's shared state, for this crate's adapters.
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.node_id())
            .field("internal_addr", &self.internal_addr())
            .field("gossip_addr", &self.gossip_addr())
            .finish()
    }
}

/// The [`Mesh`] in a request's app data, put there as it is
/// (`.app_data(mesh.clone())`) or as actix-web's shared state
/// (`.app_data(web::Data::new(mesh.clone()))`).
pub(crate) fn from_app_data(req: &actix_web::HttpRequest) -> Option<Mesh> {
    req.app_data::<Mesh>().cloned().or_else(|| {
        req.app_data::<actix_web::web::Data<Mesh>>()
            .map(|data| data.get_ref().clone())
    })
}

/// A handler argument: the [`Mesh`] the application put in its app data
/// (`App::new().app_data(mesh.clone())`, or in a `web::Data`).
impl actix_web::FromRequest for Mesh {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Mesh, actix_web::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(from_app_data(req).ok_or_else(|| {
            actix_web::error::ErrorInternalServerError(
                "no sessionmesh::Mesh in the app data: add .app_data(mesh.clone()) to the App",
            )
        }))
    }
}
