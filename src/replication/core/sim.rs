//! Property tests of the replication core over a simulated network: nodes with
//! real [`Store`]s exchange copies, acknowledgements, read-through fetches and
//! handoff batches as messages that the network drops, delays, duplicates and
//! reorders; nodes are paused (their copies are put in doubt when they resume,
//! as [`super::super::pause`] does); the ring changes one member at a time
//! (a join, or a graceful leave), each node learning of it at its own moment.
//!
//! The nodes run the same decisions as the async code: [`WriteRound`] for
//! writes, [`ReadThrough`] for read-through, [`doubt::regained`] after ring
//! changes and [`HandoffPass`] for handoff. Most properties leave leases out:
//! what they check is what these decisions guarantee on their own, which is
//! what they claim (a paused or stale writer is refused, an acknowledged
//! write is on `rf` nodes). The `with_leases_` properties add them: each node
//! keeps a real [`Leases`], asks the members of its ring for grants every
//! third of a term over the same faulty network, puts its copies in doubt
//! when its lease comes back after a lapse ([`Leases::publish`]), and serves
//! as `Replication::caught_up` lets it: a write from memory under its lease,
//! after waiting (two terms at most) for grants it gave a holder before it,
//! else after a read-through; a read, routed to the owner or a taker-over,
//! from memory under its lease when its copy is trusted, else through the
//! other holders. (One clock for all: no drift. Hints are left out.)
//!
//! A run is a list of events (a write through some node, a read-through, a
//! pause, a join or leave; then time passes); each property is a proptest
//! over such runs, checked as the run goes. The failing cases proptest found
//! are kept as tests below, each saying what happened in it (the `replay`
//! tool prints the story of any case).
//!
//! FINDINGS, all fixed, each kept as a regression test:
//! - The later-own-write rule of [`WriteRound`] counted a peer's copy that
//!   beats the one sent as stored, so another writer's losing copy of the
//!   same version was taken for the writer's own later write: two writes
//!   acknowledged at one version, or one acknowledged on refusals alone.
//!   Now only a later version counts.
//! - Read-through asked the holders under both rings and one node after the
//!   current ones, not the second stand-in ([`super::FALLBACKS`] is 2): a write
//!   acknowledged through it, its writer silent, was missed by a complete
//!   read-through. Now it asks the holders and stand-ins under both rings.
//! - A leaving node took write copies from writers that had not seen it leave,
//!   after its last handoff pass, and stopped with them. Now a node that knows
//!   it is leaving takes no copy, and the writer sends it to a stand-in.
//! - Read-through did not count the silence of a member announcing its
//!   departure, taken for one that handed its copies off and stopped; but
//!   before its last pass it may hold the only other copy (and its silence
//!   may be a lost message). Now its silence counts like any other.
//! - A read-through during which the asker's ring changed could be called
//!   complete without asking the new holder, while the asker handed its own
//!   copy off and dropped it: a live session taken for missing. Now a ring
//!   change while asking makes it incomplete (the client is told to retry).
//!
//! What leases add: without them, with two writers on one session (or a
//! node taking over from a paused owner, or a newcomer), a writer on a stale
//! copy whose refusals are all lost is acknowledged through a stand-in that
//! had no copy (a sloppy quorum does not intersect the last one): the three
//! "no two writes at one version" properties with such writers fail, and
//! stay as ignored tests to show it.
//!
//! WITH LEASES (the `with_leases_` properties), two more findings:
//! - FIXED: a write without the lease was made after a read-through, as the
//!   real code did then; two such writers (or one and a writer under the
//!   lease) could each be acknowledged at one version through different
//!   stand-ins. Now a write is made only under the lease (waiting two terms
//!   at most, else refused), in the simulation as in `caught_up`.
//! - FIXED: a write round that began under the lease could outlive it (its
//!   writer paused mid-round, or its lease moved on); meanwhile the next
//!   holder, under its own lease, wrote the same version on its copy (which
//!   the first write never reached), or served a read from it; the first
//!   writer, its refusals lost, was acknowledged through a stand-in. Now a
//!   write is acknowledged only if its node may still serve the session and
//!   the grants it began under have not run out (`LeaseView::serve_until`,
//!   `Replication::still_leased`); else it is refused (`503 no_lease`), not
//!   acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;

use super::{doubt, Delivery, HandoffPass, Placement, ReadThrough, Step, Verdict, WriteRound};
use crate::replication::lease::{Leases, Serve};
use crate::ring::{NodeId, Ring};
use crate::session::{Change, Entry, Known, Merged, Session, SessionId, Store, UnixMillis};

/// Simulated time starts here (the store's clock is Unix milliseconds).
const BASE: UnixMillis = 1_700_000_000_000;
/// How long a writer waits for a wave's answers, and a pass for its batches.
const TIMEOUT: u64 = 100;
/// A tick of the simulation.
const TICK: u64 = 10;
const VNODES: u32 = 8;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const SESSIONS: usize = 6;
/// A lease's term when leases are modelled (renewed every third of it), and
/// the margin a holder counts it shorter by.
const LEASE_TERM: u64 = 300;
const LEASE_MARGIN: u64 = 40;

fn ring(nodes: &BTreeSet<usize>, rf: usize) -> Arc<Ring> {
    Arc::new(Ring::new(
        nodes.iter().map(|&n| NAMES[n]),
        VNODES,
        rf + super::FALLBACKS,
    ))
}

/// The leases of a process started at `now` with `ring`.
fn new_leases(name: &str, ring: &Arc<Ring>, rf: usize, now: u64) -> Leases {
    let mut leases = Leases::new(NodeId::from(name), LEASE_TERM, LEASE_MARGIN, rf, now);
    leases.ring_changed(ring.clone());
    leases
}

fn index(node: &str) -> usize {
    NAMES
        .iter()
        .position(|n| *n == node)
        .expect("a simulated node")
}

fn session_id(i: usize) -> SessionId {
    SessionId::from_bits([i as u8 + 1; 16])
}

fn data(marker: &str) -> Box<RawValue> {
    RawValue::from_string(format!("{{\"w\":\"{marker}\"}}")).expect("valid json")
}

fn data_of(entry: &Entry) -> String {
    match entry {
        Entry::Live(s) => s.data.get().to_owned(),
        Entry::Tombstone(_) => "deleted".to_owned(),
    }
}

fn names(nodes: &[usize]) -> Vec<&'static str> {
    nodes.iter().map(|n| NAMES[*n]).collect()
}

fn session_of(id: &SessionId) -> usize {
    (0..SESSIONS)
        .find(|s| session_id(*s) == *id)
        .unwrap_or(usize::MAX)
}

fn merged_name(merged: &Merged) -> String {
    match merged {
        Merged::Applied => "applied".to_owned(),
        Merged::Ignored => "ignored".to_owned(),
        Merged::Superseded(held) => format!("refused, holds v{} {}", held.version(), data_of(held)),
        Merged::TooLarge => "too large".to_owned(),
    }
}

/// One node's view of the cluster.
#[derive(Clone)]
struct View {
    ring: Arc<Ring>,
    previous: Arc<Ring>,
    /// Members announcing their departure (not in the ring, still answering).
    leaving: BTreeSet<usize>,
    /// Views are numbered: a node that learns of two changes out of order
    /// keeps the later (gossip versions its state).
    epoch: u64,
}

impl View {
    fn placement(&self) -> Placement {
        Placement {
            ring: self.ring.clone(),
            generations: self.ring.nodes().iter().map(|n| (n.clone(), 1)).collect(),
        }
    }

    /// Whether `node` has an address: in the ring, or leaving.
    fn reachable(&self, node: usize) -> bool {
        self.ring.contains(NAMES[node]) || self.leaving.contains(&node)
    }
}

struct Node {
    id: NodeId,
    store: Store,
    view: View,
    /// Whether it runs (joined and not gone).
    up: bool,
    paused_until: u64,
    /// The ring its copies were last put in doubt for.
    doubted_for: Arc<Ring>,
    /// The placement it last finished handing off, and the pass under way.
    synced: Placement,
    pass: Option<Pass>,
    passes: u64,
    /// Its leases (when modelled), and when it next asks for grants.
    leases: Leases,
    renew_at: u64,
}

impl Node {
    /// Publishes its lease view at `now` (as the lease task does): when the
    /// lease comes back after a lapse, every copy is put in doubt first.
    fn publish_lease(&mut self, now: u64) -> bool {
        let (_, regained) = self.leases.publish(now);
        if regained {
            self.store.doubt_all();
        }
        regained
    }
}

/// A handoff pass in flight: the batches not yet acknowledged.
struct Pass {
    number: u64,
    handoff: HandoffPass<SessionId>,
    to: Placement,
    waiting: BTreeSet<usize>,
    /// What was sent to whom, for the drop check.
    sent: Vec<(usize, SessionId)>,
    deadline: u64,
}

