//! Cluster membership over chitchat gossip, published as immutable [`ClusterView`]s.
//!
//! Each node gossips its advertised addresses and [`Status`]; the failure detector
//! decides liveness. A background task turns every change of chitchat's live-node
//! set into a typed view (one member per node id, highest generation wins) and a
//! ring of the `ready` members, rebuilt only when that set changes. Request handlers
//! read the current view through an `ArcSwap`: no lock on the hot path.
//!
//! Gossip travels sealed with the cluster secret ([`gossip`]): chitchat only
//! ever reads datagrams from holders of the secret, and a member they announce
//! still enters no ring before it proved the secret on its internal listener
//! ([`admission`]).

mod admission;
pub mod gossip;
mod member;

use admission::Admission;
pub use admission::{prove, Proof, ADMISSION_PATH};

pub use member::{
    latest_generations, live_members, Member, Status, KEY_HANDED_OFF, KEY_INTERNAL_ADDR,
    KEY_PUBLIC_ADDR, KEY_STATUS,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use gossip::{GossipDrops, GossipKeys, SealedTransport};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ring::{NodeId, Ring};

/// How often a node resolves its seeds again and gossips to any address that is no
/// live member. chitchat itself re-resolves DNS seeds only once a minute.
const SEED_RETRY: Duration = Duration::from_secs(2);
/// Bound on one DNS lookup of a seed.
const SEED_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the dead-node list is looked at even when the live set is quiet.
const MISSING_RECHECK: Duration = Duration::from_secs(1);

/// The nodes of `ringed` (seen in this node's ring and still known to
/// chitchat) that are out of the ring now without having announced `leaving`:
/// those chitchat holds dead (not live under another generation either), and
/// those still live that this node no longer admits (it cannot reach them: a
/// partition may cut TCP before gossip notices); with their last internal
/// address. `ringed` forgets the nodes chitchat forgot (after
/// `dead_node_grace`).
fn missing_members(
    chitchat: &chitchat::Chitchat,
    live: &HashMap<NodeId, Member>,
    admitted: &BTreeSet<NodeId>,
    ringed: &mut BTreeSet<NodeId>,
) -> BTreeMap<NodeId, String> {
    let known: BTreeSet<&str> = chitchat
        .node_states()
        .keys()
        .map(|id| &id.node_id[..])
        .collect();
    ringed.retain(|node| known.contains(node.as_ref()));
    let dead = chitchat
        .dead_nodes()
        .filter(|id| !live.contains_key(&id.node_id[..]) && ringed.contains(&id.node_id[..]))
        .filter_map(|id| {
            let state = chitchat.node_state(id)?;
            let leaving = state.get(KEY_STATUS) == Some(Status::Leaving.as_str());
            let internal = state.get(KEY_INTERNAL_ADDR)?;
            (!leaving).then(|| (NodeId::from(&id.node_id[..]), internal.to_owned()))
        });
    let unreachable = live
        .values()
        .filter(|m| {
            ringed.contains(&m.node_id)
                && !admitted.contains(&m.node_id)
                && m.status == Status::Ready
        })
        .map(|m| (m.node_id.clone(), m.internal_addr.clone()));
    dead.chain(unreachable).collect()
}

/// What membership needs to start.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub node_id: String,
    pub generation: u64,
    pub cluster_id: String,
    pub gossip_listen: SocketAddr,
    pub gossip_advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub dead_node_grace: Duration,
    pub public_advertise: String,
    pub internal_advertise: String,
    pub vnodes: u32,
    /// How many distinct nodes per key the ring precomputes (replicas and fallbacks).
    pub ring_copies: usize,
    pub initial_status: Status,
    /// Signs admission challenges and checks the proofs (the cluster secret);
    /// the gossip keys are derived from its secrets.
    pub signer: crate::auth::Signer,
    /// How admission challenges reach members' internal listeners.
    pub transport: crate::tls::PeerTransport,
}

/// One immutable snapshot of the cluster as this node sees it.
#[derive(Debug)]
pub struct ClusterView {
    pub self_id: NodeId,
    /// Live members, latest generation of each node id.
    pub members: HashMap<NodeId, Member>,
    /// The members that proved the cluster secret (only they enter the ring).
    pub admitted: BTreeSet<NodeId>,
    /// The ring of the `ready` members.
    pub ring: Arc<Ring>,
    /// The ring before the last change of the ready set (for read-through).
    pub previous_ring: Arc<Ring>,
    /// Nodes that were in this node's ring and are now dead without having
    /// announced `leaving` (crashed, cut off, or this node was paused), for
    /// `dead_node_grace`. Writers count them when deciding how many copies an
    /// acknowledgement needs; read-through still asks them (at their last
    /// internal address): they may be alive while this node cannot tell.
    pub missing: BTreeMap<NodeId, String>,
}

