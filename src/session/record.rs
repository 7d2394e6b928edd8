//! What a node holds under a session id (a live session or a tombstone), its wire
//! form for replication, and the one rule that decides between two copies.
//!
//! Conflict rule, the same on every node: the copy with the higher `version` wins;
//! on equal versions the later `updated_at`; then a tombstone beats a live copy;
//! then the greater data text. Replication, handoff, read-through and repair all
//! merge with [`Record::supersedes`], so copies converge whatever the order in
//! which they arrive.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Session, UnixMillis};

/// The highest version a copy from a peer may carry: 2^53 - 1, the largest
/// integer every JSON client reads exactly (the version is the API's `ETag`).
/// A copy past it would stop every later write from following it.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// A deleted session, kept long enough that no stale copy can bring it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub version: u64,
    pub updated_at: UnixMillis,
    /// Dropped after this: by then every stale copy has expired too.
    pub expires_at: UnixMillis,
}

/// A store entry.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A session.
    Live(Session),
    /// A deleted session.
    Tombstone(Tombstone),
}

impl Entry {
    /// When it may be forgotten.
    pub fn expires_at(&self) -> UnixMillis {
        match self {
            Entry::Live(s) => s.expires_at,
            Entry::Tombstone(t) => t.expires_at,
        }
    }

    /// Whether it may be forgotten at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at() <= now
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        match self {
            Entry::Live(s) => s.version,
            Entry::Tombstone(t) => t.version,
        }
    }

    /// When it was last written.
    pub fn updated_at(&self) -> UnixMillis {
        match self {
            Entry::Live(s) => s.updated_at,
            Entry::Tombstone(t) => t.updated_at,
        }
    }

    fn order_key(&self) -> (u64, UnixMillis, bool, &str) {
        match self {
            Entry::Live(s) => (s.version, s.updated_at, false, s.data.get()),
            Entry::Tombstone(t) => (t.version, t.updated_at, true, ""),
        }
    }

    /// Whether this copy wins over `other` under the conflict rule.
    pub fn supersedes(&self, other: &Entry) -> bool {
        self.order_key().cmp(&other.order_key()) == Ordering::Greater
    }
}

/// The wire form of an [`Entry`]: `data` is absent for a tombstone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The session id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// When it was last written.
    pub updated_at: UnixMillis,
    /// When it was created (0 for a tombstone).
    pub created_at: UnixMillis,
    /// When it expires.
    pub expires_at: UnixMillis,
    /// Its idle timeout (0 for a tombstone).
    pub ttl_ms: u64,
    /// The data; absent for a tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// A new version from a writer waiting to acknowledge it (see
    /// [`crate::session::Store::merge_write`]), not a plain copy. A field of
    /// the record rather than a list of its own, so that a node of an older
    /// version still merges it as a copy during a rolling upgrade.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
}

impl Record {
    /// The wire form of `entry` under `id`.
    pub fn from_entry(id: &str, entry: &Entry) -> Record {
        match entry {
            Entry::Live(s) => Record {
                id: id.to_owned(),
                version: s.version,
                updated_at: s.updated_at,
                created_at: s.created_at,
                expires_at: s.expires_at,
                ttl_ms: s.ttl_ms,
                data: Some(s.data.clone()),
                write: false,
            },
            Entry::Tombstone(t) => Record {
                id: id.to_owned(),
                version: t.version,
                updated_at: t.updated_at,
                created_at: 0,
                expires_at: t.expires_at,
                ttl_ms: 0,
                data: None,
                write: false,
            },
        }
    }

    /// The entry this record describes; `None` when the data is not a JSON
    /// object or the version is past [`MAX_VERSION`].
    pub fn into_entry(self) -> Option<Entry> {
        if self.version > MAX_VERSION {
            return None;
        }
        Some(match self.data {
            Some(data) => {
                if !data.get().trim_start().starts_with('{') {
                    return None;
                }
                Entry::Live(Session {
                    data,
                    version: self.version,
                    created_at: self.created_at,
                    updated_at: self.updated_at,
                    expires_at: self.expires_at,
                    ttl_ms: self.ttl_ms,
                    synced_expires_at: None,
                })
            }
            None => Entry::Tombstone(Tombstone {
                version: self.version,
                updated_at: self.updated_at,
                expires_at: self.expires_at,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::to_raw;
    use proptest::prelude::*;

    fn live(version: u64, updated_at: u64, data: &str) -> Entry {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data).unwrap();
        Entry::Live(Session {
            data: to_raw(&map),
            version,
            created_at: 0,
            updated_at,
            expires_at: 1_000,
            ttl_ms: 1_000,
            synced_expires_at: None,
        })
    }

    fn tomb(version: u64, updated_at: u64) -> Entry {
        Entry::Tombstone(Tombstone {
            version,
            updated_at,
            expires_at: 1_000,
        })
    }

    #[test]
    fn the_higher_version_wins_then_the_later_write() {
        assert!(live(3, 0, "{}").supersedes(&live(2, 99, r#"{"a":1}"#)));
        assert!(live(2, 5, "{}").supersedes(&live(2, 4, r#"{"z":1}"#)));
        assert!(
            tomb(2, 5).supersedes(&live(2, 5, r#"{"z":1}"#)),
            "a delete wins a tie"
        );
        assert!(
            live(3, 0, "{}").supersedes(&tomb(2, 9)),
            "a later write after a delete"
        );
        assert!(
            !live(2, 5, "{}").supersedes(&live(2, 5, "{}")),
            "equal copies: no change"
        );
    }

    #[test]
    fn records_round_trip() {
        for entry in [live(4, 7, r#"{"n":"Ada"}"#), tomb(5, 8)] {
            let record = Record::from_entry("x", &entry);
            let json = serde_json::to_string(&record).unwrap();
            let back: Record = serde_json::from_str(&json).unwrap();
            let back = back.into_entry().unwrap();
            assert!(!back.supersedes(&entry) && !entry.supersedes(&back));
        }
    }

    #[test]
    fn a_record_whose_data_is_not_an_object_is_refused() {
        let json = r#"{"id":"x","version":1,"updated_at":0,"created_at":0,"expires_at":9,"ttl_ms":9,"data":[1]}"#;
        let record: Record = serde_json::from_str(json).unwrap();
        assert!(record.into_entry().is_none());
    }

    proptest! {
        /// Whatever order copies arrive in, every node keeps the same winner.
        #[test]
        fn merging_is_order_independent(copies in proptest::collection::vec((0u64..4, 0u64..4, any::<bool>(), 0u8..3), 1..8)) {
            let entries: Vec<Entry> = copies
                .iter()
                .map(|&(v, u, dead, d)| if dead { tomb(v, u) } else { live(v, u, &format!(r#"{{"d":{d}}}"#)) })
                .collect();
            let winner = |order: &mut dyn Iterator<Item = &Entry>| {
                let mut best: Option<&Entry> = None;
                for e in order {
                    if best.is_none_or(|b| e.supersedes(b)) {
                        best = Some(e);
                    }
                }
                best.map(|e| e.order_key().0 .to_string() + &format!("{:?}", e.order_key()))
            };
            let forward = winner(&mut entries.iter());
            let backward = winner(&mut entries.iter().rev());
            prop_assert_eq!(forward, backward);
        }
    }
}
