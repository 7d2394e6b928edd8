//! The local session store: sharded maps under short-held locks, with sliding expiry
//! and tombstones.
//!
//! A std-style (`parking_lot`) mutex per shard is right here: every critical section
//! is a map operation with no `.await` inside, so contention is brief and a
//! tokio mutex would only add cost. Expired entries are never returned; the purge
//! task sweeps one shard per tick, so each tick's work is bounded by a shard's size.
//!
//! The store does not know who owns what: the owner calls [`Store::write`] and
//! friends (which bump versions), replicas call [`Store::merge`] (which keeps the
//! copy that wins under the conflict rule of [`Entry::supersedes`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::{Entry, Session, SessionId, Tombstone, UnixMillis};

const SHARDS: usize = 64;

/// Why a write was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no such session")]
    NotFound,
    /// The write named versions it applies to, and the session is at another.
    #[error("the session is at version {current}, not one the write names")]
    VersionMismatch { current: u64 },
    /// Values the writer read have changed since (a transaction's read set).
    #[error("the session changed since it was read (now version {current})")]
    Conflict { current: u64 },
    #[error("session id already in use")]
    IdTaken,
    /// The session's data would exceed the store's limit; nothing was changed.
    #[error("the session would hold {size} bytes of data, over max_session_bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// What became of a copy offered to [`Store::merge_report`].
#[derive(Debug)]
pub enum Merged {
    /// It won and is now held.
    Applied,
    /// Equal to what is held, or expired: nothing changed.
    Ignored,
    /// The held copy wins over it; here is the held copy.
    Superseded(Entry),
    /// Its data is larger than this store accepts: not stored (a peer with a
    /// larger `max_session_bytes`, or a hostile one).
    TooLarge,
}

/// What a write does to a live session (see [`Store::write`]).
#[derive(Debug, Default)]
pub struct Change {
    /// The new data; `None` keeps it.
    pub data: Option<Box<RawValue>>,
    /// A new idle timeout in milliseconds; `None` keeps it.
    pub ttl_ms: Option<u64>,
}

impl Change {
    /// New data, same timeout.
    pub fn data(data: Box<RawValue>) -> Change {
        Change {
            data: Some(data),
            ttl_ms: None,
        }
    }
}

/// Checks that a write may apply to a session at `current` when it names the
/// versions `allowed` (HTTP's `If-Match`; empty: any version).
pub fn check_version(allowed: &[u64], current: u64) -> Result<(), WriteError> {
    match allowed.is_empty() || allowed.contains(&current) {
        true => Ok(()),
        false => Err(WriteError::VersionMismatch { current }),
    }
}

/// What the store knows of an id.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    Live,
    /// Deleted: a miss that needs no look-up elsewhere.
    Deleted,
    Unknown,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<SessionId, Entry>,
    /// Live copies held from before this process was paused (see
    /// [`Store::doubt_all`]): served only after a look at the other holders.
    /// Empty, and free, unless the process was paused.
    doubted: HashSet<SessionId>,
}

impl Shard {
    /// A live, unexpired session that is not in doubt.
    fn trusted_live(&mut self, id: &SessionId, now: UnixMillis) -> Option<&mut Session> {
        if !self.doubted.is_empty() && self.doubted.contains(id) {
            return None;
        }
        match self.entries.get_mut(id) {
            Some(Entry::Live(s)) if !s.is_expired(now) => Some(s),
            _ => None,
        }
    }
}

/// The sessions and copies one node holds (see the module doc).
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    /// Entries held over all shards, kept with every insert and removal (so
    /// that a create's `max_sessions` check takes no lock).
    count: AtomicUsize,
    /// Most bytes of data (compact JSON text) a live session may hold, checked
    /// on every write and every copy taken in.
    max_data_bytes: usize,
}

impl Default for Store {
    /// A store with no size limit.
    fn default() -> Self {
        Store::new(usize::MAX)
    }
}

/// An equal copy with a later expiry (the owner's reads slid it): takes the
/// later expiry, which is then a peer's (see [`Session::synced_expires_at`]).
/// Returns whether anything changed.
fn extend_expiry(held: &mut Entry, incoming: &Entry) -> bool {
    match (held, incoming) {
        (Entry::Live(h), Entry::Live(i)) if i.expires_at > h.expires_at => {
            h.expires_at = i.expires_at;
            h.synced_expires_at = None;
            true
        }
        _ => false,
    }
}

/// How far expiry may run ahead of what replicas were told before the owner
/// tells them again: a quarter of the session's ttl. Also how much longer
/// than its idle timeout a session may live on a node that takes it over.
fn touch_slack(ttl_ms: u64) -> u64 {
    ttl_ms / 4
}