impl ClusterView {
    fn build(
        self_id: NodeId,
        members: HashMap<NodeId, Member>,
        admitted: BTreeSet<NodeId>,
        missing: BTreeMap<NodeId, String>,
        previous: Option<&ClusterView>,
        vnodes: u32,
        copies: usize,
    ) -> ClusterView {
        let ready: BTreeSet<NodeId> = members
            .values()
            .filter(|m| m.status == Status::Ready && admitted.contains(&m.node_id))
            .map(|m| m.node_id.clone())
            .collect();
        let (ring, previous_ring) = match previous {
            Some(prev) if prev.ring.nodes().iter().eq(ready.iter()) => {
                (prev.ring.clone(), prev.previous_ring.clone())
            }
            Some(prev) => (
                Arc::new(Ring::new(ready, vnodes, copies)),
                prev.ring.clone(),
            ),
            None => {
                let ring = Arc::new(Ring::new(ready, vnodes, copies));
                (ring.clone(), ring)
            }
        };
        ClusterView {
            self_id,
            members,
            admitted,
            ring,
            previous_ring,
            missing,
        }
    }

    /// Whether `next` differs from `self` in anything a reader sees.
    fn same_as(&self, next: &ClusterView) -> bool {
        self.members == next.members
            && self.admitted == next.admitted
            && self.missing == next.missing
            && Arc::ptr_eq(&self.ring, &next.ring)
    }

    /// Whether the ring is a majority of the nodes this node knows of: the
    /// ring's and the missing ones (vanished without leaving, counted until
    /// `dead_node_grace`). Without it, this node may be on the minority side
    /// of a partition, where the other side may have taken its sessions over.
    pub fn quorum(&self) -> bool {
        let ring = self.ring.nodes().len();
        ring * 2 > ring + self.missing.len()
    }

    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members.get(node_id)
    }

    /// The internal address of a live member, or the last one of a missing node.
    pub fn internal_addr(&self, node_id: &str) -> Option<&str> {
        match self.members.get(node_id) {
            Some(m) => Some(&m.internal_addr),
            None => self.missing.get(node_id).map(String::as_str),
        }
    }
}

/// A member as `/api/cluster` reports it: live or not.
#[derive(Clone, Debug, Serialize)]
pub struct MemberReport {
    #[serde(flatten)]
    pub member: Member,
    pub live: bool,
    /// Proved the cluster secret to this node.
    pub admitted: bool,
}

/// The running membership service.
pub struct Membership {
    chitchat: Arc<ChitchatHandle>,
    /// Gossip datagrams dropped before chitchat read them, by reason.
    drops: Arc<GossipDrops>,
    view: Arc<ArcSwap<ClusterView>>,
    changes: watch::Receiver<Arc<ClusterView>>,
    stop: CancellationToken,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    seed_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Membership {
    /// Starts gossip on `config.gossip_listen` and the view-publishing task.
    pub async fn start(config: MembershipConfig) -> anyhow::Result<Membership> {
        let self_id: NodeId = config.node_id.as_str().into();
        let chitchat_id = ChitchatId::new(
            config.node_id.clone(),
            config.generation,
            config.gossip_advertise,
        );
        let failure_detector_config = FailureDetectorConfig {
            // Lower than chitchat's default of 8 so that a dead node is noticed in
            // seconds; heartbeats arrive every gossip interval.
            phi_threshold: 6.0,
            sampling_window_size: 1_000,
            max_interval: Duration::from_secs(10),
            initial_interval: config.gossip_interval,
            dead_node_grace_period: config.dead_node_grace,
        };
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config,
            marked_for_deletion_grace_period: config.dead_node_grace,
            catchup_callback: None,
            // Half-known nodes (without addresses and status) are never live.
            extra_liveness_predicate: Some(Box::new(|state| {
                state.contains_key(KEY_PUBLIC_ADDR)
                    && state.contains_key(KEY_INTERNAL_ADDR)
                    && state.contains_key(KEY_STATUS)
            })),
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_PUBLIC_ADDR.to_owned(), config.public_advertise.clone()),
            (
                KEY_INTERNAL_ADDR.to_owned(),
                config.internal_advertise.clone(),
            ),
            (
                KEY_STATUS.to_owned(),
                config.initial_status.as_str().to_owned(),
            ),
        ];
        let drops = Arc::new(GossipDrops::default());
        let transport = SealedTransport::new(GossipKeys::new(&config.signer), drops.clone());
        let chitchat = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .with_context(|| format!("starting gossip on {}", config.gossip_listen))?;
        let chitchat = Arc::new(chitchat);

