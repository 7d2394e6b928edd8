//! The local session store: sharded maps under short-held locks, with sliding expiry.
//!
//! A std-style (`parking_lot`) mutex per shard is right here: every critical section
//! is a map operation with no `.await` inside, so contention is brief and a
//! tokio mutex would only add cost. Expired sessions are never returned; the purge
//! task sweeps one shard per tick, so each tick's work is bounded by a shard's size.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::{Session, SessionId, UnixMillis};

const SHARDS: usize = 64;

/// Why a write was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no such session")]
    NotFound,
    #[error("version {current} does not match If-Match {expected}")]
    VersionMismatch { current: u64, expected: u64 },
}

type Shard = HashMap<SessionId, Session>;

pub struct Store {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Store {
    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        &self.shards[id.shard_hash() % self.shards.len()]
    }

    /// Reads a live session and slides its expiry; `f` sees it under the lock.
    pub fn read<T>(
        &self,
        id: &SessionId,
        now: UnixMillis,
        f: impl FnOnce(&Session) -> T,
    ) -> Option<T> {
        let mut shard = self.shard(id).lock();
        let session = shard.get_mut(id)?;
        if session.is_expired(now) {
            shard.remove(id);
            return None;
        }
        session.touch(now);
        Some(f(session))
    }

    /// Stores a new session under an id not in use. Returns false (and stores
    /// nothing) when the id is taken by a live session.
    pub fn insert_new(&self, id: SessionId, session: Session, now: UnixMillis) -> bool {
        let mut shard = self.shard(&id).lock();
        match shard.get(&id) {
            Some(existing) if !existing.is_expired(now) => false,
            _ => {
                shard.insert(id, session);
                true
            }
        }
    }

    /// Replaces or transforms a live session's data: `update` gets the current data
    /// and returns the new one. Checks `if_match`, bumps the version, slides expiry.
    /// `f` sees the written session under the lock.
    pub fn write<T>(
        &self,
        id: &SessionId,
        now: UnixMillis,
        if_match: Option<u64>,
        update: impl FnOnce(&RawValue) -> Box<RawValue>,
        f: impl FnOnce(&Session) -> T,
    ) -> Result<T, WriteError> {
        let mut shard = self.shard(id).lock();
        let session = match shard.get_mut(id) {
            Some(s) if !s.is_expired(now) => s,
            Some(_) => {
                shard.remove(id);
                return Err(WriteError::NotFound);
            }
            None => return Err(WriteError::NotFound),
        };
        if let Some(expected) = if_match {
            if expected != session.version {
                return Err(WriteError::VersionMismatch {
                    current: session.version,
                    expected,
                });
            }
        }
        session.data = update(&session.data);
        session.version += 1;
        session.touch(now);
        Ok(f(session))
    }

    /// Removes a session; true if a live one was there.
    pub fn remove(
        &self,
        id: &SessionId,
        now: UnixMillis,
        if_match: Option<u64>,
    ) -> Result<(), WriteError> {
        let mut shard = self.shard(id).lock();
        match shard.get(id) {
            Some(s) if !s.is_expired(now) => {
                if let Some(expected) = if_match {
                    if expected != s.version {
                        return Err(WriteError::VersionMismatch {
                            current: s.version,
                            expected,
                        });
                    }
                }
                shard.remove(id);
                Ok(())
            }
            Some(_) => {
                shard.remove(id);
                Err(WriteError::NotFound)
            }
            None => Err(WriteError::NotFound),
        }
    }

    /// Removes the expired sessions of one shard (`tick` picks which, round robin).
    /// Returns how many were removed.
    pub fn purge_shard(&self, tick: usize, now: UnixMillis) -> usize {
        let mut shard = self.shards[tick % self.shards.len()].lock();
        let before = shard.len();
        shard.retain(|_, s| !s.is_expired(now));
        before - shard.len()
    }

    /// How long the purge task waits between two shards so that every session is
    /// looked at about once per `sweep` period.
    pub fn purge_interval(sweep: Duration) -> Duration {
        (sweep / SHARDS as u32).max(Duration::from_millis(5))
    }

    /// Number of sessions held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every live session id, one shard lock at a time.
    pub fn for_each_id(&self, now: UnixMillis, mut f: impl FnMut(&SessionId)) {
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (id, s) in shard.iter() {
                if !s.is_expired(now) {
                    f(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{empty_object, to_raw};

    fn session(ttl_ms: u64, now: UnixMillis) -> Session {
        Session::new(empty_object(), Duration::from_millis(ttl_ms), now)
    }

    #[test]
    fn reads_slide_the_expiry() {
        let store = Store::default();
        let id = SessionId::random();
        assert!(store.insert_new(id, session(1_000, 0), 0));
        assert_eq!(store.read(&id, 900, |s| s.expires_at), Some(1_900));
        assert!(store.read(&id, 1_800, |_| ()).is_some());
        assert!(
            store.read(&id, 2_800, |_| ()).is_none(),
            "expired after idling a whole ttl"
        );
        assert_eq!(
            store.len(),
            0,
            "an expired session found on read is dropped"
        );
    }

    #[test]
    fn writes_bump_the_version_and_check_if_match() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0);
        let replace =
            |_: &RawValue| to_raw(&serde_json::json!({"a": 1}).as_object().unwrap().clone());
        assert_eq!(store.write(&id, 1, Some(1), replace, |s| s.version), Ok(2));
        assert_eq!(
            store.write(&id, 2, Some(1), replace, |s| s.version),
            Err(WriteError::VersionMismatch {
                current: 2,
                expected: 1
            })
        );
        assert_eq!(
            store.read(&id, 3, |s| s.data.get().to_owned()).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            store.write(&SessionId::random(), 2, None, replace, |_| ()),
            Err(WriteError::NotFound)
        );
    }

    #[test]
    fn insert_new_never_overwrites_a_live_session() {
        let store = Store::default();
        let id = SessionId::random();
        assert!(store.insert_new(id, session(1_000, 0), 0));
        assert!(!store.insert_new(id, session(1_000, 0), 10));
        assert!(
            store.insert_new(id, session(1_000, 0), 2_000),
            "an expired one may be replaced"
        );
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let store = Store::default();
        for i in 0..500 {
            store.insert_new(
                SessionId::random(),
                session(if i % 2 == 0 { 10 } else { 10_000 }, 0),
                0,
            );
        }
        let purged: usize = (0..SHARDS).map(|tick| store.purge_shard(tick, 100)).sum();
        assert_eq!(purged, 250);
        assert_eq!(store.len(), 250);
    }

    #[test]
    fn remove_honours_if_match() {
        let store = Store::default();
        let id = SessionId::random();
        store.insert_new(id, session(1_000, 0), 0);
        assert!(store.remove(&id, 1, Some(7)).is_err());
        assert_eq!(store.remove(&id, 1, Some(1)), Ok(()));
        assert_eq!(store.remove(&id, 1, None), Err(WriteError::NotFound));
    }
}