#[derive(Clone, Debug)]
enum Msg {
    /// A copy; `write`: a writer waits for it (op, wave).
    Copy {
        from: usize,
        to: usize,
        id: SessionId,
        entry: Entry,
        write: Option<(usize, u32)>,
    },
    Ack {
        from: usize,
        to: usize,
        op: usize,
        wave: u32,
        outcome: Delivery,
    },
    Fetch {
        from: usize,
        to: usize,
        op: usize,
        id: SessionId,
    },
    Fetched {
        from: usize,
        to: usize,
        op: usize,
        entry: Option<Entry>,
    },
    Handoff {
        from: usize,
        to: usize,
        pass: u64,
        entries: Vec<(SessionId, Entry)>,
    },
    Handed {
        from: usize,
        to: usize,
        pass: u64,
        newer: Vec<(SessionId, Entry)>,
    },
    /// A lease request under a ring's fingerprint, sent at `sent` (the
    /// asker's clock, which the simulation shares).
    LeaseAsk {
        from: usize,
        to: usize,
        fingerprint: String,
        sent: u64,
    },
    LeaseGrant {
        from: usize,
        to: usize,
        fingerprint: String,
        term: Option<u64>,
        sent: u64,
    },
}

impl Msg {
    fn to(&self) -> usize {
        match self {
            Msg::Copy { to, .. }
            | Msg::Ack { to, .. }
            | Msg::Fetch { to, .. }
            | Msg::Fetched { to, .. }
            | Msg::Handoff { to, .. }
            | Msg::Handed { to, .. }
            | Msg::LeaseAsk { to, .. }
            | Msg::LeaseGrant { to, .. } => *to,
        }
    }
}

/// A read-through in flight.
struct Reading {
    /// The asker's ring when it chose whom to ask.
    ring: Arc<Ring>,
    asked: BTreeSet<usize>,
    answers: BTreeMap<usize, Option<Entry>>,
    deadline: u64,
    /// The latest acknowledged write when it started.
    latest: Option<Entry>,
}

/// A write round in flight.
struct Writing {
    /// Until when the grants the write began under last (leases modelled):
    /// it is acknowledged only if it ends before.
    leased_until: Option<u64>,
    round: WriteRound,
    entry: Entry,
    wave: u32,
    peers: Vec<usize>,
    results: BTreeMap<usize, Delivery>,
    deadline: u64,
}

enum Phase {
    /// A write waits for the grants its node gave a holder before it to run
    /// out (until the first time, at most until the second).
    Waiting(u64, u64),
    /// Reading through before the write (`then_write`) or for a read.
    Reading(Reading, bool),
    Writing(Writing),
    Done,
}

struct Op {
    node: usize,
    session: usize,
    phase: Phase,
}

/// The properties a run checks (each as it happens).
#[derive(Clone, Copy, Debug, Default)]
struct Checks {
    /// (1) An acknowledged write is on `rf` nodes at its version or later.
    copies: bool,
    /// (1') ...and those copies are the write's or win over it (a copy of
    /// the same version that loses to it is another writer's).
    copies_won: bool,
    /// (2) A complete read-through finds the latest acknowledged write.
    reads: bool,
    /// (3) No two writes of one session are acknowledged at one version with
    /// different data.
    versions: bool,
    /// (4) Handoff sends every session to each new holder from exactly one
    /// keeper or from every dropper, and drops no copy before its targets
    /// hold it.
    handoff: bool,
    /// (5) A read served from memory under a lease holds the latest
    /// acknowledged write (with leases modelled).
    memory_reads: bool,
}

impl Checks {
    fn all() -> Checks {
        Checks {
            copies: true,
            copies_won: true,
            reads: true,
            versions: true,
            handoff: true,
            memory_reads: true,
        }
    }
}

/// What the simulation saw, for the properties.
#[derive(Default, Debug)]
struct Seen {
    acknowledged: usize,
    stale: usize,
    failed: usize,
    complete_reads: usize,
    drops: usize,
    passes: usize,
    memory_reads: usize,
    lease_waits: usize,
}

struct Sim {
    rng: StdRng,
    rf: usize,
    now: u64,
    nodes: Vec<Node>,
    net: Vec<(u64, Msg)>,
    ops: Vec<Op>,
    /// Per session: every acknowledged write, in order.
    acked: Vec<Vec<Entry>>,
    /// View changes not yet seen by a node: (when, node, view).
    pending_views: Vec<(u64, usize, View)>,
    /// A node that leaves (and the view that says so), until it handed off
    /// and stopped.
    leaver: Option<(usize, View)>,
    /// Network faults on (off while the run settles at its end).
    faults: bool,
    checks: Checks,
    /// Every acknowledgement from this node is lost (a scripted fault).
    lose_acks_from: Option<usize>,
    seen: Seen,
    /// Whether nodes keep leases and write only as `replication::lease`
    /// lets them (from memory with a lease, else after a read-through).
    leases: bool,
    /// What happened, for a failure's message.
    log: Vec<String>,
    writes: u64,
    changes: usize,
}

