//! Keeping every session on `replication_factor` nodes: the owner's write path,
//! read-through on a miss, and (in [`rebalance`]) handoff and repair after the
//! ring changes.
//!
//! WRITES. The node that serves a write (the owner, or during a ring change the
//! node a forwarded request landed on) applies it locally, under the store's
//! shard lock, which serialises writes to one session and bumps its version.
//! It then sends the resulting copy to the other nodes of the session's
//! preference list, and acknowledges the client once `replication_factor - 1` of
//! them confirmed (fewer only when the ring has fewer nodes). A replica that does
//! not answer within `replication_timeout` is replaced for that write by the next
//! distinct node clockwise (the node that takes its place if it is dead), and the
//! missed copy is remembered as a hint, retried until it lands or the replica
//! leaves the ring. If even the fallbacks cannot make up the count, the client
//! gets a 503 `replication_failed`: the write is applied on the owner but not
//! acknowledged. So an acknowledged write is always on `replication_factor`
//! nodes, and a single crash never loses it.
//!
//! Copies travel whole (not as operations) and every receiver merges them with
//! [`Entry::supersedes`], so reordering, duplicates and retries are harmless.
//!
//! Requests and batches to one peer go through one queue and one task: whatever
//! piled up while the previous batch was in flight leaves in the next request.
//!
//! A replica whose copy wins over the one it is sent (the writer acted on a
//! stale copy: it was paused, or the ring was changing) answers with its copy
//! instead of a plain confirmation. The writer then takes that copy in place of
//! its own and refuses the write (503 `stale_copy`): nothing written on stale
//! data is acknowledged. Nor does a writer acknowledge a write with fewer than
//! `replication_factor` copies while ring members it knew are missing without
//! having left: a node cut off from the others must not take itself for the
//! whole cluster.
//!
//! READ-THROUGH. When a node must serve a session it does not hold (it just
//! joined or restarted, or the ring is changing), or holds only a copy in doubt
//! (it was paused, see [`pause`]), it asks the other holders under the current
//! and the previous ring before answering, and keeps the best copy.

pub mod anti_entropy;
pub mod client;
pub mod core;
pub mod lease;
pub mod pause;
mod rebalance;
mod sync;

pub(crate) use sync::digest as anti_entropy_digest;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::core::{doubt, Delivery, ReadThrough, Step, Verdict, WriteRound};
use crate::membership::ClusterView;
use crate::ring::{NodeId, Ring};
use crate::session::{
    now_millis, replica_copy, Change, Entry, Known, Merged, Record, Session, SessionId, Store,
    WriteError,
};
use client::{InternalClient, PeerError};
use lease::{LeaseView, Leases, Serve};
use pause::PauseDetector;

pub use self::core::FALLBACKS;
pub use rebalance::HandoffProgress;
/// Most records in one replication request.
const MAX_BATCH: usize = 512;

/// Copies waiting for one peer, at most. A peer that falls this far behind (it
/// is slow or frozen) gets further copies as hints: session ids, one per
/// session, re-sent whole once it answers again, so that expiry refreshes of one
/// session coalesce instead of piling up; a write waiting for it moves on to a
/// stand-in at once.
pub const OUTBOX_JOBS: usize = 4096;

/// Why an owner-side operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(
        "the write was applied here but only {acked} of {required} other copies were confirmed"
    )]
    Replication { acked: usize, required: usize },
    #[error("this node holds its maximum of {max} sessions")]
    Full { max: usize },
    /// A holder that might hold a newer copy could not be asked.
    #[error("a node that may hold this session could not be reached; retry")]
    Unreachable,
    /// This node did not get the lease a write needs in time (see
    /// [`lease`]): another node may be serving the session.
    #[error("this node does not hold the ownership lease for this session yet; retry")]
    NoLease,
    #[error(
        "this node's copy of the session was stale (a replica holds version {newer}); it has been refreshed, retry"
    )]
    Stale { newer: u64 },
}

/// What became of a batch of copies received from a peer ([`Replication::apply`]).
pub struct Applied {
    /// Copies that changed the store.
    pub applied: usize,
    /// This node's copy wherever it wins over the one received.
    pub superseded: Vec<Record>,
    /// Ids of copies refused because their data is over `max_session_bytes`.
    pub refused: Vec<String>,
    /// Whether every copy was refused because this node is leaving.
    pub leaving: bool,
}