        let copies = config.ring_copies.max(1);
        let mut admission = Admission::new(
            (self_id.clone(), config.generation),
            config.cluster_id.clone(),
            config.signer.clone(),
            &config.transport,
        )?;
        let first = {
            let cc = chitchat.chitchat();
            let guard = cc.lock().await;
            let live = guard.live_nodes_watcher().borrow().clone();
            let mut members = live_members(&live);
            // Until the first gossip round, the live set may not include ourselves yet.
            members.entry(self_id.clone()).or_insert_with(|| Member {
                node_id: self_id.clone(),
                generation: config.generation,
                public_addr: config.public_advertise.clone(),
                internal_addr: config.internal_advertise.clone(),
                gossip_addr: config.gossip_advertise,
                status: config.initial_status,
                handed_off: false,
            });
            admission.schedule(&members);
            let admitted = BTreeSet::from([self_id.clone()]);
            Arc::new(ClusterView::build(
                self_id.clone(),
                members,
                admitted,
                BTreeMap::new(),
                None,
                config.vnodes,
                copies,
            ))
        };
        let view = Arc::new(ArcSwap::new(first.clone()));
        let (tx, changes) = watch::channel(first);
        let stop = CancellationToken::new();
        let mut live_rx = chitchat.chitchat().lock().await.live_nodes_watcher();
        let seed_task = (!config.seeds.is_empty()).then(|| {
            tokio::spawn(gossip_to_new_seed_addresses(
                chitchat.clone(),
                live_rx.clone(),
                config.seeds.clone(),
                [config.gossip_listen, config.gossip_advertise],
                stop.clone(),
            ))
        });
        let task = tokio::spawn({
            let view = view.clone();
            let stop = stop.clone();
            let vnodes = config.vnodes;
            let chitchat = chitchat.clone();
            // Dead nodes leave chitchat's lists after the grace period without
            // any change of the live set: look again now and then.
            let mut recheck = tokio::time::interval(MISSING_RECHECK);
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Nodes seen in this node's ring (and still known to chitchat).
            let mut ringed: BTreeSet<NodeId> = BTreeSet::new();
            async move {
                loop {
                    let retry = admission.next_retry();
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        changed = live_rx.changed() => if changed.is_err() { break },
                        admitted = admission.next_result() => if !admitted { continue },
                        _ = recheck.tick() => {}
                        _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {}
                    }
                    let members = live_members(&live_rx.borrow_and_update());
                    admission.schedule(&members);
                    let admitted: BTreeSet<NodeId> = members
                        .values()
                        .filter(|m| admission.admitted(m))
                        .map(|m| m.node_id.clone())
                        .collect();
                    let missing = {
                        let cc = chitchat.chitchat();
                        let guard = cc.lock().await;
                        missing_members(&guard, &members, &admitted, &mut ringed)
                    };
                    let previous = view.load_full();
                    let next = ClusterView::build(
                        self_id.clone(),
                        members,
                        admitted,
                        missing,
                        Some(&previous),
                        vnodes,
                        copies,
                    );
                    if previous.same_as(&next) {
                        continue;
                    }
                    ringed.extend(next.ring.nodes().iter().cloned());
                    let next = Arc::new(next);
                    log_changes(&previous, &next);
                    view.store(next.clone());
                    let _ = tx.send(next);
                }
            }
        });
        Ok(Membership {
            chitchat,
            drops,
            view,
            changes,
            stop,
            task: parking_lot::Mutex::new(Some(task)),
            seed_task: parking_lot::Mutex::new(seed_task),
        })
    }

    /// This node's gossip heartbeat: it grows with every gossip round.
    pub async fn heartbeat(&self) -> u64 {
        let cc = self.chitchat.chitchat();
        let mut guard = cc.lock().await;
        guard.self_node_state().heartbeat().into()
    }

    /// Gossip datagrams this node dropped, by reason.
    pub fn gossip_drops(&self) -> Arc<GossipDrops> {
        self.drops.clone()
    }

    /// The current view (cheap: an atomic load).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// The shared cell holding the current view, for hot paths that want `load()`.
    pub fn view_cell(&self) -> &Arc<ArcSwap<ClusterView>> {
        &self.view
    }

    /// A stream of views, for waiting on a condition.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.changes.clone()
    }

    /// Gossips a new status for this node.
    pub async fn set_status(&self, status: Status) {
        self.chitchat
            .with_chitchat(|c| c.self_node_state().set(KEY_STATUS, status.as_str()))
            .await;
    }

    /// Gossips that this leaving node's last handoff pass is over (see
    /// [`Member::handed_off`]).
    pub async fn set_handed_off(&self) {
        self.chitchat
            .with_chitchat(|c| c.self_node_state().set(KEY_HANDED_OFF, "true"))
            .await;
    }

    /// Every node gossip knows of, live or not (the latest generation of each).
    pub async fn report(&self) -> Vec<MemberReport> {
        let view = self.view();
        self.chitchat
            .with_chitchat(|c| {
                let live: std::collections::HashSet<ChitchatId> = c.live_nodes().cloned().collect();
                let known = latest_generations(c.node_states().iter());
                let mut out: Vec<MemberReport> = known
                    .into_values()
                    .map(|member| {
                        let is_live = live.iter().any(|id| {
                            *id.node_id == *member.node_id && id.generation_id == member.generation
                        });
                        let admitted = view.admitted.contains(&member.node_id)
                            && view
                                .member(&member.node_id)
                                .is_some_and(|m| m.generation == member.generation);
                        MemberReport {
                            member,
                            live: is_live,
                            admitted,
                        }
                    })
                    .collect();
                out.sort_by(|a, b| a.member.node_id.cmp(&b.member.node_id));
                out
            })
            .await
    }

    /// Stops gossip at once, without waiting (a mesh dropped without
    /// [`Membership::shutdown`]).
    pub fn stop_now(&self) {
        self.stop.cancel();
        for task in [self.task.lock().take(), self.seed_task.lock().take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.chitchat.abort();
    }

    /// Stops publishing views and shuts gossip down.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = [self.task.lock().take(), self.seed_task.lock().take()];
        for task in tasks.into_iter().flatten() {
            let _ = task.await;
        }
        if self.chitchat.initiate_shutdown().is_ok() {
            if let Err(error) = self.chitchat.termination_watcher().await {
                tracing::warn!(%error, "gossip did not shut down cleanly");
            }
        }
    }
}