impl Sim {
    fn new(seed: u64, rf: usize) -> Sim {
        let members: BTreeSet<usize> = (0..4).collect();
        let ring = ring(&members, rf);
        let view = View {
            ring: ring.clone(),
            previous: ring.clone(),
            leaving: BTreeSet::new(),
            epoch: 0,
        };
        let nodes: Vec<Node> = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                id: NodeId::from(*name),
                store: Store::default(),
                view: view.clone(),
                up: members.contains(&i),
                paused_until: 0,
                doubted_for: ring.clone(),
                synced: view.placement(),
                pass: None,
                passes: 0,
                leases: new_leases(name, &ring, rf, 0),
                renew_at: 0,
            })
            .collect();
        let mut acked = Vec::new();
        for s in 0..SESSIONS {
            let id = session_id(s);
            let session = Session::new(data("initial"), Duration::from_secs(86_400), BASE);
            for holder in ring.preference_list(id.as_bytes(), rf) {
                nodes[index(holder)]
                    .store
                    .insert_new(id, session.clone(), BASE)
                    .expect("a new id");
            }
            acked.push(vec![Entry::Live(session)]);
        }
        Sim {
            rng: StdRng::seed_from_u64(seed),
            rf,
            now: 0,
            nodes,
            net: Vec::new(),
            ops: Vec::new(),
            acked,
            pending_views: Vec::new(),
            leaver: None,
            faults: true,
            lose_acks_from: None,
            checks: Checks::default(),
            seen: Seen::default(),
            leases: false,
            log: Vec::new(),
            writes: 0,
            changes: 0,
        }
    }

    fn log(&mut self, line: String) {
        self.log.push(format!("{:>6} ms  {line}", self.now));
    }

    /// The log's lines about one session (and the changes).
    fn story(&self, session: usize) -> String {
        let tag = format!("s{session} ");
        self.log
            .iter()
            .filter(|l| l.contains(&tag) || l.contains("ring") || l.contains("pause"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn clock(&self) -> UnixMillis {
        BASE + self.now
    }

    fn running(&self, node: usize) -> bool {
        self.nodes[node].up && self.now >= self.nodes[node].paused_until
    }

    /// Puts a message on the network: lost, delayed, or duplicated.
    fn send(&mut self, msg: Msg) {
        if self.faults && self.rng.random_bool(0.1) {
            return;
        }
        if let (Msg::Ack { from, .. }, Some(lost)) = (&msg, self.lose_acks_from) {
            if *from == lost {
                return;
            }
        }
        // Most messages are quick; some arrive after the sender gave up.
        let delay = match self.faults && self.rng.random_bool(0.1) {
            true => self.rng.random_range(TIMEOUT..3 * TIMEOUT),
            false => self.rng.random_range(1..30),
        };
        if self.faults && self.rng.random_bool(0.05) {
            let again = delay + self.rng.random_range(1..200);
            self.net.push((self.now + again, msg.clone()));
        }
        self.net.push((self.now + delay, msg));
    }

    /// The latest acknowledged write of a session.
    fn latest(&self, session: usize) -> Option<Entry> {
        self.acked[session].last().cloned()
    }

    // ---- client operations ----

    /// A client writes session `session` through node `entry`: the request goes
    /// to the first holder that node sees running (the owner, or a takeover).
    fn write(&mut self, entry: usize, session: usize) {
        if let Some(node) = self.serving(entry, session) {
            self.write_on(node, session);
        }
    }

    /// A write served by the `nth` running holder of `session` in `entry`'s
    /// view: a node that takes itself for the owner while another does too.
    fn write_elsewhere(&mut self, entry: usize, nth: usize, session: usize) {
        if !self.running(entry) {
            return;
        }
        let id = session_id(session);
        let holders: Vec<usize> = self.nodes[entry]
            .view
            .ring
            .preference_list(id.as_bytes(), self.rf)
            .map(|n| index(n))
            .filter(|&n| self.running(n))
            .collect();
        if !holders.is_empty() {
            self.write_on(holders[nth % holders.len()], session);
        }
    }

    /// A write served by `node`.
    fn write_on(&mut self, node: usize, session: usize) {
        let phase = self.write_phase(node, session, self.now + 2 * LEASE_TERM);
        self.ops.push(Op {
            node,
            session,
            phase,
        });
        let op = self.ops.len() - 1;
        self.kick(op);
    }

    /// How `node` goes on with a write (as `Replication::caught_up`, then
    /// the write): with leases modelled, it writes only under its lease,
    /// waiting for it until `deadline` at most (for the grants it gave a
    /// holder before it to run out, and for those it needs), else refuses;
    /// a copy it does not trust is read through first.
    fn write_phase(&mut self, node: usize, session: usize, deadline: u64) -> Phase {
        let id = session_id(session);
        if self.leases {
            match self.nodes[node]
                .leases
                .view()
                .may_serve(id.as_bytes(), self.now)
            {
                Serve::Now => {}
                Serve::After(until) if until <= deadline => {
                    self.seen.lease_waits += 1;
                    return Phase::Waiting(until, deadline);
                }
                // No grant yet: looks again at the next tick.
                Serve::Ask if self.now < deadline => {
                    self.seen.lease_waits += 1;
                    return Phase::Waiting(self.now + TICK, deadline);
                }
                Serve::After(_) | Serve::Ask => {
                    self.log(format!(
                        "s{session} {} refuses a write: no lease",
                        NAMES[node]
                    ));
                    self.seen.failed += 1;
                    return Phase::Done;
                }
            }
        }
        let doubtful = self.nodes[node].store.known(&id, self.clock()) != Known::Live;
        match doubtful || self.regained(node, &id) {
            true => Phase::Reading(self.start_read(node, session), true),
            false => match self.start_write(node, session) {
                Some(w) => Phase::Writing(w),
                None => Phase::Done,
            },
        }
    }

    /// Whether `node` holds `id` under its ring but did not under the one
    /// it last put copies in doubt for (see [`doubt::regained`]).
    fn regained(&self, node: usize, id: &SessionId) -> bool {
        let me = &self.nodes[node];
        !Arc::ptr_eq(&me.doubted_for, &me.view.ring)
            && doubt::regained(
                &me.doubted_for,
                &me.view.ring,
                id.as_bytes(),
                &me.id,
                self.rf,
            )
    }

    /// A read of session `session` on node `node`: from memory when leases
    /// are modelled and its lease and copy allow it, else a read-through.
    fn read(&mut self, node: usize, session: usize) {
        if !self.running(node) || !self.nodes[node].view.ring.contains(NAMES[node]) {
            return;
        }
        let id = session_id(session);
        let now = self.clock();
        if self.leases
            && self.nodes[node]
                .leases
                .view()
                .may_serve(id.as_bytes(), self.now)
                == Serve::Now
            && self.nodes[node].store.known(&id, now) == Known::Live
            && !self.regained(node, &id)
        {
            self.seen.memory_reads += 1;
            let held = self.nodes[node].store.entry(&id, now);
            let line = format!(
                "s{session} {} reads v{:?} from memory",
                NAMES[node],
                held.as_ref().map(|h| (h.version(), data_of(h)))
            );
            self.log(line);
            // (5) a read from memory under a lease holds the latest
            // acknowledged write.
            if let Some(latest) = self.latest(session).filter(|_| self.checks.memory_reads) {
                assert!(
                    held.as_ref().is_some_and(|h| !latest.supersedes(h)),
                    "{} read s{session} from memory under its lease: {:?}, not the acknowledged v{} {}:\n{}",
                    NAMES[node],
                    held.as_ref().map(|h| (h.version(), data_of(h))),
                    latest.version(),
                    data_of(&latest),
                    self.story(session)
                );
            }
            return;
        }
        let reading = self.start_read(node, session);
        self.ops.push(Op {
            node,
            session,
            phase: Phase::Reading(reading, false),
        });
        let op = self.ops.len() - 1;
        self.kick(op);
    }

    /// The node that serves `session` for a request that reached `entry`.
    fn serving(&self, entry: usize, session: usize) -> Option<usize> {
        if !self.running(entry) {
            return None;
        }
        let id = session_id(session);
        let view = &self.nodes[entry].view;
        view.ring
            .preference_list(id.as_bytes(), self.rf)
            .map(|n| index(n))
            .find(|&n| self.running(n))
    }

    fn start_read(&self, node: usize, session: usize) -> Reading {
        let me = &self.nodes[node];
        let id = session_id(session);
        let candidates = ReadThrough::candidates(
            &me.view.previous,
            &me.view.ring,
            id.as_bytes(),
            &me.id,
            self.rf,
        );
        let asked: BTreeSet<usize> = candidates
            .iter()
            .map(|n| index(n))
            .filter(|&n| me.view.reachable(n))
            .collect();
        Reading {
            ring: me.view.ring.clone(),
            asked,
            answers: BTreeMap::new(),
            deadline: self.now + TIMEOUT,
            latest: self.latest(session),
        }
    }

    fn start_write(&mut self, node: usize, session: usize) -> Option<Writing> {
        let id = session_id(session);
        self.writes += 1;
        let marker = format!("{}{}", NAMES[node], self.writes);
        let now = self.clock();
        let me = &self.nodes[node];
        let (_, entry) = me
            .store
            .write(&id, now, |_| Ok(Change::data(data(&marker))), |_| ())
            .ok()?;
        let round =
            WriteRound::plan(&me.view.ring, id.as_bytes(), &me.id, self.rf, 0).sending(&entry);
        self.log(format!(
            "s{session} {} writes v{} {}",
            NAMES[node],
            entry.version(),
            data_of(&entry)
        ));
        let leased_until = self.leases.then(|| {
            // Lease time is the simulation's own (`now`), as in `renew`.
            let now = self.now;
            self.nodes[node]
                .leases
                .view()
                .serve_until(id.as_bytes(), now)
                .unwrap_or(now)
        });
        Some(Writing {
            leased_until,
            round,
            entry,
            wave: 0,
            peers: Vec::new(),
            results: BTreeMap::new(),
            deadline: 0,
        })
    }

    /// Sends what an op's phase sends when it starts.
    fn kick(&mut self, op: usize) {
        let node = self.ops[op].node;
        let id = session_id(self.ops[op].session);
        match &mut self.ops[op].phase {
            Phase::Reading(reading, _) => {
                let asked: Vec<usize> = reading.asked.iter().copied().collect();
                for to in asked {
                    self.send(Msg::Fetch {
                        from: node,
                        to,
                        op,
                        id,
                    });
                }
                self.check_read(op);
            }
            Phase::Writing(w) => {
                let step = w.round.start();
                self.step(op, step);
            }
            Phase::Waiting(..) | Phase::Done => {}
        }
    }

    /// Acts on a write round's step.
    fn step(&mut self, op: usize, step: Step) {
        let node = self.ops[op].node;
        let session = self.ops[op].session;
        let id = session_id(session);
        let Phase::Writing(w) = &mut self.ops[op].phase else {
            return;
        };
        match step {
            Step::Send(peers) => {
                w.wave += 1;
                w.peers = peers.iter().map(|p| index(p)).collect();
                w.results.clear();
                w.deadline = self.now + TIMEOUT;
                let (wave, entry, targets) = (w.wave, w.entry.clone(), w.peers.clone());
                self.log(format!(
                    "s{session} {} sends v{} to {:?}",
                    NAMES[node],
                    entry.version(),
                    names(&targets)
                ));
                for to in targets {
                    self.send(Msg::Copy {
                        from: node,
                        to,
                        id,
                        entry: entry.clone(),
                        write: Some((op, wave)),
                    });
                }
            }
            Step::Done(verdict) => {
                let (entry, leased_until) = (w.entry.clone(), w.leased_until);
                self.ops[op].phase = Phase::Done;
                // As `Replication::replicated_change`: a round that outlived
                // the grants it began under is not acknowledged.
                if let (Verdict::Acknowledged { .. }, Some(until)) = (&verdict, leased_until) {
                    let view = self.nodes[node].leases.view();
                    if self.now >= until || view.may_serve(id.as_bytes(), self.now) != Serve::Now {
                        self.log(format!(
                            "s{session} {} not acknowledged: its lease lapsed mid-round",
                            NAMES[node]
                        ));
                        self.seen.failed += 1;
                        return;
                    }
                }
                self.verdict(node, session, entry, verdict);
            }
        }
    }

    fn verdict(&mut self, node: usize, session: usize, entry: Entry, v: Verdict) {
        let id = session_id(session);
        match v {
            Verdict::Acknowledged { .. } => {
                self.seen.acknowledged += 1;
                let now = self.clock();
                let holding = |won: bool| -> Vec<&str> {
                    self.nodes
                        .iter()
                        .filter(|n| {
                            n.up && n.store.entry(&id, now).is_some_and(|e| match won {
                                true => !entry.supersedes(&e),
                                false => e.version() >= entry.version(),
                            })
                        })
                        .map(|n| &*n.id)
                        .collect()
                };
                for (check, won) in [(self.checks.copies, false), (self.checks.copies_won, true)] {
                    let holding = holding(won);
                    assert!(
                        !check || holding.len() >= self.rf,
                        "a write of s{session} at version {} by {} was acknowledged with copies only on {holding:?} (not lost to it: {won}):\n{}",
                        entry.version(),
                        NAMES[node],
                        self.story(session)
                    );
                }
                for earlier in &self.acked[session] {
                    assert!(
                        !self.checks.versions ||
                        earlier.version() != entry.version()
                            || (!earlier.supersedes(&entry) && !entry.supersedes(earlier)),
                        "two writes of s{session} acknowledged at version {}: {earlier:?} and {entry:?}:\n{}",
                        entry.version(),
                        self.story(session)
                    );
                }
                self.log(format!(
                    "s{session} {} acknowledged v{} {}",
                    NAMES[node],
                    entry.version(),
                    data_of(&entry)
                ));
                self.acked[session].push(entry);
            }
            Verdict::Stale { newer } => {
                self.log(format!(
                    "s{session} {} refused as stale: v{} {}",
                    NAMES[node],
                    newer.version(),
                    data_of(&newer)
                ));
                self.seen.stale += 1;
                self.nodes[node].store.replace_own(id, &entry, newer);
            }
            Verdict::Failed { acked, required } => {
                self.log(format!(
                    "s{session} {} failed: {acked} of {required}",
                    NAMES[node]
                ));
                self.seen.failed += 1;
            }
        }
    }

    /// Ends a read-through once every node asked answered, or at its deadline.
    fn check_read(&mut self, op: usize) {
        let node = self.ops[op].node;
        let session = self.ops[op].session;
        let id = session_id(session);
        let Phase::Reading(reading, then_write) = &self.ops[op].phase else {
            return;
        };
        if reading.answers.len() < reading.asked.len() && self.now < reading.deadline {
            return;
        }
        let then_write = *then_write;
        let mut read = ReadThrough::new(self.rf, true);
        for n in &reading.asked {
            match reading.answers.contains_key(n) {
                true => read.answered(),
                false => read.silent(),
            }
        }
        if self.nodes[node].view.ring.fingerprint() != reading.ring.fingerprint() {
            read.moved();
        }
        let complete = read.complete();
        let now = self.clock();
        let line = format!(
            "s{session} {} read-through: asked {:?}, answers {:?}: complete {complete}",
            NAMES[node],
            reading.asked.iter().map(|n| NAMES[*n]).collect::<Vec<_>>(),
            reading
                .answers
                .iter()
                .map(|(n, e)| (NAMES[*n], e.as_ref().map(|e| (e.version(), data_of(e)))))
                .collect::<Vec<_>>()
        );
        self.log(line);
        let Phase::Reading(reading, _) = &self.ops[op].phase else {
            return;
        };
        let store = &self.nodes[node].store;
        for entry in reading.answers.values().flatten() {
            store.merge(id, entry.clone(), now);
        }
        if complete {
            store.trust(&id);
            self.seen.complete_reads += 1;
            // (2) a complete read-through finds the latest write acknowledged
            // before it started.
            if let Some(latest) = reading.latest.as_ref().filter(|_| self.checks.reads) {
                let held = store.entry(&id, now);
                assert!(
                    held.as_ref().is_some_and(|h| !latest.supersedes(h)),
                    "a complete read-through of s{session} on {} found {:?}, not the acknowledged v{} {}:\n{}",
                    NAMES[node],
                    held.as_ref().map(|h| (h.version(), data_of(h))),
                    latest.version(),
                    data_of(latest),
                    self.story(session)
                );
            }
        }
        self.ops[op].phase = Phase::Done;
        let known = store.known(&id, now) == Known::Live;
        if then_write && (complete || known) {
            if let Some(w) = self.start_write(node, session) {
                self.ops[op].phase = Phase::Writing(w);
                self.kick(op);
            }
        }
    }

    /// Ends a write wave once every peer answered, or at its deadline.
    fn check_wave(&mut self, op: usize) {
        let node = self.ops[op].node;
        let session = self.ops[op].session;
        let id = session_id(session);
        let now = self.clock();
        let Phase::Writing(w) = &mut self.ops[op].phase else {
            return;
        };
        if w.peers.is_empty() || (w.results.len() < w.peers.len() && self.now < w.deadline) {
            return;
        }
        let results: Vec<Delivery> = w
            .peers
            .iter()
            .map(|p| w.results.get(p).cloned().unwrap_or(Delivery::Failed))
            .collect();
        let line = format!(
            "s{session} {} wave {:?}: {results:?}",
            NAMES[node],
            names(&w.peers)
        );
        w.peers.clear();
        self.log(line);
        let Phase::Writing(w) = &mut self.ops[op].phase else {
            return;
        };
        let own = self.nodes[node].store.entry(&id, now);
        let step = w.round.outcomes(results, own.as_ref());
        self.step(op, step);
    }

    // ---- the nodes ----

    /// A node takes a message (a paused one takes it when it resumes).
    fn receive(&mut self, msg: Msg) {
        let now = self.clock();
        match msg {
            Msg::Copy {
                from,
                to,
                id,
                entry,
                write,
            } => {
                let line = format!(
                    "s{} {} takes v{} {} from {}",
                    session_of(&id),
                    NAMES[to],
                    entry.version(),
                    data_of(&entry),
                    NAMES[from]
                );
                // A node that knows it is leaving takes no copy (as
                // `Replication::apply`): its last pass may be over.
                let outcome = match self.nodes[to].view.leaving.contains(&to) {
                    true => None,
                    false => {
                        let store = &self.nodes[to].store;
                        Some(match write {
                            Some(_) => store.merge_write(id, entry, now),
                            None => store.merge_report(id, entry, now),
                        })
                    }
                };
                let said = outcome
                    .as_ref()
                    .map_or("refused, leaving".to_owned(), merged_name);
                self.log(format!("{line}: {said}"));
                if let Some((op, wave)) = write {
                    let outcome = match outcome {
                        Some(Merged::Applied | Merged::Ignored) => Delivery::Stored,
                        Some(Merged::Superseded(held)) => Delivery::Superseded(held),
                        Some(Merged::TooLarge) | None => Delivery::Failed,
                    };
                    self.send(Msg::Ack {
                        from: to,
                        to: from,
                        op,
                        wave,
                        outcome,
                    });
                }
            }
            Msg::Ack {
                from,
                op,
                wave,
                outcome,
                ..
            } => {
                if let Phase::Writing(w) = &mut self.ops[op].phase {
                    if w.wave == wave && w.peers.contains(&from) && self.now < w.deadline {
                        w.results.entry(from).or_insert(outcome);
                    }
                }
                self.check_wave(op);
            }
            Msg::Fetch { from, to, op, id } => {
                let entry = self.nodes[to].store.entry(&id, now);
                self.send(Msg::Fetched {
                    from: to,
                    to: from,
                    op,
                    entry,
                });
            }
            Msg::Fetched {
                from, op, entry, ..
            } => {
                if let Phase::Reading(reading, _) = &mut self.ops[op].phase {
                    if reading.asked.contains(&from) && self.now < reading.deadline {
                        reading.answers.entry(from).or_insert(entry);
                    }
                }
                self.check_read(op);
            }
            Msg::Handoff {
                from,
                to,
                pass,
                entries,
            } => {
                let mut lines = Vec::new();
                let store = &self.nodes[to].store;
                let newer = entries
                    .into_iter()
                    .filter_map(|(id, entry)| {
                        let line = format!(
                            "s{} {} takes handoff v{} {} from {}",
                            session_of(&id),
                            NAMES[to],
                            entry.version(),
                            data_of(&entry),
                            NAMES[from]
                        );
                        let merged = store.merge_report(id, entry, now);
                        lines.push(format!("{line}: {}", merged_name(&merged)));
                        match merged {
                            Merged::Superseded(held) => Some((id, held)),
                            _ => None,
                        }
                    })
                    .collect();
                for line in lines {
                    self.log(line);
                }
                self.send(Msg::Handed {
                    from: to,
                    to: from,
                    pass,
                    newer,
                });
            }
            Msg::Handed {
                from,
                to,
                pass,
                newer,
            } => {
                for (id, entry) in newer {
                    self.nodes[to].store.merge(id, entry, now);
                }
                if let Some(p) = &mut self.nodes[to].pass {
                    if p.number == pass && self.now < p.deadline {
                        p.waiting.remove(&from);
                    }
                }
            }
            Msg::LeaseAsk {
                from,
                to,
                fingerprint,
                sent,
            } => {
                let term = self.nodes[to].leases.request(
                    &NodeId::from(NAMES[from]),
                    &fingerprint,
                    self.now,
                );
                self.send(Msg::LeaseGrant {
                    from: to,
                    to: from,
                    fingerprint,
                    term,
                    sent,
                });
            }
            Msg::LeaseGrant {
                from,
                to,
                fingerprint,
                term,
                sent,
            } => {
                // The asker waits for an answer as long as for any other.
                let (Some(term), true) = (term, self.now <= sent + TIMEOUT) else {
                    return;
                };
                let n = &mut self.nodes[to];
                n.leases
                    .granted(&NodeId::from(NAMES[from]), &fingerprint, term, sent);
                if n.publish_lease(self.now) {
                    self.log(format!("{} has its lease back: copies in doubt", NAMES[to]));
                }
            }
        }
    }

    /// `node`'s lease task: asks every other member of its ring for a grant.
    fn renew(&mut self, node: usize) {
        let now = self.now;
        let n = &mut self.nodes[node];
        n.renew_at = now + n.leases.renew_every();
        n.leases.ring_changed(n.view.ring.clone());
        n.leases.set_missing(0);
        n.leases.expire(now.saturating_sub(LEASE_TERM));
        if n.publish_lease(now) {
            self.log(format!(
                "{} has its lease back: copies in doubt",
                NAMES[node]
            ));
        }
        let n = &self.nodes[node];
        let (ask, fingerprint) = n.leases.to_ask();
        let asked: Vec<usize> = ask
            .iter()
            .map(|p| index(p))
            .filter(|&p| n.view.reachable(p))
            .collect();
        for to in asked {
            self.send(Msg::LeaseAsk {
                from: node,
                to,
                fingerprint: fingerprint.clone(),
                sent: now,
            });
        }
    }

    /// A node sees a new view: it puts the copies it regained in doubt.
    fn see(&mut self, node: usize, view: View) {
        let rf = self.rf;
        if view.epoch <= self.nodes[node].view.epoch {
            return;
        }
        self.log(format!(
            "{} sees ring {:?} leaving {:?}",
            NAMES[node],
            view.ring.nodes(),
            view.leaving
        ));
        let n = &mut self.nodes[node];
        n.view = view;
        if self.leases {
            // The lease task wakes at once: grants held were for the old ring.
            n.renew_at = self.now;
        }
        let old = n.doubted_for.clone();
        if !Arc::ptr_eq(&old, &n.view.ring) {
            let (ring, me) = (n.view.ring.clone(), n.id.clone());
            n.store
                .doubt_where(|id| doubt::regained(&old, &ring, id.as_bytes(), &me, rf));
            n.doubted_for = ring;
        }
    }

    /// Starts or ends a node's handoff pass.
    fn rebalance(&mut self, node: usize) {
        let rf = self.rf;
        let now = self.clock();
        if let Some(p) = &self.nodes[node].pass {
            if !p.waiting.is_empty() && self.now < p.deadline {
                return;
            }
            let Some(mut p) = self.nodes[node].pass.take() else {
                return;
            };
            for _ in 0..p.waiting.len() {
                p.handoff.sent(false);
            }
            if p.waiting.is_empty() {
                p.handoff.sent(true);
            }
            let ok = p.handoff.ok();
            let drops = p.handoff.drops();
            // (4) nothing is dropped before every holder it was sent to has it.
            for (id, version) in &drops {
                for (target, sent) in &p.sent {
                    if sent == id {
                        let held = self.nodes[*target].store.entry(id, now);
                        assert!(
                            !self.checks.handoff || held.is_some_and(|e| e.version() >= *version),
                            "{} dropped {id:?} at version {version} before {} held it",
                            NAMES[node],
                            NAMES[*target]
                        );
                    }
                }
                let dropped = self.nodes[node].store.discard(id, *version);
                self.seen.drops += usize::from(dropped);
                let line = format!(
                    "s{} {} drops v{version}: {dropped}",
                    session_of(id),
                    NAMES[node]
                );
                self.log(line);
            }
            if ok {
                self.seen.passes += 1;
                self.nodes[node].synced = p.to;
            }
            return;
        }
        let n = &self.nodes[node];
        let to = n.view.placement();
        if to.same(&n.synced) {
            return;
        }
        let mut handoff = HandoffPass::new(n.synced.clone(), to.clone(), n.id.clone(), rf);
        let mut batches: BTreeMap<usize, Vec<(SessionId, Entry)>> = BTreeMap::new();
        for shard in 0..n.store.shard_count() {
            for (id, entry) in n.store.shard_entries(shard, now) {
                for target in handoff.entry(id, id.as_bytes(), entry.version()) {
                    batches
                        .entry(index(&target))
                        .or_default()
                        .push((id, entry.clone()));
                }
            }
        }
        let number = n.passes + 1;
        self.nodes[node].passes = number;
        let sent = batches
            .iter()
            .flat_map(|(t, b)| b.iter().map(|(id, _)| (*t, *id)))
            .collect();
        let waiting = batches.keys().copied().collect();
        for (target, entries) in batches {
            self.send(Msg::Handoff {
                from: node,
                to: target,
                pass: number,
                entries,
            });
        }
        self.nodes[node].pass = Some(Pass {
            number,
            handoff,
            to,
            waiting,
            sent,
            deadline: self.now + TIMEOUT,
        });
    }

    /// One tick: messages due, deadlines, views, handoff.
    fn tick(&mut self) {
        self.now += TICK;
        let now = self.now;
        let mut resumed = Vec::new();
        for (name, n) in NAMES.iter().zip(&mut self.nodes) {
            if n.paused_until != 0 && now >= n.paused_until {
                // The pause watch: every copy is put in doubt.
                n.paused_until = 0;
                n.store.doubt_all();
                resumed.push(format!("{name} resumes from a pause"));
            }
        }
        for line in resumed {
            self.log(line);
        }
        let views = std::mem::take(&mut self.pending_views);
        for (at, node, view) in views {
            match at <= now && self.running(node) {
                true => self.see(node, view),
                false => self.pending_views.push((at, node, view)),
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|(t, m)| *t <= now && self.running(m.to()));
        self.net = later;
        let mut due: Vec<Msg> = due.into_iter().map(|(_, m)| m).collect();
        for i in (1..due.len()).rev() {
            let j = self.rng.random_range(0..=i);
            due.swap(i, j);
        }
        // A message to a node that is gone is lost.
        self.net.retain(|(_, m)| self.nodes[m.to()].up);
        for msg in due {
            self.receive(msg);
        }
        if self.leases {
            for node in 0..self.nodes.len() {
                if self.running(node) && now >= self.nodes[node].renew_at {
                    self.renew(node);
                }
            }
        }
        for op in 0..self.ops.len() {
            if self.running(self.ops[op].node) {
                match self.ops[op].phase {
                    Phase::Waiting(until, deadline) if now >= until => {
                        let (node, session) = (self.ops[op].node, self.ops[op].session);
                        self.ops[op].phase = self.write_phase(node, session, deadline);
                        self.kick(op);
                    }
                    Phase::Reading(..) => self.check_read(op),
                    Phase::Writing(_) => self.check_wave(op),
                    Phase::Waiting(..) | Phase::Done => {}
                }
            }
        }
        for node in 0..self.nodes.len() {
            if self.running(node) {
                self.rebalance(node);
            }
        }
        // A leaver stops once it handed everything off.
        if let Some((x, leave)) = self.leaver.clone() {
            let n = &self.nodes[x];
            let handed_off = !n.view.ring.contains(NAMES[x])
                && n.pass.is_none()
                && n.synced.same(&n.view.placement());
            if handed_off {
                self.nodes[x].up = false;
                // What it was doing ends with it.
                for op in self.ops.iter_mut().filter(|o| o.node == x) {
                    op.phase = Phase::Done;
                }
                self.leaver = None;
                let mut view = leave;
                view.leaving.remove(&x);
                view.epoch += 1;
                for node in 0..self.nodes.len() {
                    if self.nodes[node].up {
                        let view = view.clone();
                        let at = now + self.rng.random_range(0..100);
                        self.pending_views.push((at, node, view));
                    }
                }
            }
        }
    }

    fn members(&self) -> BTreeSet<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].up && self.leaver.as_ref().is_none_or(|(x, _)| *x != n))
            .collect()
    }

    /// Whether every node sees the same ring and handed it off: a ring
    /// change may start.
    fn settled(&self) -> bool {
        self.leaver.is_none()
            && self.pending_views.is_empty()
            && self.nodes.iter().filter(|n| n.up).all(|n| {
                n.pass.is_none() && n.synced.same(&n.view.placement()) && n.paused_until == 0
            })
    }

    /// One member joins or leaves; each node sees it at its own moment.
    fn change(&mut self, who: usize) {
        if !self.settled() {
            return;
        }
        let members = self.members();
        let joining = !self.nodes[who].up;
        let next: BTreeSet<usize> = match joining {
            true => members.iter().copied().chain([who]).collect(),
            false if members.len() > self.rf + 1 => {
                members.iter().copied().filter(|&n| n != who).collect()
            }
            false => return,
        };
        let old = self.nodes[members.iter().next().copied().unwrap_or(0)]
            .view
            .clone();
        let new_ring = ring(&next, self.rf);
        if self.checks.handoff {
            self.check_handoff_plan(&old.placement(), &new_ring);
        }
        self.log(format!(
            "ring change: {} {}",
            NAMES[who],
            if joining { "joins" } else { "leaves" }
        ));
        let mut view = View {
            ring: new_ring,
            previous: old.ring.clone(),
            leaving: BTreeSet::new(),
            epoch: old.epoch + 1,
        };
        self.changes += 1;
        if joining {
            let n = &mut self.nodes[who];
            n.up = true;
            n.store = Store::default();
            n.view = view.clone();
            n.doubted_for = view.ring.clone();
            n.synced = view.placement();
            n.pass = None;
            // A new process: it grants nothing in its first term.
            n.leases = new_leases(NAMES[who], &view.ring, self.rf, self.now);
            n.renew_at = self.now;
        } else {
            view.leaving.insert(who);
            self.leaver = Some((who, view.clone()));
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node].up && !(joining && node == who) {
                let at = self.now + self.rng.random_range(0..100);
                self.pending_views.push((at, node, view.clone()));
            }
        }
    }

    /// (4) With every node going from `old` to `new`, each session reaches
    /// each new holder from exactly one old holder that keeps it, or from
    /// every old holder that drops it.
    fn check_handoff_plan(&self, old: &Placement, new_ring: &Arc<Ring>) {
        let new = Placement {
            ring: new_ring.clone(),
            generations: new_ring.nodes().iter().map(|n| (n.clone(), 1)).collect(),
        };
        for s in 0..SESSIONS {
            let key = session_id(s);
            let key = key.as_bytes();
            let old_holders: Vec<NodeId> =
                old.ring.preference_list(key, self.rf).cloned().collect();
            let new_holders: Vec<NodeId> =
                new.ring.preference_list(key, self.rf).cloned().collect();
            let decisions: Vec<(NodeId, Option<super::handoff::Handoff>)> = old_holders
                .iter()
                .map(|h| {
                    (
                        h.clone(),
                        super::handoff::handoff(old, &new, key, h, self.rf),
                    )
                })
                .collect();
            for target in &new_holders {
                if old_holders.contains(target) {
                    continue;
                }
                let keepers: Vec<&NodeId> = decisions
                    .iter()
                    .filter(|(_, d)| d.as_ref().is_some_and(|d| !d.drop && d.to.contains(target)))
                    .map(|(h, _)| h)
                    .collect();
                let droppers: Vec<&NodeId> = decisions
                    .iter()
                    .filter(|(_, d)| d.as_ref().is_some_and(|d| d.drop))
                    .map(|(h, _)| h)
                    .collect();
                for (h, d) in &decisions {
                    if let Some(d) = d.as_ref().filter(|d| d.drop) {
                        assert_eq!(
                            &d.to, &new_holders,
                            "{h} drops {s} without sending it to every new holder"
                        );
                    }
                }
                assert!(
                    keepers.len() <= 1,
                    "{s} reaches {target} from several keepers {keepers:?}"
                );
                assert!(
                    keepers.len() == 1 || !droppers.is_empty(),
                    "{s} reaches new holder {target} from no old holder ({decisions:?})"
                );
            }
        }
    }

    fn pause(&mut self, node: usize, ms: u64) {
        let paused = self.nodes.iter().filter(|n| n.paused_until != 0).count();
        if self.nodes[node].up && paused == 0 {
            self.nodes[node].paused_until = self.now + ms;
            self.log(format!("{} pauses for {ms} ms", NAMES[node]));
        }
    }

    /// Faults off; runs until every op, pass and message is done.
    fn settle(&mut self) {
        self.faults = false;
        for _ in 0..2_000 {
            self.tick();
            // Lease requests and grants never stop: they do not count.
            let busy = self.ops.iter().any(|o| !matches!(o.phase, Phase::Done))
                || !self.settled()
                || self
                    .net
                    .iter()
                    .any(|(_, m)| !matches!(m, Msg::LeaseAsk { .. } | Msg::LeaseGrant { .. }));
            if !busy {
                return;
            }
        }
        let ops: Vec<usize> = (0..self.ops.len())
            .filter(|&o| !matches!(self.ops[o].phase, Phase::Done))
            .collect();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{}: up {} paused {} pass {:?} synced {:?} view {:?}",
                    n.id,
                    n.up,
                    n.paused_until,
                    n.pass.as_ref().map(|p| &p.waiting),
                    n.synced.ring.nodes(),
                    n.view.ring.nodes()
                )
            })
            .collect();
        panic!(
            "the simulation did not settle: ops {ops:?}, leaver {:?}, views {}, messages {}\n{}",
            self.leaver.as_ref().map(|(x, _)| x),
            self.pending_views.len(),
            self.net.len(),
            nodes.join("\n")
        );
    }
}