/// Counters shown in `/api/cluster` (and exported as metrics).
#[derive(Default, Serialize)]
pub struct ReplicationStats {
    /// Copies confirmed by replicas for client writes.
    pub replicated: AtomicU64,
    /// Replica deliveries that failed (each leaves a hint).
    pub replica_failures: AtomicU64,
    /// Writes that used a fallback node in place of a failed replica.
    pub fallbacks: AtomicU64,
    /// Writes refused because too few copies were confirmed.
    pub refused_writes: AtomicU64,
    /// Misses looked up on other holders, and how many found a copy.
    pub read_throughs: AtomicU64,
    pub read_through_hits: AtomicU64,
    /// Hinted copies delivered late.
    pub hints_delivered: AtomicU64,
    /// Copies received from peers (replication and handoff), and how many changed the store.
    pub copies_received: AtomicU64,
    pub copies_applied: AtomicU64,
    /// Requests an entry node sent to the next holder because the owner was unreachable.
    pub takeovers: AtomicU64,
    /// Writes refused because a replica held a newer copy than the writer.
    pub stale_writes: AtomicU64,
    /// Copies from peers refused because their data is over `max_session_bytes`.
    pub refused_copies: AtomicU64,
    /// Operations that asked the other holders because this node's lease
    /// did not cover the session, and writes that waited for a grant to end.
    pub lease_read_throughs: AtomicU64,
    pub lease_waits: AtomicU64,
    /// Writes refused because this node did not get the lease for the
    /// session within two terms.
    pub writes_without_lease: AtomicU64,
    /// Times this process was found paused, and copies put in doubt then.
    pub pauses: AtomicU64,
    pub doubted_copies: AtomicU64,
    /// Anti-entropy rounds completed with a peer, and copies they sent
    /// because the peer lacked them or held another version.
    pub anti_entropy_rounds: AtomicU64,
    pub anti_entropy_copies: AtomicU64,
    /// Writes refused because this node's ring was no majority of the nodes
    /// it knows (it may be on the minority side of a partition).
    pub no_quorum: AtomicU64,
    /// Copies not queued because the peer's outbox was full ([`OUTBOX_JOBS`]):
    /// kept as hints instead.
    pub outbox_overflows: AtomicU64,
    /// Copies from peers refused because this node was leaving.
    pub copies_refused_leaving: AtomicU64,
}

/// Settings of the replication layer.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub replication_factor: usize,
    pub timeout: Duration,
    /// Handoff throttle, in copies sent per second.
    pub handoff_rate: u32,
    /// Most entries this node holds before it refuses to create sessions
    /// (copies from peers are always taken: no acknowledged write is lost).
    pub max_sessions: usize,
    /// A stop of the whole process longer than this puts its copies in doubt
    /// (see [`pause`]); well under the time the others take to declare it dead.
    pub pause_threshold: Duration,
    /// How long an ownership lease lasts (see [`lease`]).
    pub lease_term: Duration,
    /// Time between two anti-entropy rounds (see [`anti_entropy`]).
    pub anti_entropy_interval: Duration,
}

struct Job {
    id: SessionId,
    record: Record,
    ack: Option<oneshot::Sender<Delivery>>,
}

struct Inner {
    self_id: NodeId,
    config: ReplicationConfig,
    store: Arc<Store>,
    view: Arc<ArcSwap<ClusterView>>,
    client: InternalClient,
    runtime: Handle,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Job>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Copies a peer missed: session ids per peer, retried by the rebalancer...
    hints: Mutex<HashMap<NodeId, HashSet<SessionId>>>,
    /// ...which this wakes when there are new ones (it sleeps while the
    /// ring is unchanged and nothing is pending).
    hinted: Notify,
    /// Woken whenever a new lease view is published.
    lease_published: Notify,
    stats: ReplicationStats,
    progress: HandoffProgress,
    pause: OnceLock<PauseDetector>,
    /// The ring under which copies this node regained were last put in doubt
    /// (see [`Inner::regained`]).
    doubted_for: ArcSwap<Ring>,
    /// This node's leases, changed by the lease task and peers' requests...
    leases: Mutex<Leases>,
    /// ...and what request handlers consult.
    lease_view: ArcSwap<LeaseView>,
    /// The origin of the lease clock (monotonic).
    clock: Instant,
    stop: CancellationToken,
}

/// The replication layer of a node. Cheap to clone.
#[derive(Clone)]
pub struct Replication {
    inner: Arc<Inner>,
}