/// Every [`SEED_RETRY`], resolves the seeds and gossips to each address they name
/// that is not a live member yet.
///
/// chitchat resolves DNS seeds when it starts and then only once a minute. Containers
/// started together (compose, a StatefulSet's pods behind a headless service) often
/// start before their peers' names resolve, and a seed that starts after the others
/// may list only itself: without this, such nodes stay apart for up to a minute.
/// Once every seed address is a live member this costs a DNS lookup per seed a tick.
async fn gossip_to_new_seed_addresses(
    chitchat: Arc<ChitchatHandle>,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    seeds: Vec<String>,
    own: [SocketAddr; 2],
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(SEED_RETRY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for seed in &seeds {
            let lookup = tokio::net::lookup_host(seed.as_str());
            let addrs = match tokio::time::timeout(SEED_LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => addrs,
                Ok(Err(error)) => {
                    tracing::debug!(%seed, %error, "seed does not resolve");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%seed, "seed lookup timed out");
                    continue;
                }
            };
            let unknown: Vec<SocketAddr> = {
                let live = live.borrow();
                addrs
                    .filter(|addr| !own.contains(addr))
                    .filter(|addr| !live.keys().any(|id| id.gossip_advertise_addr == *addr))
                    .collect()
            };
            for addr in unknown {
                tracing::debug!(%seed, %addr, "gossiping to a seed address that is no live member");
                if chitchat.gossip(addr).is_err() {
                    // The gossip server has stopped: shutting down.
                    return;
                }
            }
        }
    }
}

/// Logs how the members and the ring changed, one line each. Lines about other
/// members only: this node's own life (start, ready, leave) is logged by the node,
/// and at start the first views may not list it yet.
fn log_changes(previous: &ClusterView, next: &ClusterView) {
    let peer = |id: &&NodeId| **id != next.self_id;
    for (id, member) in next.members.iter().filter(|(id, _)| peer(id)) {
        match previous.members.get(id) {
            None => {
                tracing::info!(node = %id, generation = member.generation, status = %member.status, "member joined")
            }
            Some(old) if old.generation != member.generation => {
                tracing::info!(node = %id, generation = member.generation, "member restarted")
            }
            Some(old) if old.status != member.status => {
                tracing::info!(node = %id, from = %old.status, to = %member.status, "member status changed")
            }
            _ => {}
        }
    }
    for id in previous.members.keys().filter(peer) {
        if !next.members.contains_key(id) {
            tracing::info!(node = %id, "member gone");
        }
    }
    if !Arc::ptr_eq(&previous.ring, &next.ring) {
        tracing::info!(
            members = next.ring.nodes().len(),
            fingerprint = next.ring.fingerprint(),
            "ring changed"
        );
    }
}