impl Store {
    /// An empty store whose sessions hold at most `max_data_bytes` of data.
    pub fn new(max_data_bytes: usize) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            count: AtomicUsize::new(0),
            max_data_bytes,
        }
    }

    /// Most bytes of data a session may hold here.
    pub fn max_data_bytes(&self) -> usize {
        self.max_data_bytes
    }

    /// Refuses data over the limit.
    pub fn check_size(&self, data: &RawValue) -> Result<(), WriteError> {
        let size = data.get().len();
        match size > self.max_data_bytes {
            true => Err(WriteError::TooLarge {
                size,
                max: self.max_data_bytes,
            }),
            false => Ok(()),
        }
    }

    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        &self.shards[id.shard_hash() % self.shards.len()]
    }

    /// Reads a live session and slides its expiry; `f` sees it under the lock.
    /// The second value is the entry to send to the other holders when its
    /// expiry has run far enough ahead of what this node last told them, or
    /// when it has told them nothing since it took the copy in from a peer
    /// (see [`replica_copy`]).
    /// On a miss, `f` comes back unused.
    pub fn read<T, F: FnOnce(&Session) -> T>(
        &self,
        id: &SessionId,
        now: UnixMillis,
        f: F,
    ) -> Result<(T, Option<Entry>), F> {
        let mut shard = self.shard(id).lock();
        if shard.entries.get(id).is_some_and(|e| e.is_expired(now)) {
            if shard.entries.remove(id).is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            shard.doubted.remove(id);
            return Err(f);
        }
        let Some(session) = shard.trusted_live(id, now) else {
            return Err(f);
        };
        session.touch(now);
        // A copy taken in from a peer (`None`): whatever the others were told,
        // it was not by this node, so they are told now.
        let due = session.synced_expires_at.is_none_or(|synced| {
            session.expires_at >= synced.saturating_add(touch_slack(session.ttl_ms))
        });
        let touch = due.then(|| {
            session.synced_expires_at = Some(session.expires_at);
            Entry::Live(session.clone())
        });
        Ok((f(session), touch))
    }

    /// What the store knows of `id` (expired entries and doubted copies count
    /// as unknown).
    pub fn known(&self, id: &SessionId, now: UnixMillis) -> Known {
        let shard = self.shard(id).lock();
        if shard.doubted.contains(id) {
            return Known::Unknown;
        }
        match shard.entries.get(id) {
            Some(e) if e.is_expired(now) => Known::Unknown,
            Some(Entry::Live(_)) => Known::Live,
            Some(Entry::Tombstone(_)) => Known::Deleted,
            None => Known::Unknown,
        }
    }

    /// A copy of the entry for `id`, live or tombstone, unless expired.
    pub fn entry(&self, id: &SessionId, now: UnixMillis) -> Option<Entry> {
        self.shard(id)
            .lock()
            .entries
            .get(id)
            .filter(|e| !e.is_expired(now))
            .cloned()
    }

    /// Stores a new session under an id not in use. Refused, storing nothing,
    /// when the id is taken or the data is over the size limit.
    pub fn insert_new(
        &self,
        id: SessionId,
        session: Session,
        now: UnixMillis,
    ) -> Result<(), WriteError> {
        self.check_size(&session.data)?;
        let mut shard = self.shard(&id).lock();
        match shard.entries.get(&id) {
            Some(existing) if !existing.is_expired(now) => Err(WriteError::IdTaken),
            _ => {
                if shard.entries.insert(id, Entry::Live(session)).is_none() {
                    self.count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }

    /// Changes a live session: `change` sees it and says what to change (or
    /// refuses, for example on a precondition); the result is checked against
    /// the size limit (a refused write changes nothing), the version is bumped
    /// and the expiry slides. Returns what `f` makes of the written session, and
    /// the entry to replicate.
    pub fn write<T>(
        &self,
        id: &SessionId,
        now: UnixMillis,
        change: impl FnOnce(&Session) -> Result<Change, WriteError>,
        f: impl FnOnce(&Session) -> T,
    ) -> Result<(T, Entry), WriteError> {
        let mut shard = self.shard(id).lock();
        let Some(session) = shard.trusted_live(id, now) else {
            return Err(WriteError::NotFound);
        };
        let Change { data, ttl_ms } = change(session)?;
        if let Some(data) = &data {
            let size = data.get().len();
            if size > self.max_data_bytes {
                return Err(WriteError::TooLarge {
                    size,
                    max: self.max_data_bytes,
                });
            }
        }
        if let Some(data) = data {
            session.data = data;
        }
        if let Some(ttl_ms) = ttl_ms {
            session.ttl_ms = ttl_ms;
        }
        // Saturating: a copy from a peer may carry any number.
        session.version = session.version.saturating_add(1);
        session.updated_at = now.max(session.updated_at);
        session.touch(now);
        session.synced_expires_at = Some(session.expires_at);
        Ok((f(session), Entry::Live(session.clone())))
    }

    /// Stores `session` under `id` whatever is held there: a live session is
    /// replaced (its version bumped, its creation time kept), a deleted or
    /// unknown one is started at the version after its tombstone's. For stores
    /// that name their own keys (tower-sessions); checks the size limit.
    pub fn put(
        &self,
        id: SessionId,
        mut session: Session,
        now: UnixMillis,
    ) -> Result<(Session, Entry), WriteError> {
        self.check_size(&session.data)?;
        let mut shard = self.shard(&id).lock();
        if let Some(held) = shard.entries.get(&id).filter(|e| !e.is_expired(now)) {
            session.version = held.version().saturating_add(1);
            if let Entry::Live(live) = held {
                session.created_at = live.created_at;
            }
            session.updated_at = now.max(held.updated_at());
        }
        let entry = Entry::Live(session.clone());
        if shard.entries.insert(id, entry.clone()).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        shard.doubted.remove(&id);
        Ok((session, entry))
    }

    /// Deletes a live session, leaving a tombstone until any stale copy of it
    /// has expired; `check` may refuse (a precondition). Returns the tombstone
    /// to replicate.
    pub fn delete(
        &self,
        id: &SessionId,
        now: UnixMillis,
        check: impl FnOnce(&Session) -> Result<(), WriteError>,
    ) -> Result<Entry, WriteError> {
        let mut shard = self.shard(id).lock();
        let Some(session) = shard.trusted_live(id, now) else {
            return Err(WriteError::NotFound);
        };
        check(session)?;
        let tombstone = Entry::Tombstone(Tombstone {
            version: session.version.saturating_add(1),
            updated_at: now.max(session.updated_at),
            // Stale copies elsewhere expire by `expires_at` plus the replicas'
            // slack; keep the tombstone until then.
            expires_at: session
                .expires_at
                .saturating_add(touch_slack(session.ttl_ms))
                .saturating_add(session.ttl_ms),
        });
        if shard.entries.insert(*id, tombstone.clone()).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(tombstone)
    }

    /// Applies a copy from a peer when it wins over what is held (or nothing is).
    /// Returns whether the store changed. Expired copies are ignored, so nothing
    /// expired comes back.
    pub fn merge(&self, id: SessionId, incoming: Entry, now: UnixMillis) -> bool {
        matches!(self.merge_report(id, incoming, now), Merged::Applied)
    }

    /// [`Store::merge`], saying what became of the copy: when the held copy
    /// wins, the sender learns it (a writer that acted on a stale copy must
    /// not acknowledge its write).
    pub fn merge_report(&self, id: SessionId, incoming: Entry, now: UnixMillis) -> Merged {
        self.merge_with(id, incoming, now, false)
    }

    /// Takes a new version from a writer that waits to acknowledge it, only
    /// when it follows what is held: a higher version than the held copy's. A
    /// different copy at the same or a higher version here means the writer
    /// worked on a stale copy (two nodes each took itself for the owner, or the
    /// writer was paused): its write is refused and it gets the held copy back,
    /// so that no acknowledged write is overwritten by one made without it.
    pub fn merge_write(&self, id: SessionId, incoming: Entry, now: UnixMillis) -> Merged {
        self.merge_with(id, incoming, now, true)
    }

    fn merge_with(
        &self,
        id: SessionId,
        mut incoming: Entry,
        now: UnixMillis,
        write: bool,
    ) -> Merged {
        if incoming.is_expired(now) {
            return Merged::Ignored;
        }
        if let Entry::Live(s) = &mut incoming {
            if s.data.get().len() > self.max_data_bytes {
                return Merged::TooLarge;
            }
            // Its expiry is the sender's: it carries the replicas' slack
            // already, and says nothing of what the other holders hold.
            s.synced_expires_at = None;
        }
        let mut shard = self.shard(&id).lock();
        if let Some(held) = shard.entries.get_mut(&id).filter(|h| !h.is_expired(now)) {
            let (wins, loses) = (incoming.supersedes(held), held.supersedes(&incoming));
            let stale_write = write && held.version() >= incoming.version();
            if loses || (wins && stale_write) {
                return Merged::Superseded(held.clone());
            }
            if !wins {
                return match extend_expiry(held, &incoming) {
                    true => Merged::Applied,
                    false => Merged::Ignored,
                };
            }
        }
        if shard.entries.insert(id, incoming).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        shard.doubted.remove(&id);
        Merged::Applied
    }

    /// Puts `newer` in place of `ours`, a copy this node wrote and a replica
    /// refused because its own copy (`newer`) wins (see [`Store::merge_report`]),
    /// so that the refused write goes no further. Whatever arrived here since
    /// `ours` is kept when it wins over `newer`.
    pub fn replace_own(&self, id: SessionId, ours: &Entry, newer: Entry) {
        let mut shard = self.shard(&id).lock();
        let take = match shard.entries.get(&id) {
            None => true,
            Some(held) => {
                let still_ours = !held.supersedes(ours) && !ours.supersedes(held);
                still_ours || newer.supersedes(held)
            }
        };
        if take {
            if shard.entries.insert(id, newer).is_none() {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            shard.doubted.remove(&id);
        }
    }

    /// Marks every live copy held as doubtful: after the process was paused
    /// (SIGSTOP, a frozen VM), the cluster may have moved on without it, and
    /// each copy is served again only after [`Store::trust`] (the owner asks the
    /// other holders first). Returns how many copies were marked.
    pub fn doubt_all(&self) -> usize {
        let mut marked = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let Shard { entries, doubted } = &mut *shard;
            doubted.extend(
                entries
                    .iter()
                    .filter(|(_, e)| matches!(e, Entry::Live(_)))
                    .map(|(id, _)| *id),
            );
            marked += doubted.len();
        }
        marked
    }

    /// Marks as doubtful the live copies whose id `regained` picks (copies this
    /// node holds again after a ring change: writes went elsewhere meanwhile).
    /// Returns how many were marked.
    pub fn doubt_where(&self, mut regained: impl FnMut(&SessionId) -> bool) -> usize {
        let mut marked = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let Shard { entries, doubted } = &mut *shard;
            for (id, entry) in entries.iter() {
                if matches!(entry, Entry::Live(_)) && regained(id) && doubted.insert(*id) {
                    marked += 1;
                }
            }
        }
        marked
    }

    /// Whether a live copy of `id` is held, trusted or in doubt.
    pub fn has_copy(&self, id: &SessionId) -> bool {
        matches!(self.shard(id).lock().entries.get(id), Some(Entry::Live(_)))
    }

    /// Lifts the doubt on one copy (its other holders were asked).
    pub fn trust(&self, id: &SessionId) {
        let mut shard = self.shard(id).lock();
        if !shard.doubted.is_empty() {
            shard.doubted.remove(id);
        }
    }

    /// Drops a copy this node no longer needs, unless it changed since `version`.
    pub fn discard(&self, id: &SessionId, version: u64) -> bool {
        let mut shard = self.shard(id).lock();
        match shard.entries.get(id) {
            Some(e) if e.version() <= version => {
                if shard.entries.remove(id).is_some() {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                }
                shard.doubted.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Removes the expired entries of one shard (`tick` picks which, round robin).
    /// Returns how many were removed.
    pub fn purge_shard(&self, tick: usize, now: UnixMillis) -> usize {
        let mut shard = self.shards[tick % self.shards.len()].lock();
        let Shard { entries, doubted } = &mut *shard;
        let before = entries.len();
        entries.retain(|_, e| !e.is_expired(now));
        if !doubted.is_empty() {
            doubted.retain(|id| entries.contains_key(id));
        }
        let purged = before - entries.len();
        self.count.fetch_sub(purged, Ordering::Relaxed);
        purged
    }

    /// How long the purge task waits between two shards so that every entry is
    /// looked at about once per `sweep` period.
    pub fn purge_interval(sweep: Duration) -> Duration {
        (sweep / SHARDS as u32).max(Duration::from_millis(5))
    }

    /// Number of entries held (tombstones and not yet purged expired ones included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many shards it has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Copies of the unexpired entries of shard `i`, taken under one short lock.
    pub fn shard_entries(&self, i: usize, now: UnixMillis) -> Vec<(SessionId, Entry)> {
        let shard = self.shards[i % self.shards.len()].lock();
        shard
            .entries
            .iter()
            .filter(|(_, e)| !e.is_expired(now))
            .map(|(id, e)| (*id, e.clone()))
            .collect()
    }

    /// Calls `f` with every unexpired entry held, live or tombstone (under the
    /// shard locks, one shard at a time: `f` must be quick).
    pub fn for_each_entry(&self, now: UnixMillis, mut f: impl FnMut(&SessionId, &Entry)) {
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (id, e) in shard.entries.iter() {
                if !e.is_expired(now) {
                    f(id, e);
                }
            }
        }
    }

    /// Calls `f` with the id of every live session held (under the shard locks:
    /// `f` must be quick).
    pub fn for_each_live(&self, now: UnixMillis, mut f: impl FnMut(&SessionId)) {
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (id, e) in shard.entries.iter() {
                if matches!(e, Entry::Live(_)) && !e.is_expired(now) {
                    f(id);
                }
            }
        }
    }
}

/// The copy of `entry` to send to other holders. The expiry of a session this
/// node served (read or wrote) since it last took a copy in is pushed out by
/// the touch slack, so that no other holder expires a session that this node
/// still serves: reads slide this node's expiry without telling the others
/// until it has moved by that much. A copy taken in from a peer and not served
/// here since carries that slack already and goes on as it is: passed from
/// node to node (handoff, read-through), a session gains the slack once, not
/// at every hop, and so outlives its idle timeout by at most a quarter of it.
pub fn replica_copy(entry: &Entry) -> Entry {
    match entry {
        Entry::Live(s) if s.synced_expires_at.is_some() => {
            let mut s = s.clone();
            s.expires_at = s.expires_at.saturating_add(touch_slack(s.ttl_ms));
            Entry::Live(s)
        }
        entry => entry.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{empty_object, to_raw};
    use proptest::prelude::*;

    fn session(ttl_ms: u64, now: UnixMillis) -> Session {
        Session::new(empty_object(), Duration::from_millis(ttl_ms), now)
    }

    fn replace(_: &Session) -> Result<Change, WriteError> {
        Ok(Change::data(to_raw(
            serde_json::json!({"a": 1}).as_object().unwrap(),
        )))
    }

    /// `replace`, if the session is at `version`.
    fn replace_at(version: u64) -> impl FnOnce(&Session) -> Result<Change, WriteError> {
        move |s| {
            check_version(&[version], s.version)?;
            replace(s)
        }
    }

    fn at(version: u64) -> impl FnOnce(&Session) -> Result<(), WriteError> {
        move |s| check_version(&[version], s.version)
    }

    fn any(_: &Session) -> Result<(), WriteError> {
        Ok(())
    }

    #[test]
    fn reads_slide_the_expiry() {
        let store = Store::default();
        let id = SessionId::random();
        assert!(store.insert_new(id, session(1_000, 0), 0).is_ok());
        assert_eq!(
            store.read(&id, 900, |s| s.expires_at).ok().map(|r| r.0),
            Some(1_900)
        );
        assert!(store.read(&id, 1_800, |_| ()).is_ok());
        assert!(
            store.read(&id, 2_800, |_| ()).is_err(),
            "expired after idling a whole ttl"
        );
        assert_eq!(
            store.len(),
            0,
            "an expired session found on read is dropped"
        );
    }

    #[test]
    fn reads_ask_for_a_touch_once_expiry_ran_a_quarter_ttl_ahead() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        assert!(store.read(&id, 100, |_| ()).ok().unwrap().1.is_none());
        let touch = store
            .read(&id, 250, |_| ())
            .ok()
            .unwrap()
            .1
            .expect("a touch is due");
        assert_eq!(touch.expires_at(), 1_250);
        assert!(
            store.read(&id, 300, |_| ()).ok().unwrap().1.is_none(),
            "not again right away"
        );
    }

    #[test]
    fn writes_bump_the_version_and_check_if_match() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        assert_eq!(
            store
                .write(&id, 1, replace_at(1), |s| s.version)
                .map(|r| r.0),
            Ok(2)
        );
        assert_eq!(
            store
                .write(&id, 2, replace_at(1), |s| s.version)
                .map(|r| r.0),
            Err(WriteError::VersionMismatch { current: 2 })
        );
        assert_eq!(
            store
                .read(&id, 3, |s| s.data.get().to_owned())
                .ok()
                .unwrap()
                .0,
            r#"{"a":1}"#
        );
        assert_eq!(
            store
                .write(&SessionId::random(), 2, replace, |_| ())
                .map(|r| r.0),
            Err(WriteError::NotFound)
        );
    }

    #[test]
    fn the_size_limit_holds_for_every_way_in_and_a_refusal_changes_nothing() {
        let store = Store::new(16);
        let id = SessionId::random();
        let data = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let sized = |text: &str| Session::new(data(text), Duration::from_secs(1), 0);
        assert_eq!(
            store.insert_new(id, sized(r#"{"a":"0123456789abc"}"#), 0),
            Err(WriteError::TooLarge { size: 21, max: 16 })
        );
        assert!(store.is_empty());
        store.insert_new(id, sized(r#"{"a":"01"}"#), 0).unwrap();
        // A write whose result grows past the limit (a merge patch adding a
        // field, say) is refused whole: same data, same version.
        let grow = |_: &Session| Ok(Change::data(data(r#"{"a":"01","b":"234"}"#)));
        assert_eq!(
            store.write(&id, 1, grow, |_| ()).err(),
            Some(WriteError::TooLarge { size: 20, max: 16 })
        );
        assert_eq!(
            store
                .read(&id, 2, |s| (s.version, s.data.get().to_owned()))
                .ok()
                .map(|r| r.0),
            Some((1, r#"{"a":"01"}"#.to_owned()))
        );
        // A copy from a peer over the limit is not taken either.
        let mut big = sized(r#"{"a":"0123456789abc"}"#);
        big.version = 7;
        assert!(matches!(
            store.merge_report(id, Entry::Live(big.clone()), 3),
            Merged::TooLarge
        ));
        assert!(matches!(
            store.merge_write(id, Entry::Live(big), 3),
            Merged::TooLarge
        ));
        assert_eq!(store.entry(&id, 4).map(|e| e.version()), Some(1));
        // At the limit exactly is fine.
        let at_limit = |_: &Session| Ok(Change::data(data(r#"{"a":"01234567"}"#)));
        assert!(store.write(&id, 5, at_limit, |_| ()).is_ok());
    }

    #[test]
    fn deletes_leave_a_tombstone_that_stale_copies_cannot_beat() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        let stale = store.entry(&id, 0).unwrap();
        assert!(store.delete(&id, 5, at(7)).is_err());
        let tombstone = store.delete(&id, 5, at(1)).unwrap();
        assert_eq!(tombstone.version(), 2);
        assert_eq!(store.known(&id, 6), Known::Deleted);
        assert!(
            !store.merge(id, stale, 6),
            "a stale copy does not resurrect it"
        );
        assert!(store.read(&id, 6, |_| ()).is_err());
        assert!(matches!(
            store.delete(&id, 7, any),
            Err(WriteError::NotFound)
        ));
    }

    #[test]
    fn merge_keeps_the_winning_copy_and_ignores_expired_ones() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        let (_, v2) = store.write(&id, 10, replace, |_| ()).unwrap();
        let other = Store::default();
        assert!(other.merge(id, v2.clone(), 10));
        let v1 = Entry::Live(session(1_000, 0));
        assert!(
            !other.merge(id, v1, 11),
            "an older version does not replace a newer one"
        );
        assert_eq!(other.entry(&id, 12).unwrap().version(), 2);
        assert!(
            !other.merge(SessionId::random(), Entry::Live(session(10, 0)), 50),
            "expired copies are dropped"
        );
    }

    #[test]
    fn insert_new_never_overwrites_a_live_session() {
        let store = Store::default();
        let id = SessionId::random();
        assert!(store.insert_new(id, session(1_000, 0), 0).is_ok());
        assert!(store.insert_new(id, session(1_000, 0), 10).is_err());
        assert!(
            store.insert_new(id, session(1_000, 0), 2_000).is_ok(),
            "an expired one may be replaced"
        );
    }

    #[test]
    fn purge_removes_only_expired_entries() {
        let store = Store::default();
        for i in 0..500 {
            store
                .insert_new(
                    SessionId::random(),
                    session(if i % 2 == 0 { 10 } else { 10_000 }, 0),
                    0,
                )
                .unwrap();
        }
        let purged: usize = (0..SHARDS).map(|tick| store.purge_shard(tick, 100)).sum();
        assert_eq!(purged, 250);
        assert_eq!(store.len(), 250);
    }

    #[test]
    fn the_count_follows_every_insert_and_removal() {
        let store = Store::default();
        let held =
            |store: &Store| -> usize { store.shards.iter().map(|s| s.lock().entries.len()).sum() };
        let ids: Vec<SessionId> = (0..40).map(|_| SessionId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            if i % 4 == 0 {
                store.insert_new(*id, session(10, 0), 0).unwrap();
            } else {
                store.insert_new(*id, session(1_000, 0), 0).unwrap();
                // A copy of a session already held.
                store.merge(*id, Entry::Live(session(1_000, 0)), 0);
            }
        }
        // Copies of sessions not held yet.
        for id in (0..10).map(|_| SessionId::random()) {
            store.merge(id, Entry::Live(session(1_000, 0)), 0);
        }
        assert_eq!((store.len(), held(&store)), (50, 50));
        store.delete(&ids[1], 5, any).unwrap();
        assert!(store.discard(&ids[2], 1));
        // Reading an expired entry drops it.
        assert!(store.read(&ids[0], 50, |_| ()).is_err());
        assert_eq!((store.len(), held(&store)), (48, 48));
        let purged: usize = (0..SHARDS).map(|tick| store.purge_shard(tick, 50)).sum();
        assert_eq!(purged, 9);
        assert_eq!((store.len(), held(&store)), (39, 39));
    }

    #[test]
    fn copies_with_absurd_numbers_are_served_edited_and_deleted() {
        // A peer's copy may carry any u64: nothing may overflow.
        let store = Store::default();
        let id = SessionId::random();
        let absurd = Session {
            version: u64::MAX,
            expires_at: u64::MAX,
            ttl_ms: u64::MAX,
            synced_expires_at: Some(u64::MAX),
            ..session(1_000, 0)
        };
        assert!(store.merge(id, Entry::Live(absurd), 10));
        assert!(store.read(&id, 20, |_| ()).is_ok());
        assert_eq!(
            replica_copy(&store.entry(&id, 20).unwrap()).expires_at(),
            u64::MAX
        );
        let (version, _) = store.write(&id, 30, replace, |s| s.version).unwrap();
        assert_eq!(version, u64::MAX);
        let tombstone = store.delete(&id, 40, any).unwrap();
        assert_eq!(tombstone.expires_at(), u64::MAX);
    }

    #[test]
    fn discard_keeps_copies_that_changed_since() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        store.write(&id, 1, replace, |_| ()).unwrap();
        assert!(!store.discard(&id, 1));
        assert!(store.discard(&id, 2));
        assert!(store.is_empty());
    }

    #[test]
    fn a_doubted_copy_is_not_served_until_trusted_again() {
        let store = Store::default();
        let (a, b) = (SessionId::random(), SessionId::random());
        store.insert_new(a, session(1_000, 0), 0).unwrap();
        store.insert_new(b, session(1_000, 0), 0).unwrap();
        assert_eq!(store.doubt_all(), 2);
        assert_eq!(store.known(&a, 10), Known::Unknown);
        assert!(store.read(&a, 10, |_| ()).is_err());
        assert_eq!(
            store.write(&a, 10, replace, |_| ()).err(),
            Some(WriteError::NotFound)
        );
        assert_eq!(store.delete(&a, 10, any).err(), Some(WriteError::NotFound));
        store.trust(&a);
        assert_eq!(store.known(&a, 10), Known::Live);
        assert!(store.read(&a, 10, |_| ()).is_ok());
        // A copy from a peer that wins replaces the doubted one and is trusted.
        let mut newer = session(1_000, 0);
        newer.version = 5;
        assert!(store.merge(b, Entry::Live(newer), 10));
        assert!(store.read(&b, 10, |s| s.version).is_ok_and(|(v, _)| v == 5));
    }

    #[test]
    fn a_held_copy_that_wins_is_reported_to_the_sender() {
        let store = Store::default();
        let id = SessionId::random();
        let mut held = session(1_000, 0);
        held.version = 3;
        store.merge(id, Entry::Live(held), 0);
        let mut stale = session(1_000, 0);
        stale.version = 2;
        match store.merge_report(id, Entry::Live(stale.clone()), 0) {
            Merged::Superseded(e) => assert_eq!(e.version(), 3),
            other => panic!("expected Superseded, got {other:?}"),
        }
        let mut same = session(1_000, 0);
        same.version = 3;
        assert!(matches!(
            store.merge_report(id, Entry::Live(same), 0),
            Merged::Ignored
        ));
    }

    #[test]
    fn a_refused_write_is_replaced_by_the_replicas_copy_unless_something_newer_came() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0).unwrap();
        let (_, ours) = store.write(&id, 10, replace, |_| ()).unwrap();
        let mut theirs = session(1_000, 0);
        theirs.version = 4;
        store.replace_own(id, &ours, Entry::Live(theirs.clone()));
        assert_eq!(store.entry(&id, 10).map(|e| e.version()), Some(4));
        // Something newer than the replica's copy arrived meanwhile: kept.
        let mut newest = session(1_000, 0);
        newest.version = 9;
        store.merge(id, Entry::Live(newest), 10);
        store.replace_own(id, &ours, Entry::Live(theirs));
        assert_eq!(store.entry(&id, 10).map(|e| e.version()), Some(9));
    }

    #[test]
    fn a_write_that_does_not_follow_the_held_copy_is_refused() {
        let store = Store::default();
        let id = SessionId::random();
        let at = |version, updated_at, data: serde_json::Value| {
            let mut s = session(1_000, 0);
            s.version = version;
            s.updated_at = updated_at;
            s.data = to_raw(data.as_object().unwrap());
            Entry::Live(s)
        };
        store.merge(id, at(5, 10, serde_json::json!({"w": 4})), 0);
        // Same version, later: the conflict rule would take it; a write is refused.
        match store.merge_write(id, at(5, 20, serde_json::json!({"w": 5})), 0) {
            Merged::Superseded(held) => assert_eq!(held.version(), 5),
            other => panic!("expected Superseded, got {other:?}"),
        }
        assert!(store
            .read(&id, 0, |s| s.data.get().to_owned())
            .is_ok_and(|(d, _)| d == r#"{"w":4}"#));
        // A duplicate of the held copy is no conflict; the next version is taken.
        assert!(matches!(
            store.merge_write(id, at(5, 10, serde_json::json!({"w": 4})), 0),
            Merged::Ignored
        ));
        assert!(matches!(
            store.merge_write(id, at(6, 30, serde_json::json!({"w": 6})), 0),
            Merged::Applied
        ));
    }

    /// The chaos soak's 404 for a live session (tests/chaos.rs), step by
    /// step. b served the session last; a ring change hands b's copy over
    /// to a (restarted); a serves the client's reads, sending each refresh
    /// it owes; then a fails, and b must still hold the session the client
    /// used less than a ttl ago. Before, a counted the copy it took in (b's
    /// expiry plus the slack) as what b held, so it told b nothing until its
    /// expiry passed b's by two slacks, and b answered 404.
    #[test]
    fn a_node_serving_a_copy_it_took_in_refreshes_the_others_first() {
        let ttl = 1_000;
        let (a, b) = (Store::default(), Store::default());
        let id = SessionId::random();
        b.insert_new(id, session(ttl, 0), 0).unwrap();
        assert!(a.merge(id, replica_copy(&b.entry(&id, 100).unwrap()), 100));
        let mut refreshes = 0;
        for now in [100, 200, 300, 400] {
            let (_, touch) = a.read(&id, now, |_| ()).ok().unwrap();
            if let Some(touch) = touch {
                refreshes += 1;
                b.merge(id, replica_copy(&touch), now);
            }
        }
        let (b_expiry, a_expiry) = (
            b.entry(&id, 400).map(|e| e.expires_at()),
            a.entry(&id, 400).map(|e| e.expires_at()),
        );
        assert!(
            b_expiry >= a_expiry,
            "b's copy expires at {b_expiry:?}, before a's at {a_expiry:?}"
        );
        assert!(
            b.read(&id, 400 + ttl - 1, |_| ()).is_ok(),
            "a failed: b serves the session read {} ms ago",
            ttl - 1
        );
        assert_eq!(refreshes, 2, "at once, then a quarter ttl later");
    }

    /// A copy passed on from node to node (handoff, read-through) takes the
    /// slack once: a session outlives its idle timeout by at most a quarter
    /// of it wherever it is served from.
    #[test]
    fn a_copy_passed_on_is_not_stretched_again() {
        let ttl = 1_000;
        let stores: Vec<Store> = (0..4).map(|_| Store::default()).collect();
        let id = SessionId::random();
        stores[0].insert_new(id, session(ttl, 0), 0).unwrap();
        for hop in 1..stores.len() {
            let copy = replica_copy(&stores[hop - 1].entry(&id, 0).unwrap());
            assert!(stores[hop].merge(id, copy, 0));
        }
        assert_eq!(
            stores
                .iter()
                .map(|s| s.entry(&id, 0).map(|e| e.expires_at()))
                .collect::<Vec<_>>(),
            [
                Some(ttl),
                Some(ttl + ttl / 4),
                Some(ttl + ttl / 4),
                Some(ttl + ttl / 4)
            ]
        );
    }

    /// One step of [`every_holder_keeps_a_session_for_its_ttl_and_at_most_a_quarter_more`].
    #[derive(Clone, Debug)]
    enum Step {
        /// `node` serves a read `after` ms after the last access; its
        /// refresh, if it sends one, reaches every other holder.
        Read { node: usize, after: u64 },
        /// `node` serves a write `after` ms after the last access; every
        /// other holder takes it.
        Write { node: usize, after: u64 },
        /// `from` passes its copy on to `to` (handoff after a ring change,
        /// or an answer to `to`'s read-through).
        Pass { from: usize, to: usize },
    }

    fn steps(nodes: usize, ttl: u64) -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            4 => (0..nodes, 0..ttl).prop_map(|(node, after)| Step::Read { node, after }),
            1 => (0..nodes, 0..ttl).prop_map(|(node, after)| Step::Write { node, after }),
            2 => (0..nodes, 0..nodes)
                .prop_filter("two nodes", |(from, to)| from != to)
                .prop_map(|(from, to)| Step::Pass { from, to }),
        ];
        proptest::collection::vec(step, 1..60)
    }

    proptest! {
        /// Whichever node serves a session (owners, nodes that take over,
        /// nodes it was handed to), as long as the copies sent arrive: every
        /// holder keeps it at least a ttl after the last access anywhere
        /// (a holder that takes over never answers 404 for a session in use),
        /// and no holder keeps it longer than a ttl and a quarter after.
        #[test]
        fn every_holder_keeps_a_session_for_its_ttl_and_at_most_a_quarter_more(
            steps in steps(3, 1_000)
        ) {
            let ttl = 1_000;
            let stores: Vec<Store> = (0..3).map(|_| Store::default()).collect();
            let id = SessionId::random();
            let (mut now, mut last_access) = (0, 0);
            stores[0].insert_new(id, session(ttl, now), now).unwrap();
            let created = stores[0].entry(&id, now).unwrap();
            for other in &stores[1..] {
                other.merge(id, replica_copy(&created), now);
            }
            for step in &steps {
                match *step {
                    Step::Read { node, after } => {
                        now = last_access + after;
                        last_access = now;
                        let touch = stores[node].read(&id, now, |_| ()).ok().map(|r| r.1);
                        prop_assert!(touch.is_some(), "{node} lost the session by {now}");
                        if let Some(Some(touch)) = touch {
                            for (_, other) in stores.iter().enumerate().filter(|(i, _)| *i != node) {
                                other.merge(id, replica_copy(&touch), now);
                            }
                        }
                    }
                    Step::Write { node, after } => {
                        now = last_access + after;
                        last_access = now;
                        let written = stores[node].write(&id, now, replace, |_| ());
                        prop_assert!(written.is_ok(), "{node} lost the session by {now}");
                        if let Ok((_, entry)) = written {
                            for (_, other) in stores.iter().enumerate().filter(|(i, _)| *i != node) {
                                prop_assert!(matches!(
                                    other.merge_write(id, replica_copy(&entry), now),
                                    Merged::Applied
                                ));
                            }
                        }
                    }
                    Step::Pass { from, to } => {
                        if let Some(entry) = stores[from].entry(&id, now) {
                            stores[to].merge(id, replica_copy(&entry), now);
                        }
                    }
                }
                for (node, store) in stores.iter().enumerate() {
                    let expiry = store.entry(&id, now).map(|e| e.expires_at());
                    prop_assert!(
                        expiry.is_some_and(|e| e >= last_access + ttl),
                        "{node}'s copy expires at {expiry:?}, before {} (last access {last_access} + ttl), after {step:?}",
                        last_access + ttl
                    );
                    prop_assert!(
                        expiry.is_some_and(|e| e <= last_access + ttl + ttl / 4),
                        "{node}'s copy expires at {expiry:?}, more than a quarter ttl after {} (last access {last_access} + ttl), after {step:?}",
                        last_access + ttl
                    );
                }
            }
        }
    }

    #[test]
    fn an_equal_copy_with_a_later_expiry_extends_it() {
        let store = Store::default();
        let id = SessionId::random();
        let s = session(1_000, 0);
        store.merge(id, Entry::Live(s.clone()), 0);
        let mut later = s;
        later.expires_at = 1_700;
        assert!(store.merge(id, Entry::Live(later), 0));
        assert_eq!(store.entry(&id, 0).map(|e| e.expires_at()), Some(1_700));
    }
}