impl Replication {
    /// Starts the replication layer and its rebalancer (on the current runtime,
    /// which must be the node's main runtime).
    pub fn start(
        self_id: NodeId,
        config: ReplicationConfig,
        store: Arc<Store>,
        view: Arc<ArcSwap<ClusterView>>,
        views: watch::Receiver<Arc<ClusterView>>,
        client: InternalClient,
    ) -> std::io::Result<Replication> {
        let doubted_for = ArcSwap::new(view.load().ring.clone());
        let term = config.lease_term.as_millis().max(1) as u64;
        let leases = Leases::new(
            self_id.clone(),
            term,
            term / 10 + 10,
            config.replication_factor,
            0,
        );
        let lease_view = ArcSwap::from_pointee(leases.view());
        let inner = Arc::new(Inner {
            leases: Mutex::new(leases),
            lease_view,
            clock: Instant::now(),
            doubted_for,
            self_id,
            config,
            store,
            view,
            client,
            runtime: Handle::current(),
            queues: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            hints: Mutex::new(HashMap::new()),
            hinted: Notify::new(),
            lease_published: Notify::new(),
            stats: ReplicationStats::default(),
            progress: HandoffProgress::default(),
            pause: OnceLock::new(),
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&inner);
        let detector = PauseDetector::start(inner.config.pause_threshold, move |gap| {
            if let Some(inner) = Weak::upgrade(&weak) {
                inner.paused(gap);
            }
        })?;
        let _ = inner.pause.set(detector);
        let doubter = tokio::spawn(doubt_regained_copies(inner.clone(), views.clone()));
        let leaser = tokio::spawn(renew_leases(inner.clone(), views.clone()));
        let rebalancer = tokio::spawn(rebalance::run(inner.clone(), views));
        let syncer = tokio::spawn(sync::run(inner.clone()));
        inner
            .tasks
            .lock()
            .extend([doubter, leaser, rebalancer, syncer]);
        Ok(Replication { inner })
    }

    pub fn stats(&self) -> &ReplicationStats {
        &self.inner.stats
    }

    pub fn progress(&self) -> &HandoffProgress {
        &self.inner.progress
    }

    /// Copies waiting in hints, in all.
    pub fn hints_pending(&self) -> usize {
        self.inner.hints.lock().values().map(HashSet::len).sum()
    }

    /// Waits until the rebalancer has handed off everything for a ring without
    /// this node (after it announced `leaving`), at most `timeout`. Returns
    /// whether it got there.
    pub async fn wait_handed_off(&self, timeout: Duration) -> bool {
        let mut synced = self.inner.progress.synced.subscribe();
        let me = self.inner.self_id.clone();
        let done = async {
            loop {
                if synced
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|ring| !ring.contains(&me))
                {
                    return;
                }
                if synced.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, done).await.is_ok()
    }

    /// Stops everything at once, without waiting (a mesh dropped without
    /// [`Replication::shutdown`]).
    pub fn stop_now(&self) {
        if let Some(pause) = self.inner.pause.get() {
            pause.stop();
        }
        self.inner.stop.cancel();
        self.inner.queues.lock().clear();
        for task in std::mem::take(&mut *self.inner.tasks.lock()) {
            task.abort();
        }
    }

    /// Stops the queues, the rebalancer and the pause watch.
    pub async fn shutdown(&self) {
        if let Some(pause) = self.inner.pause.get() {
            pause.stop();
        }
        self.inner.stop.cancel();
        self.inner.queues.lock().clear();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
    }

    // ---- the owner's operations ----

    /// Reads a session held here, looking it up on the other holders first when
    /// this node does not know it. `f` sees the session under the store lock.
    ///
    /// `Ok(None)` only when this node knows the session is not there (every
    /// holder it asked answered); when a holder that might have it could not
    /// be asked, [`OwnerError::Unreachable`]: the caller should retry.
    ///
    /// `owned`: the ring under which routing found this node the session's
    /// owner, if it did (it spares the lease check a ring lookup).
    pub async fn read<T>(
        &self,
        id: &SessionId,
        owned: Option<&Arc<Ring>>,
        f: impl FnOnce(&Session) -> T,
    ) -> Result<Option<T>, OwnerError> {
        self.caught_up(id, false, owned).await?;
        let store = &self.inner.store;
        let mut f = f;
        // A copy may be put in doubt again between the check and the read (a
        // lease back after a lapse doubts every copy at once, as a thawed
        // node's does): it is checked with the other holders once more before
        // the caller is told to retry.
        let mut read_throughs = 0;
        let (value, touch) = loop {
            f = match store.read(id, now_millis(), f) {
                Ok(found) => break found,
                Err(f) => f,
            };
            match store.known(id, now_millis()) {
                Known::Deleted => return Ok(None),
                // A copy arrived since the last look.
                Known::Live => {}
                // Looked up on the other holders already, and none had it.
                Known::Unknown if read_throughs > 0 && !store.has_copy(id) => return Ok(None),
                // Put in doubt again twice: not a miss, a retry.
                Known::Unknown if read_throughs == 2 => return Err(OwnerError::Unreachable),
                Known::Unknown => {
                    read_throughs += 1;
                    let complete = self.read_through(id).await;
                    if !complete && store.known(id, now_millis()) == Known::Unknown {
                        return Err(OwnerError::Unreachable);
                    }
                }
            }
        };
        if let Some(entry) = touch {
            // The expiry ran ahead of what replicas know: tell them, without waiting.
            self.inner.send_copies(id, &entry);
        }
        Ok(Some(value))
    }

    /// Creates a session under a fresh id and replicates it.
    pub async fn create(&self, id: SessionId, session: Session) -> Result<(), OwnerError> {
        let max = self.inner.config.max_sessions;
        if self.inner.store.len() >= max {
            return Err(OwnerError::Full { max });
        }
        let entry = Entry::Live(session.clone());
        self.inner.store.insert_new(id, session, now_millis())?;
        self.replicate(&id, &entry).await
    }

    /// Changes a session: `change` sees it and says what to change (or
    /// refuses); `f` sees the written session. Acknowledged once replicated.
    pub async fn write<T>(
        &self,
        id: &SessionId,
        change: impl Fn(&Session) -> Result<Change, WriteError>,
        f: impl Fn(&Session) -> T,
    ) -> Result<T, OwnerError> {
        let store = &self.inner.store;
        self.replicated_change(id, || store.write(id, now_millis(), &change, &f))
            .await
    }

    /// Stores a session under a given id, replacing whatever is held (see
    /// [`Store::put`]), and replicates it.
    pub async fn put(&self, id: SessionId, session: Session) -> Result<Session, OwnerError> {
        let store = &self.inner.store;
        if store.len() >= self.inner.config.max_sessions
            && store.known(&id, now_millis()) != Known::Live
        {
            return Err(OwnerError::Full {
                max: self.inner.config.max_sessions,
            });
        }
        self.replicated_change(&id, || {
            let (written, entry) = store.put(id, session.clone(), now_millis())?;
            Ok((written, entry))
        })
        .await
    }

    /// Deletes a session (a replicated tombstone); `check` may refuse.
    pub async fn delete(
        &self,
        id: &SessionId,
        check: impl Fn(&Session) -> Result<(), WriteError>,
    ) -> Result<(), OwnerError> {
        let store = &self.inner.store;
        self.replicated_change(id, || Ok(((), store.delete(id, now_millis(), &check)?)))
            .await
    }

    /// Applies `change` to the local copy of `id` (looked up on the other
    /// holders first when unknown or in doubt) and replicates the result. When
    /// a replica answers with a newer copy (now in place here), the change is
    /// applied once more, on top of it.
    async fn replicated_change<T>(
        &self,
        id: &SessionId,
        change: impl Fn() -> Result<(T, Entry), WriteError>,
    ) -> Result<T, OwnerError> {
        let leased_until = self.caught_up(id, true, None).await?;
        if self.inner.store.known(id, now_millis()) == Known::Unknown
            && !self.read_through(id).await
            && self.inner.store.known(id, now_millis()) == Known::Unknown
        {
            return Err(OwnerError::Unreachable);
        }
        let mut retried = false;
        let mut rechecked = false;
        loop {
            let (value, entry) = match change() {
                // Put in doubt since it was checked (a pause, or the lease
                // came back after a lapse): ask the holders again, once.
                Err(WriteError::NotFound)
                    if !rechecked && self.inner.store.known(id, now_millis()) == Known::Unknown =>
                {
                    rechecked = true;
                    if !self.read_through(id).await
                        && self.inner.store.known(id, now_millis()) == Known::Unknown
                    {
                        return Err(OwnerError::Unreachable);
                    }
                    continue;
                }
                other => other?,
            };
            match self.replicate(id, &entry).await {
                Err(OwnerError::Stale { .. }) if !retried => retried = true,
                // The round outlived the grants it began under (this process
                // stood still mid-round, say), or this node may no longer
                // serve the session (it granted a holder before it): another
                // node may have written it meanwhile, so this write is not
                // acknowledged.
                Ok(()) if !self.still_leased(id, leased_until) => {
                    self.inner
                        .stats
                        .writes_without_lease
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(OwnerError::NoLease);
                }
                outcome => return outcome.map(|()| value),
            }
        }
    }

    /// Merges a replication batch sent by a peer (JSON of [`client::Batch`]);
    /// the acknowledgement to answer (JSON of [`client::BatchAck`]).
    pub fn apply_batch(&self, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        let batch: client::Batch = serde_json::from_slice(body)?;
        let received = batch.records.len();
        let Applied {
            applied,
            superseded,
            refused,
            leaving,
        } = self.apply(batch.records);
        serde_json::to_vec(&client::BatchAck {
            received,
            applied,
            superseded,
            refused,
            leaving,
        })
    }

    /// Merges copies and writes received from a peer: how many changed the
    /// store, this node's copy wherever it wins over the one received (for a
    /// write: wherever the write does not follow it), and the ids of copies
    /// refused for their size.
    ///
    /// A node that announced `leaving` takes none: its last handoff pass may
    /// be over, and it would stop with them. A writer that has not seen the
    /// leave yet counts the refusal as a failed delivery and sends its copy to
    /// a stand-in instead.
    pub fn apply(&self, records: Vec<Record>) -> Applied {
        let now = now_millis();
        let stats = &self.inner.stats;
        stats
            .copies_received
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        if self.inner.leaving() {
            stats
                .copies_refused_leaving
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            return Applied {
                applied: 0,
                superseded: Vec::new(),
                refused: Vec::new(),
                leaving: true,
            };
        }
        let mut applied = 0;
        let mut superseded = Vec::new();
        let mut refused = Vec::new();
        for record in records {
            let write = record.write;
            let Some(id) = SessionId::parse(&record.id) else {
                continue;
            };
            let Some(entry) = record.into_entry() else {
                continue;
            };
            let store = &self.inner.store;
            let merged = if write {
                store.merge_write(id, entry, now)
            } else {
                store.merge_report(id, entry, now)
            };
            match merged {
                Merged::Applied => applied += 1,
                Merged::Ignored => {}
                Merged::Superseded(held) => {
                    superseded.push(Record::from_entry(id.as_str(), &replica_copy(&held)));
                }
                Merged::TooLarge => {
                    stats.refused_copies.fetch_add(1, Ordering::Relaxed);
                    refused.push(id.to_string());
                }
            }
        }
        stats
            .copies_applied
            .fetch_add(applied as u64, Ordering::Relaxed);
        if !refused.is_empty() {
            tracing::warn!(
                refused = refused.len(),
                max_session_bytes = self.inner.store.max_data_bytes(),
                "refused session copies larger than max_session_bytes: do all nodes have the same setting?"
            );
        }
        Applied {
            applied,
            superseded,
            refused,
            leaving: false,
        }
    }

    /// This node's copy of a session, for a peer's read-through.
    pub fn copy(&self, id: &SessionId) -> Option<Record> {
        let entry = self.inner.store.entry(id, now_millis())?;
        Some(Record::from_entry(id.as_str(), &replica_copy(&entry)))
    }

    /// Returns once a pause of the process, if one just ended, has been
    /// handled, and once this node's copy of `id` can be trusted: a copy it
    /// holds again after a ring change is looked up on the other holders first.
    ///
    /// Then the lease (see [`lease`]): when this node may not serve `id` from
    /// memory, a read asks the other holders first. A `write` is only made
    /// under the lease: it waits (at most two terms) for the grants it gave a
    /// holder before it, or under another ring, to run out, so that no node
    /// still serving by them misses it, and for the grants it needs; without
    /// them, [`OwnerError::NoLease`]. (A write after a mere read-through could
    /// race one made under the lease by another node: both could be
    /// acknowledged at one version, see [`core`]'s simulation.) When the other
    /// holders could not all be asked, the copy may not be trusted:
    /// [`OwnerError::Unreachable`].
    ///
    /// Returns, for a write, until when the grants it is made under last
    /// ([`lease::LeaseView::serve_until`]): no other node can serve `id`
    /// before then, so a write that ends before is acknowledged.
    async fn caught_up(
        &self,
        id: &SessionId,
        write: bool,
        owned: Option<&Arc<Ring>>,
    ) -> Result<lease::Millis, OwnerError> {
        if let Some(pause) = self.inner.pause.get() {
            pause.caught_up().await;
        }
        let inner = &self.inner;
        let mut asked = None;
        let mut leased_until = 0;
        // Two sides of a partition must not both take writes to one session:
        // a node that does not see a majority of the nodes it knows takes
        // none. Decided on the current membership view, not on the lease
        // task's copy of it, which may lag a lease request.
        if write && !inner.view.load().quorum() {
            inner.stats.no_quorum.fetch_add(1, Ordering::Relaxed);
            return Err(OwnerError::Unreachable);
        }
        if write {
            let deadline = inner.now_ms() + 2 * inner.leases.lock().term();
            let mut waited = false;
            loop {
                // Registered before the check, so that a view published
                // after it wakes this wait.
                let published = inner.lease_published.notified();
                let now = inner.now_ms();
                let view = inner.lease_view.load();
                let wait = match view.may_serve(id.as_bytes(), now) {
                    Serve::Now => {
                        // (`now` if it did not answer: then the write is
                        // not acknowledged, the safe side.)
                        leased_until = view.serve_until(id.as_bytes(), now).unwrap_or(now);
                        break;
                    }
                    // A grant this node gave a holder before it runs out then.
                    Serve::After(until) if until <= deadline => until - now,
                    // No grant yet (a ring change, a lapse, a new process):
                    // until the next view, or the deadline.
                    Serve::Ask if now < deadline => deadline - now,
                    Serve::After(_) | Serve::Ask => {
                        inner
                            .stats
                            .writes_without_lease
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(OwnerError::NoLease);
                    }
                };
                if !waited {
                    waited = true;
                    inner.stats.lease_waits.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tokio::time::timeout(Duration::from_millis(wait), published).await;
            }
        } else if {
            let (view, now) = (inner.lease_view.load(), inner.now_ms());
            match owned {
                Some(ring) => view.may_serve_owned(ring, id.as_bytes(), now),
                None => view.may_serve(id.as_bytes(), now),
            }
        } != Serve::Now
        {
            asked = Some(self.read_through(id).await);
        }
        let complete = match asked {
            Some(complete) => {
                inner
                    .stats
                    .lease_read_throughs
                    .fetch_add(1, Ordering::Relaxed);
                complete
            }
            None if inner.regained(id) => self.read_through(id).await,
            None => true,
        };
        match complete {
            true => Ok(leased_until),
            false => Err(OwnerError::Unreachable),
        }
    }

    /// Whether a write begun under grants that last until `leased_until`
    /// (see [`Replication::caught_up`]) may be acknowledged now: this node
    /// may still serve `id`, before then. No other node could serve it in
    /// between: they would have needed a grant this node's grantors gave it
    /// until then, or one from this node, which would have stopped it
    /// serving for a term (property-tested in [`lease`]).
    fn still_leased(&self, id: &SessionId, leased_until: lease::Millis) -> bool {
        let now = self.inner.now_ms();
        now < leased_until
            && self.inner.lease_view.load().may_serve(id.as_bytes(), now) == Serve::Now
    }

    /// Whether this node sees a majority of the nodes it knows, and so takes
    /// writes (see [`lease::LeaseView::quorum`]).
    pub fn quorum(&self) -> bool {
        self.inner.view.load().quorum()
    }

    /// A peer's anti-entropy round with this node (see [`anti_entropy`]),
    /// answered off the runtime (it walks the store).
    pub async fn sync_answer(
        &self,
        request: client::SyncRequest,
    ) -> Result<client::SyncReply, client::PeerError> {
        sync::answer_off_runtime(self.inner.clone(), request).await
    }

    /// A peer asks for a lease under `fingerprint`: the term granted, if any.
    pub fn lease_request(&self, from: &NodeId, fingerprint: &str) -> Option<u64> {
        let inner = &self.inner;
        let mut leases = inner.leases.lock();
        let granted = leases.request(from, fingerprint, inner.now_ms());
        inner.lease_view.store(Arc::new(leases.view()));
        granted
    }

    /// Whether this node serves sessions from memory now (all leases held).
    pub fn lease_held(&self) -> bool {
        let now = self.inner.now_ms();
        let view = self.inner.lease_view.load();
        now < view.held_by_all_until && now >= view.old_grants_until
    }

    /// Sends a new copy to the other holders and waits for enough of them
    /// (the decisions are [`WriteRound`]'s).
    async fn replicate(&self, id: &SessionId, entry: &Entry) -> Result<(), OwnerError> {
        let inner = &self.inner;
        let rf = inner.config.replication_factor;
        let view = inner.view.load_full();
        let mut round = WriteRound::plan(
            &view.ring,
            id.as_bytes(),
            &inner.self_id,
            rf,
            view.missing.len(),
        )
        .sending(entry);
        let record = Record {
            write: true,
            ..Record::from_entry(id.as_str(), &replica_copy(entry))
        };
        let mut step = round.start();
        let verdict = loop {
            let peers = match step {
                Step::Send(peers) => peers,
                Step::Done(verdict) => break verdict,
            };
            let (failures, stand_ins) = (round.failures(), round.stand_ins_used());
            let results = futures_util::future::join_all(
                peers
                    .iter()
                    .map(|peer| inner.deliver(peer, *id, record.clone())),
            )
            .await;
            let own = inner.store.entry(id, now_millis());
            step = round.outcomes(results, own.as_ref());
            inner
                .stats
                .replica_failures
                .fetch_add((round.failures() - failures) as u64, Ordering::Relaxed);
            inner.stats.fallbacks.fetch_add(
                (round.stand_ins_used() - stand_ins) as u64,
                Ordering::Relaxed,
            );
        };
        match verdict {
            Verdict::Acknowledged { acked } => {
                inner
                    .stats
                    .replicated
                    .fetch_add(acked as u64, Ordering::Relaxed);
                Ok(())
            }
            Verdict::Stale { newer } => {
                // This node wrote on a stale copy: take the newer one instead,
                // and do not acknowledge.
                inner.stats.stale_writes.fetch_add(1, Ordering::Relaxed);
                let version = newer.version();
                inner.store.replace_own(*id, entry, newer);
                Err(OwnerError::Stale { newer: version })
            }
            Verdict::Failed { acked, required } => {
                inner
                    .stats
                    .replicated
                    .fetch_add(acked as u64, Ordering::Relaxed);
                inner.stats.refused_writes.fetch_add(1, Ordering::Relaxed);
                Err(OwnerError::Replication { acked, required })
            }
        }
    }

    /// Looks a session up on the other holders under the current and previous
    /// rings, and keeps the best copy found. Runs on the main runtime.
    ///
    /// Returns whether enough holders answered that one of them holds any
    /// acknowledged write (all but `replication_factor - 1`): only then is what
    /// this node holds now trusted (its doubt lifted), and a miss definitive.
    /// When the ring changed while it asked, it asks again under the new one
    /// ([`MOVED_ROUNDS`] rounds at most).
    async fn read_through(&self, id: &SessionId) -> bool {
        let inner = self.inner.clone();
        let id = *id;
        let lookup = async move {
            inner.stats.read_throughs.fetch_add(1, Ordering::Relaxed);
            let mut found = false;
            let mut complete = false;
            for _ in 0..MOVED_ROUNDS {
                let (round, moved) = inner.ask_holders(&id, &mut found).await;
                complete = round;
                if !moved {
                    break;
                }
            }
            if complete {
                // Every holder answered: what is held now is as good as theirs.
                inner.store.trust(&id);
            }
            if found {
                inner
                    .stats
                    .read_through_hits
                    .fetch_add(1, Ordering::Relaxed);
            }
            complete
        };
        self.inner.runtime.spawn(lookup).await.unwrap_or(false)
    }
}

/// Rounds of one read-through when the ring keeps changing while it asks.
const MOVED_ROUNDS: usize = 3;

impl Inner {
    /// One round of a read-through (see [`Replication::read_through`]):
    /// asks the holders under the current and previous rings, merges their
    /// copies (`found` when one changed the store), and says whether the
    /// answers make it complete, and whether the ring changed meanwhile.
    async fn ask_holders(&self, id: &SessionId, found: &mut bool) -> (bool, bool) {
        let id = *id;
        let view = self.view.load_full();
        let rf = self.config.replication_factor;
        let candidates = ReadThrough::candidates(
            &view.previous_ring,
            &view.ring,
            id.as_bytes(),
            &self.self_id,
            rf,
        );
        // A candidate with no address left gracefully (not a member, not
        // missing), and one that says its last handoff pass is over: it
        // handed its copies off, so nothing is asked of it.
        let fetches = candidates.iter().filter_map(|node| {
            if view.member(node).is_some_and(|m| m.handed_off) {
                return None;
            }
            let addr = view.internal_addr(node)?.to_owned();
            let client = self.client.clone();
            Some(async move { client.fetch(&addr, &id).await })
        });
        let answers = futures_util::future::join_all(fetches).await;
        let mut read = ReadThrough::new(rf, view.quorum());
        for answer in &answers {
            match answer {
                Ok(_) => read.answered(),
                Err(_) => read.silent(),
            }
        }
        let moved = self.view.load().ring.fingerprint() != view.ring.fingerprint();
        if moved {
            read.moved();
        }
        for answer in answers {
            let Ok(Some(record)) = answer else { continue };
            if let Some(entry) = record.into_entry() {
                *found |= self.store.merge(id, entry, now_millis());
            }
        }
        (read.complete(), moved)
    }

    /// Now on the lease clock.
    fn now_ms(&self) -> lease::Millis {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether the ring changed since copies were last put in doubt and this
    /// node holds `id` under the new ring but did not under the old one: while
    /// it did not, writes went to other nodes, so its copy may be stale. (The
    /// rebalancer marks all such copies at once, see [`Inner::doubt_regained`];
    /// this covers the moment before it has.)
    fn regained(&self, id: &SessionId) -> bool {
        let old = self.doubted_for.load();
        let view = self.view.load();
        let rf = self.config.replication_factor;
        !Arc::ptr_eq(&old, &view.ring)
            && self.store.known(id, now_millis()) == Known::Live
            && doubt::regained(&old, &view.ring, id.as_bytes(), &self.self_id, rf)
    }

    /// Puts in doubt the copies this node holds under `ring` but did not under
    /// the ring of the last call.
    fn doubt_regained(&self, ring: &Arc<Ring>) {
        let old = self.doubted_for.load_full();
        if Arc::ptr_eq(&old, ring) {
            return;
        }
        let rf = self.config.replication_factor;
        let me = &self.self_id;
        let doubted = self
            .store
            .doubt_where(|id| doubt::regained(&old, ring, id.as_bytes(), me, rf));
        self.doubted_for.store(ring.clone());
        self.stats
            .doubted_copies
            .fetch_add(doubted as u64, Ordering::Relaxed);
    }

    /// Publishes this node's lease view. When the lease comes back after a
    /// lapse, others may have taken this node's sessions over and written
    /// them meanwhile: every copy is checked with its other holders before
    /// use again (put in doubt before the view is published, so that nothing
    /// serves them first).
    fn publish_lease(&self, leases: &mut Leases) {
        let (view, regained) = leases.publish(self.now_ms());
        if regained {
            let doubted = self.store.doubt_all();
            self.stats
                .doubted_copies
                .fetch_add(doubted as u64, Ordering::Relaxed);
        }
        self.lease_view.store(Arc::new(view));
        self.lease_published.notify_waiters();
    }

    /// The pause watch found that the process stood still for `gap`.
    fn paused(&self, gap: Duration) {
        let doubted = self.store.doubt_all();
        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
        self.stats
            .doubted_copies
            .fetch_add(doubted as u64, Ordering::Relaxed);
        tracing::warn!(
            paused_ms = gap.as_millis() as u64,
            doubted,
            "this process was stopped for a while: its copies will be checked with their other holders before use"
        );
    }

    /// Queues a copy for `peer`; with `ack`, returns the receiver of its outcome.
    fn enqueue(
        self: &Arc<Self>,
        peer: &NodeId,
        id: SessionId,
        record: Record,
        ack: bool,
    ) -> Option<oneshot::Receiver<Delivery>> {
        let (tx, rx) = if ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let job = Job {
            id,
            record,
            ack: tx,
        };
        let mut queues = self.queues.lock();
        if self.stop.is_cancelled() {
            return None;
        }
        let sender = queues.entry(peer.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(OUTBOX_JOBS);
            let task = self
                .runtime
                .spawn(peer_queue(self.clone(), peer.clone(), rx));
            self.tasks.lock().push(task);
            tx
        });
        match sender.try_send(job) {
            Ok(()) => rx,
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.stats.outbox_overflows.fetch_add(1, Ordering::Relaxed);
                self.hint(peer, job.id);
                None
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                self.hint(peer, job.id);
                None
            }
        }
    }

    /// Sends a write's copy to `peer` and waits, at most the replication
    /// timeout, for what became of it: over the calling thread's own link to
    /// the peer when it has one (see [`InternalClient::push_here`]), else
    /// through the peer's queue. A copy that was not delivered is remembered as
    /// a hint either way.
    async fn deliver(self: &Arc<Self>, peer: &NodeId, id: SessionId, record: Record) -> Delivery {
        if self.stop.is_cancelled() {
            return Delivery::Failed;
        }
        if let Some(addr) = self.address(peer) {
            let records = std::slice::from_ref(&record);
            match self
                .client
                .push_here(&addr, records, self.config.timeout)
                .await
            {
                Some(Ok(ack)) => {
                    if ack.leaving || ack.refused.iter().any(|r| r == id.as_str()) {
                        return Delivery::Failed;
                    }
                    return match ack.superseded.into_iter().find(|r| r.id == id.as_str()) {
                        Some(newer) => superseded_by(newer),
                        None => Delivery::Stored,
                    };
                }
                Some(Err(_)) => {
                    self.hint(peer, id);
                    return Delivery::Failed;
                }
                // Not sent: the queue takes it (HTTP to peers without links).
                None => {}
            }
        }
        match self.enqueue(peer, id, record, true) {
            Some(rx) => tokio::time::timeout(self.config.timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Delivery::Failed),
            None => Delivery::Failed,
        }
    }

    /// Fire-and-forget copies to the other holders (expiry refreshes).
    fn send_copies(self: &Arc<Self>, id: &SessionId, entry: &Entry) {
        let rf = self.config.replication_factor;
        let view = self.view.load_full();
        let record = Record::from_entry(id.as_str(), &replica_copy(entry));
        for peer in view
            .ring
            .preference_list(id.as_bytes(), rf)
            .filter(|n| **n != self.self_id)
        {
            let _ = self.enqueue(peer, *id, record.clone(), false);
        }
    }

    /// Merges the copies a peer answered with because they beat the ones sent.
    fn take_newer(&self, records: Vec<Record>) {
        let now = now_millis();
        for record in records {
            if let (Some(id), Some(entry)) = (SessionId::parse(&record.id), record.into_entry()) {
                self.store.merge(id, entry, now);
            }
        }
    }

    /// Whether this node announced `leaving` (it is out of its own ring).
    fn leaving(&self) -> bool {
        self.view
            .load()
            .member(&self.self_id)
            .is_some_and(|m| m.status == crate::membership::Status::Leaving)
    }

    fn hint(&self, peer: &NodeId, id: SessionId) {
        self.hints
            .lock()
            .entry(peer.clone())
            .or_default()
            .insert(id);
        self.hinted.notify_one();
    }

    /// The internal address of a live member.
    fn address(&self, node: &str) -> Option<String> {
        self.view
            .load()
            .member(node)
            .map(|m| m.internal_addr.clone())
    }

    /// Sends records to a peer, with a few quick retries.
    async fn push(&self, peer: &str, records: Vec<Record>) -> Result<(), PeerError> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(addr) = self.address(peer) else {
                return Err(PeerError::Failed(format!("{peer} is not a live member")));
            };
            match self.client.push(&addr, records.clone()).await {
                Ok(ack) if ack.leaving => {
                    return Err(PeerError::Failed(format!("{peer} is leaving")));
                }
                Ok(ack) if !ack.refused.is_empty() => {
                    // Not retried: the peer's limit will not change. The copies
                    // stay here (nothing is discarded on a failed push).
                    self.take_newer(ack.superseded);
                    return Err(PeerError::Failed(format!(
                        "{peer} refused {} copies over its max_session_bytes",
                        ack.refused.len()
                    )));
                }
                Ok(ack) => {
                    self.take_newer(ack.superseded);
                    return Ok(());
                }
                Err(e) if attempt >= 3 => return Err(e),
                Err(_) => {
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(PeerError::Failed("stopping".into())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay *= 4;
                }
            }
        }
    }
}