/// What a run does besides writes, reads, pauses and network faults.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Some writes are served by a holder other than the one the request's
    /// entry node routes to (it takes itself for the owner too).
    concurrent: bool,
    /// The ring changes, one member at a time.
    changes: bool,
    /// Nodes are paused (their sessions taken over meanwhile).
    pauses: bool,
    /// Nodes keep leases, and write and read as they let them.
    leases: bool,
}

/// Runs one simulation: `events` are (kind, node, session, milliseconds to
/// the next).
fn run(checks: Checks, seed: u64, rf: usize, mode: Mode, events: Events) -> Seen {
    let mut sim = Sim::new(seed, rf);
    sim.checks = checks;
    sim.leases = mode.leases;
    for (kind, who, session, dt) in events {
        match kind {
            0..=3 => sim.write(who, session),
            // With leases, reads go where routing sends them (the owner,
            // or a takeover), which serves them from memory when it may.
            4..=5 if mode.leases => {
                if let Some(node) = sim.serving(who, session) {
                    sim.read(node, session)
                }
            }
            4..=5 => sim.read(who, session),
            6 if mode.pauses => sim.pause(who, 50 + dt * 4),
            7..=8 if mode.changes => sim.change(who),
            9 if mode.concurrent => sim.write_elsewhere(who, session + dt as usize, session),
            _ => {}
        }
        for _ in 0..dt / TICK {
            sim.tick();
        }
    }
    sim.settle();
    // After everything settled, a read-through anywhere is complete and
    // finds the last acknowledged write.
    for s in 0..SESSIONS {
        let node = (0..NAMES.len()).find(|&n| sim.nodes[n].up).expect("a node");
        sim.read(node, s);
    }
    sim.settle();
    if std::env::var("CORE_TRACE").is_ok() {
        eprintln!(
            "{:?} ops {} changes {}",
            sim.seen,
            sim.ops.len(),
            sim.changes
        );
    }
    sim.seen
}