/// The task that puts in doubt the copies held again after each ring change
/// (see [`Inner::regained`]), at once: the rebalancer may be busy with a pass.
async fn doubt_regained_copies(inner: Arc<Inner>, mut views: watch::Receiver<Arc<ClusterView>>) {
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            changed = views.changed() => if changed.is_err() { return },
        }
        let ring = views.borrow_and_update().ring.clone();
        inner.doubt_regained(&ring);
    }
}

/// The task that keeps this node's leases: asks every other ring member for a
/// grant every third of a term, and at once when the ring changes. When the
/// lease comes back after a lapse, every copy held is put in doubt (see
/// [`Store::doubt_all`]).
async fn renew_leases(inner: Arc<Inner>, mut views: watch::Receiver<Arc<ClusterView>>) {
    let every = Duration::from_millis(inner.leases.lock().renew_every());
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let view = views.borrow_and_update().clone();
        let (ask, fingerprint) = {
            let mut leases = inner.leases.lock();
            leases.ring_changed(view.ring.clone());
            leases.set_missing(view.missing.len());
            let expired_before = inner.now_ms().saturating_sub(leases.term());
            leases.expire(expired_before);
            inner.publish_lease(&mut leases);
            leases.to_ask()
        };
        let sent = inner.now_ms();
        let asks = ask.into_iter().filter_map(|peer| {
            let addr = view.internal_addr(&peer)?.to_owned();
            let (client, fingerprint) = (inner.client.clone(), fingerprint.clone());
            let me = inner.self_id.clone();
            Some(async move {
                let term = client.lease(&addr, &me, &fingerprint).await.ok().flatten();
                (peer, term)
            })
        });
        let answers = tokio::select! {
            _ = inner.stop.cancelled() => return,
            answers = futures_util::future::join_all(asks) => answers,
        };
        {
            let mut leases = inner.leases.lock();
            for (peer, term) in answers {
                if let Some(term) = term {
                    leases.granted(&peer, &fingerprint, term, sent);
                }
            }
            inner.publish_lease(&mut leases);
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = ticker.tick() => {}
            changed = views.changed() => if changed.is_err() { return },
        }
    }
}

/// What became of a write's copy that a peer answered with its own: a
/// delivery failure when that copy cannot be read.
fn superseded_by(newer: Record) -> Delivery {
    newer
        .into_entry()
        .map_or(Delivery::Failed, Delivery::Superseded)
}

/// The task that drains one peer's queue, a batch per request.
async fn peer_queue(inner: Arc<Inner>, peer: NodeId, mut rx: mpsc::Receiver<Job>) {
    loop {
        let first = tokio::select! {
            _ = inner.stop.cancelled() => return,
            job = rx.recv() => match job { Some(job) => job, None => return },
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let records: Vec<Record> = jobs
            .iter()
            .map(|j| Record {
                write: j.ack.is_some(),
                ..j.record.clone()
            })
            .collect();
        let answer = match inner.address(&peer) {
            Some(addr) => inner.client.push(&addr, records).await.ok(),
            None => None,
        };
        let ok = answer.is_some();
        let (superseded, refused, leaving) = answer
            .map(|ack| (ack.superseded, ack.refused, ack.leaving))
            .unwrap_or_default();
        let newer: HashMap<String, Record> =
            superseded.into_iter().map(|r| (r.id.clone(), r)).collect();
        for job in jobs {
            if !ok {
                inner.hint(&peer, job.id);
            }
            let refused = refused.iter().any(|r| r == job.id.as_str());
            let delivery = match newer.get(job.id.as_str()).cloned() {
                _ if !ok || refused || leaving => Delivery::Failed,
                Some(record) if job.ack.is_some() => superseded_by(record),
                Some(record) => {
                    // A refresh or handoff copy that the peer beats: learn from it.
                    inner.take_newer(vec![record]);
                    Delivery::Stored
                }
                None => Delivery::Stored,
            };
            if let Some(ack) = job.ack {
                let _ = ack.send(delivery);
            }
        }
    }
}