fn cases() -> u32 {
    std::env::var("CORE_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

fn events() -> impl Strategy<Value = Events> {
    proptest::collection::vec((0u8..10, 0usize..5, 0usize..SESSIONS, 0u64..200), 1..80)
}

type Events = Vec<(u8, usize, usize, u64)>;

/// One writer per session: the owner, always reachable (network faults only).
const ONE_WRITER: Mode = Mode {
    concurrent: false,
    changes: false,
    pauses: false,
    leases: false,
};
/// Pauses: the next holder takes a paused owner's sessions over.
const STEADY: Mode = Mode {
    concurrent: false,
    changes: false,
    pauses: true,
    leases: false,
};
/// Pauses and ring changes.
const CHANGES: Mode = Mode {
    concurrent: false,
    changes: true,
    pauses: true,
    leases: false,
};
/// Pauses and two writers on one copy.
const RACES: Mode = Mode {
    concurrent: true,
    changes: false,
    pauses: true,
    leases: false,
};
/// Modes with leases: the nodes keep them, write from memory only under
/// one and read through first without.
const STEADY_LEASED: Mode = Mode {
    leases: true,
    ..STEADY
};
const CHANGES_LEASED: Mode = Mode {
    leases: true,
    ..CHANGES
};
const RACES_LEASED: Mode = Mode {
    leases: true,
    ..RACES
};
const ALL_LEASED: Mode = Mode {
    leases: true,
    ..ALL
};
const ALL: Mode = Mode {
    concurrent: true,
    changes: true,
    pauses: true,
    leases: false,
};

proptest! {
    // The failing cases found so far are kept as tests below, not in a file.
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (1) Every acknowledged write is on `rf` nodes, at its version or
    /// later, the moment it is acknowledged (writes served by the holder the
    /// entry node routes to, and by others that take themselves for owners;
    /// no ring change).
    #[test]
    fn an_acknowledged_write_is_on_rf_nodes(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { copies: true, ..Checks::default() };
        run(checks, seed, rf, RACES, events);
    }

    /// (1), across ring changes.
    #[test]
    fn an_acknowledged_write_is_on_rf_nodes_across_ring_changes(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { copies: true, ..Checks::default() };
        run(checks, seed, rf, CHANGES, events);
    }

    /// (1') As (1), counting only copies the write does not win over.
    #[test]
    fn an_acknowledged_write_is_on_rf_nodes_that_do_not_lose_it(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { copies_won: true, ..Checks::default() };
        run(checks, seed, rf, RACES, events);
    }

    /// (2) A read-through that is complete (at most rf - 1 holders silent)
    /// finds the latest write acknowledged before it started, with one
    /// writer per session.
    #[test]
    fn a_complete_read_through_finds_the_latest_acknowledged_write(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { reads: true, ..Checks::default() };
        run(checks, seed, rf, ONE_WRITER, events);
    }

    /// (2) across pauses (takeovers) and ring changes.
    #[test]
    fn a_complete_read_through_finds_the_latest_acknowledged_write_across_takeovers(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { reads: true, ..Checks::default() };
        run(checks, seed, rf, CHANGES, events);
    }

    /// (3) Never two writes of one session acknowledged at one version with
    /// different data, with one writer per session.
    #[test]
    fn no_two_writes_are_acknowledged_at_one_version(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, ONE_WRITER, events);
    }

    /// (3) with a paused owner's sessions taken over meanwhile.
    #[test]
    #[ignore = "fails without leases, which it leaves out: a taker-over on a stale copy whose refusals are all lost is acknowledged through a stand-in that had no copy, see the module doc; with_leases_ runs it with them"]
    fn no_two_writes_are_acknowledged_at_one_version_across_takeovers(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, STEADY, events);
    }

    /// (3), across ring changes.
    #[test]
    #[ignore = "fails without leases, which it leaves out: a taker-over on a stale copy whose refusals are all lost is acknowledged through a stand-in that had no copy, see the module doc; with_leases_ runs it with them"]
    fn no_two_writes_are_acknowledged_at_one_version_across_ring_changes(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, CHANGES, events);
    }

    /// (3), with two writers on one copy.
    #[test]
    #[ignore = "fails without leases, which it leaves out: a second writer on a stale copy whose refusals are all lost is acknowledged through a stand-in that had no copy, see the module doc; with_leases_ runs it with them"]
    fn no_two_writes_of_two_writers_are_acknowledged_at_one_version(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, RACES, events);
    }

    /// (3) with leases, a paused owner's sessions taken over meanwhile.
    #[test]
    fn with_leases_no_two_writes_are_acknowledged_at_one_version_across_takeovers(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, STEADY_LEASED, events);
    }

    /// (3) with leases, across ring changes.
    #[test]
    fn with_leases_no_two_writes_are_acknowledged_at_one_version_across_ring_changes(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, CHANGES_LEASED, events);
    }

    /// (3) with leases, two writers on one copy.
    #[test]
    fn with_leases_no_two_writes_of_two_writers_are_acknowledged_at_one_version(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { versions: true, ..Checks::default() };
        run(checks, seed, rf, RACES_LEASED, events);
    }

    /// (5) A read served from memory under a lease holds the latest
    /// acknowledged write: through pauses and ring changes.
    #[test]
    fn with_leases_a_read_from_memory_holds_the_latest_acknowledged_write(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { memory_reads: true, ..Checks::default() };
        run(checks, seed, rf, CHANGES_LEASED, events);
    }

    /// (5) with two writers on one copy too.
    #[test]
    fn with_leases_a_read_from_memory_holds_the_latest_acknowledged_write_with_two_writers(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { memory_reads: true, ..Checks::default() };
        run(checks, seed, rf, ALL_LEASED, events);
    }

    /// (4) After each one-member ring change, every session reaches each new
    /// holder from exactly one old holder that keeps it, or from every old
    /// holder that drops it; no copy is dropped before the nodes it was sent
    /// to hold it.
    #[test]
    fn handoff_reaches_every_new_holder_before_a_copy_is_dropped(seed in any::<u64>(), rf in 2usize..=3, events in events()) {
        let checks = Checks { handoff: true, ..Checks::default() };
        run(checks, seed, rf, ALL, events);
    }
}

/// Two writers of one session at once, with the network in order: each finds
/// the other's copy of the same version at its replica, so neither write is
/// acknowledged (one held by its writer alone could be lost with it) and
/// both are told to retry; a write after that is acknowledged, and both
/// nodes end with its copy. (Each writer takes the copy it was answered
/// with, so until that write they may hold each other's unacknowledged one.)
#[test]
fn of_two_writers_on_one_copy_neither_is_acknowledged_and_a_retry_is() {
    let mut sim = Sim::new(7, 2);
    sim.checks = Checks::all();
    sim.faults = false;
    let (winner, loser) = two_writers(&mut sim);
    sim.settle();
    assert_eq!(
        (sim.seen.acknowledged, sim.seen.stale),
        (0, 2),
        "{:?}",
        sim.seen
    );
    sim.write(winner, 0);
    sim.settle();
    assert_eq!(sim.seen.acknowledged, 1, "{:?}", sim.seen);
    let id = session_id(0);
    let acked = sim.latest(0).expect("an acknowledged write");
    for node in [winner, loser] {
        let held = sim.nodes[node]
            .store
            .entry(&id, sim.clock())
            .expect("a copy");
        assert!(
            !acked.supersedes(&held) && !held.supersedes(&acked),
            "{held:?}"
        );
    }
}

/// FIXED (`write::later_own` now requires a later version than the one
/// sent); kept as a regression test. WAS A FINDING. Two writers of one session at once, and one answer lost: the
/// writer whose copy wins (`W`) is answered by the other (`L`) with `L`'s own
/// losing copy at the same version, which the write round takes for a later
/// write of `W`'s own and counts as stored; `W`'s answer to `L`'s copy is
/// lost, so `L` moves on to a stand-in, which stores `L`'s copy. Both writes
/// are acknowledged at version 2 with different data, and `W`'s is on `W`
/// alone (`L` kept its own copy).
#[test]
fn two_writers_and_one_lost_answer_are_both_acknowledged() {
    let mut sim = Sim::new(7, 2);
    sim.checks = Checks::all();
    sim.faults = false;
    let id = session_id(0);
    let holders: Vec<usize> = sim.nodes[0]
        .view
        .ring
        .preference_list(id.as_bytes(), 2)
        .map(|n| index(n))
        .collect();
    let winner = holders.iter().copied().max().expect("two holders");
    sim.lose_acks_from = Some(winner);
    two_writers(&mut sim);
    sim.settle();
}

/// Both holders of session 0 write it at once, before either copy arrives.
/// Returns (the writer whose copy wins, the other).
fn two_writers(sim: &mut Sim) -> (usize, usize) {
    let id = session_id(0);
    let holders: Vec<usize> = sim.nodes[0]
        .view
        .ring
        .preference_list(id.as_bytes(), 2)
        .map(|n| index(n))
        .collect();
    for (op, &node) in holders.iter().enumerate() {
        sim.ops.push(Op {
            node,
            session: 0,
            phase: Phase::Done,
        });
        let w = sim.start_write(node, 0).expect("a live copy");
        sim.ops[op].phase = Phase::Writing(w);
    }
    for op in 0..holders.len() {
        sim.kick(op);
    }
    // The greater data wins between copies of one version and write time.
    let winner = holders.iter().copied().max().expect("two holders");
    let loser = holders.iter().copied().min().expect("two holders");
    (winner, loser)
}

/// Runs a case written as `"seed rf concurrent changes kind,node,session,dt
/// kind,node,session,dt ..."` (a failing case proptest found, for example).
fn replay_case(checks: Checks, case: &str) -> Seen {
    replay_case_with(checks, case, false)
}

/// [`replay_case`], with leases modelled when `leases`.
fn replay_case_with(checks: Checks, case: &str, leases: bool) -> Seen {
    let mut words = case.split_whitespace();
    let mut next = || words.next().expect("a word");
    let seed: u64 = next().parse().expect("a seed");
    let rf: usize = next().parse().expect("rf");
    let concurrent: bool = next().parse().expect("concurrent");
    let changes: bool = next().parse().expect("changes");
    let events: Events = case
        .split_whitespace()
        .skip(4)
        .map(|e| {
            let v: Vec<u64> = e.split(',').map(|x| x.parse().expect("a number")).collect();
            (v[0] as u8, v[1] as usize, v[2] as usize, v[3])
        })
        .collect();
    run(
        checks,
        seed,
        rf,
        Mode {
            concurrent,
            changes,
            pauses: true,
            leases,
        },
        events,
    )
}

/// FIXED (`write::later_own` now requires a later version than the one
/// sent); kept as a regression test. WAS A FINDING (from (3), found by proptest). `c` owns session 4 and writes
/// version 3 (`c6`); its copy to `b` is lost, and `c` is paused before its
/// stand-in answers. `b`, taking over, writes its own version 3 (`b7`) on
/// its stale copy; `a` holds `c6` and refuses it, answering with `c6`, which
/// loses to `b7` on write time: `b`'s round takes it for a later write of
/// its own and acknowledges `b7`. `c6` is acknowledged too (through stand-in
/// `d`): two writes of version 3.
#[test]
fn a_takeover_after_a_pause_acknowledges_a_second_write_of_one_version() {
    let checks = Checks {
        versions: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "15109469098814999817 2 false false 4,0,1,100 0,0,0,30 6,2,0,38 4,3,0,80 0,0,2,70 \
         4,0,1,50 0,0,1,70 0,0,4,180 0,0,1,0 7,0,0,10 0,4,0,80 6,0,0,53 4,1,2,50 4,1,2,10 \
         0,1,4,0 0,0,0,0 0,0,0,0 0,0,0,80 0,0,0,80 6,2,0,23 0,0,4,0 0,0,1,0",
    );
}

/// FIXED (`write::later_own` now requires a later version than the one
/// sent); kept as a regression test. WAS A FINDING (from (3) across ring changes, found by proptest). `a` writes
/// session 3 at version 2 (`a4`) through stand-in `d` (its copies to `b` and
/// `c` are lost), then leaves; `b`, now first holder, writes its own version
/// 2 (`b7`, a later write time) on its stale copy, and `a`'s refusal (with
/// `a4`) is taken for a later write of `b`'s own: both are acknowledged.
#[test]
fn a_takeover_during_a_leave_acknowledges_a_second_write_of_one_version() {
    let checks = Checks {
        versions: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "1759760353362421276 2 false true 7,3,0,30 4,1,2,150 0,0,2,50 0,0,0,0 0,3,0,170 \
         7,3,0,120 7,0,0,60 0,0,0,130 0,0,3,30 0,0,0,150 0,0,0,40 7,0,0,50 0,2,3,0",
    );
}

/// FIXED (`write::later_own` now requires a later version than the one
/// sent); kept as a regression test. WAS A FINDING (from (2), found by proptest; rf 3). `d`, back from a pause,
/// writes session 2 at version 2 (`d7`) and reaches `b` and stand-in `c`.
/// `a`, which missed it, writes its own version 2 (`a9`, a later write
/// time): every peer refuses it with `d7`, which loses to `a9`, so the round
/// takes each refusal for a later write of `a`'s own and acknowledges `a9`,
/// held by `a` alone. A complete read-through on `d` (two of three holders
/// answer, `a` is silent) finds `d7`.
#[test]
fn a_read_through_misses_a_write_acknowledged_on_refusals_alone() {
    let checks = Checks {
        reads: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "10457644814673816583 3 false true 4,0,0,130 0,0,0,150 6,3,0,58 6,0,0,20 4,0,0,10 \
         6,0,0,70 0,0,3,110 0,0,3,50 4,2,0,50 0,0,0,20 4,0,0,30 6,1,0,60 6,0,0,90 4,0,0,70 \
         0,4,0,80 0,0,2,0 7,0,0,40 0,0,3,110 0,0,0,0 7,0,0,50 0,0,2,140 6,3,0,121 6,0,0,30 \
         6,0,0,130 0,3,0,10 0,0,3,190 0,0,2,50 0,0,0,40 4,0,0,30 0,0,0,10 4,0,0,0 7,0,0,50 \
         0,0,3,30 0,0,0,40 0,0,0,90 0,0,2,20",
    );
}

/// FIXED (read-through now asks the stand-ins too); kept as a regression
/// test. WAS A FINDING (from (2) with one writer per session, found by proptest). `a`
/// owns session 3 and writes version 2; its copy to `b` is lost, so is the
/// one to the first stand-in `c`, and the second stand-in `d` stores it: the
/// write is acknowledged on `a` and `d`. A read-through on `b` asks the
/// holders and the node after them (`a`, `c`), not `d`; `a` is silent (one
/// of `rf` = 2: complete), `c` has nothing, and `b` trusts its version 1.
/// (The hint for `b` would bring version 2 within a second.)
#[test]
fn a_read_through_misses_a_write_acknowledged_through_the_second_stand_in() {
    let checks = Checks {
        reads: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "1077750191479505074 2 false false 0,0,0,20 0,0,0,20 4,0,1,30 0,0,3,110 0,0,0,70 \
         4,2,0,40 0,0,0,40 0,0,0,10 0,0,0,70 0,4,0,110 0,0,0,30 4,1,3,0",
    );
}

/// FIXED (a leaving node now takes no copy: `a` sends it to a stand-in);
/// kept as a regression test. WAS A FINDING (from (1) across ring changes, found by proptest). `c` leaves and
/// hands its copies off; `a`, which has not seen the change yet, writes
/// session 1 and sends the copy to `c`, its other holder under the old ring.
/// `c` takes it after its last pass and stops: the write is acknowledged,
/// counting a copy that is gone, and is on `a` alone.
#[test]
fn a_leaver_stops_with_a_write_it_took_after_its_last_pass() {
    let checks = Checks {
        copies: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "4383367990742072633 2 false true 6,1,0,78 0,2,1,140 4,2,2,0 0,1,0,20 0,4,0,150 \
         7,2,0,80 0,0,1,0",
    );
}

/// FIXED (a read-through during which the asker's ring changed is not
/// complete); kept as a regression test. WAS A FINDING (from (2) across
/// ring changes, found by proptest). `c` starts a read-through of session 3
/// under ring `b c d` (asking `b` and `d`); meanwhile `a` joins, `c` hands
/// its copy to `a` and drops it. `b` is silent, `d` has nothing: one silent
/// of `rf` = 2 made it complete, and `c` took the session for missing (a 404
/// for a live session), without having asked `a`.
#[test]
fn a_read_through_misses_a_new_holder_when_the_ring_changes_while_it_asks() {
    let checks = Checks {
        reads: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "2334100230241475205 2 false true 4,3,0,30 7,1,0,130 6,2,0,121 6,0,0,30 6,0,0,140 \
         0,2,0,70 0,0,2,170 0,0,0,40 4,0,1,60 0,0,4,30 7,2,0,80 0,4,0,30 4,2,0,30 7,1,0,90 \
         0,0,0,140 7,0,0,150 0,1,2,40 4,2,3,0 7,0,0,10",
    );
}

/// FIXED (a leaving member's silence now counts); kept as a regression test.
/// WAS A FINDING (from (2) across ring changes, found by proptest). `d`
/// leaves; `c` reads session 2 through `a`, `b` and `d` before `d` (a holder
/// with `a`) handed anything off. `b` has nothing yet, `a`'s answer is lost,
/// and `d`, silent too, was counted as having handed its copies off: the
/// read was complete with one silent of `rf` = 2, and `c` took the session
/// for missing.
#[test]
fn a_read_through_takes_a_leavers_silence_for_a_handoff_it_did_not_make() {
    let checks = Checks {
        reads: true,
        ..Checks::default()
    };
    replay_case(
        checks,
        "14936855876799017071 2 false true 0,0,0,40 0,0,0,20 0,0,0,10 0,0,0,30 7,3,0,20 4,2,2,30",
    );
}

/// FIXED (a write is made only under the lease, else refused); kept as a
/// regression test. WAS A FINDING (from (3) with leases and two writers,
/// found by proptest once leases were modelled). `a` owns session 1 and is
/// paused; `c`, its replica, reads through (`a` answers the old version) and
/// writes version 2 (`c2`). `a` resumes, its copies in doubt: it reads
/// through too, and `c`'s answer is lost, so it writes its own version 2
/// (`a3`). Each write's copy to the other writer is lost, and each goes on to
/// a different stand-in (`b`, `d`), which stores it: both are acknowledged at
/// version 2. Neither wrote under a lease: a write made after a mere
/// read-through is not exclusive.
#[test]
fn two_writers_after_read_throughs_are_both_acknowledged_at_one_version() {
    let checks = Checks {
        versions: true,
        memory_reads: true,
        ..Checks::default()
    };
    replay_case_with(
        checks,
        "4741089321174149062 2 true false 7,0,0,190 4,0,0,170 0,0,2,90 0,0,2,80 6,0,0,43 \
         6,0,0,80 0,1,2,30 0,0,0,30 0,1,1,90 7,0,0,100 0,0,1,0 0,4,0,100",
        true,
    );
}

/// FIXED (a write is acknowledged only under the lease it began under);
/// kept as a regression test. WAS A FINDING (see the module doc); found by
/// (3) with leases across
/// ring changes. `e` joins and owns session 0; under its lease it writes
/// version 2 (`e1`); its copy to `c` is lost, and `e` is paused for 600 ms
/// mid-round. Its lease runs out; `c`, the next holder, takes over under its
/// own lease and writes version 2 on its copy (`c3`), acknowledged through
/// stand-in `d`. `e` resumes and goes on with its round: the refusals of
/// `c` and `d` (which hold `c3`) are lost, and stand-in `b` stores `e1`:
/// both are acknowledged at version 2.
#[test]
fn a_write_round_that_outlives_its_lease_is_acknowledged() {
    let checks = Checks {
        versions: true,
        ..Checks::default()
    };
    replay_case_with(
        checks,
        "9687551271738860540 2 false true 4,0,0,110 7,4,0,110 0,0,2,80 0,0,0,70 6,4,0,103 \
         0,0,0,70 0,4,0,110 0,0,1,30 4,0,0,40 0,0,1,0 4,0,0,60 0,0,1,0 4,0,0,0",
        true,
    );
}

/// FIXED (as above); kept as a regression test. WAS A FINDING (from (5)
/// with leases and two writers). After `d` left, `c` writes session 4 under
/// its lease (`c1`, version 2, acknowledged). `b` gets its lease, reads
/// through (`c`'s answer lost) and writes version 3 (`b2`); its copy to `c`
/// is lost, its lease ends mid-round and `c` holds one again; `b` is
/// acknowledged through stand-in `a`, and `c` serves `c1` from memory: a
/// stale read under a lease.
#[test]
fn a_read_under_a_lease_misses_a_write_whose_round_outlived_its_own() {
    let checks = Checks {
        memory_reads: true,
        ..Checks::default()
    };
    replay_case_with(
        checks,
        "11189322936765996340 2 true true 4,0,0,150 9,0,1,118 0,0,4,160 7,3,0,150 7,0,0,80 \
         9,0,4,185 4,0,1,50 0,0,2,100 4,0,4,0",
        true,
    );
}

/// Replays one case: `CORE_REPLAY="seed rf concurrent changes
/// kind,node,session,dt ..."`, with the checks `CORE_CHECKS` names (copies,
/// won, reads, versions, handoff, memory; all by default), leases modelled
/// when `CORE_LEASES` is set, printing what happened to the session of the
/// first failure.
#[test]
#[ignore = "a tool: replays the case in CORE_REPLAY"]
fn replay() {
    let Ok(case) = std::env::var("CORE_REPLAY") else {
        return;
    };
    let checks = match std::env::var("CORE_CHECKS") {
        Ok(only) => Checks {
            copies: only.contains("copies"),
            copies_won: only.contains("won"),
            reads: only.contains("reads"),
            versions: only.contains("versions"),
            handoff: only.contains("handoff"),
            memory_reads: only.contains("memory"),
        },
        Err(_) => Checks::all(),
    };
    replay_case_with(checks, &case, std::env::var("CORE_LEASES").is_ok());
}
