//! Anti-entropy decisions, without I/O: what two holders compare (a digest of
//! the sessions they both hold, per bucket of ids), which buckets differ, and
//! which copies to send so that both end with the winning copy.
//!
//! A round, driven by the task in [`super::sync`]: a node A sends a peer B the
//! digest of the sessions A owns under the current ring and B holds a copy of
//! (with the ring's fingerprint: under different rings the sets differ and the
//! round is skipped, handoff is at work). B compares it with its own digest of
//! the same set and answers with a [`Summary`] of each copy it holds in the
//! buckets that differ. A then sends B, through the ordinary replication
//! batches, its copy of every session whose summary differs from B's: where
//! A's copy wins, B merges it; where B's wins, B's acknowledgement carries it
//! back and A merges it. Only owners send, as for writes: a replica's copy
//! carries an expiry pushed out by the touch slack, which must not flow back
//! to the owner and keep a session alive past its idle timeout. A copy the
//! owner itself lost comes back at its next use (read-through).
//!
//! The digest covers each copy's id, version, write time and kind (live or
//! tombstone), not its data or expiry: two copies of one version differ in
//! data only after a conflict, which the version rule settles on the next
//! write, and expiry slides on the owner with every read.

use std::collections::HashMap;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::session::{Entry, UnixMillis};

/// Buckets of a digest: a difference is narrowed to the copies of the buckets
/// that differ, about 1/256 of the shared sessions per lost copy.
pub const BUCKETS: usize = 256;

/// Most summaries one answer carries; the rest are compared in later rounds.
pub const MAX_SUMMARIES: usize = 2048;

/// What a holder tells a peer of one copy it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The session id.
    pub id: String,
    /// The copy's version.
    pub version: u64,
    /// When it was last written.
    pub updated_at: UnixMillis,
    /// Whether it is a tombstone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl Summary {
    /// The summary of `entry`, held under `id`.
    pub fn of(id: &str, entry: &Entry) -> Summary {
        Summary {
            id: id.to_owned(),
            version: entry.version(),
            updated_at: entry.updated_at(),
            deleted: matches!(entry, Entry::Tombstone(_)),
        }
    }

    #[cfg(test)]
    fn hash(&self) -> u64 {
        copy_hash(&self.id, self.version, self.updated_at, self.deleted)
    }
}

/// What a digest adds up for one copy: a hash of its summary's fields.
fn copy_hash(id: &str, version: u64, updated_at: UnixMillis, deleted: bool) -> u64 {
    let mut h = SipHasher13::new();
    h.write(id.as_bytes());
    h.write_u8(0xff);
    h.write_u64(version);
    h.write_u64(updated_at);
    h.write_u8(u8::from(deleted));
    h.finish()
}

/// The bucket of a session id.
pub fn bucket(id: &str) -> usize {
    let mut h = SipHasher13::new_with_keys(0x5e55, 0x10a5);
    h.write(id.as_bytes());
    (h.finish() % BUCKETS as u64) as usize
}

/// A digest of a set of copies: per bucket, the wrapping sum of the copies'
/// hashes. Order-independent, and equal for equal sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    sums: Vec<u64>,
}

impl Default for Digest {
    fn default() -> Digest {
        Digest {
            sums: vec![0; BUCKETS],
        }
    }
}

impl Digest {
    /// Adds a copy, by its summary (the tests' way; a node walks its store
    /// with [`Digest::add_copy`]).
    #[cfg(test)]
    pub fn add(&mut self, summary: &Summary) {
        self.add_hash(&summary.id, summary.hash());
    }

    /// Adds the copy `entry` held under `id`, as [`Digest::add`] adds its
    /// [`Summary`], without building one (a round walks every copy held).
    pub fn add_copy(&mut self, id: &str, entry: &Entry) {
        let deleted = matches!(entry, Entry::Tombstone(_));
        self.add_hash(
            id,
            copy_hash(id, entry.version(), entry.updated_at(), deleted),
        );
    }

    fn add_hash(&mut self, id: &str, hash: u64) {
        let b = bucket(id);
        self.sums[b] = self.sums[b].wrapping_add(hash);
    }

    /// Its wire form.
    pub fn sums(&self) -> &[u64] {
        &self.sums
    }

    /// The buckets where `theirs` (a peer's [`Digest::sums`]) differs from
    /// this digest; every bucket when it is malformed.
    pub fn differing(&self, theirs: &[u64]) -> Vec<usize> {
        if theirs.len() != BUCKETS {
            return (0..BUCKETS).collect();
        }
        (0..BUCKETS)
            .filter(|&b| self.sums[b] != theirs[b])
            .collect()
    }
}

/// The ids of the copies in `mine` (this node's summaries in the differing
/// buckets) to send to the peer whose summaries of those buckets are
/// `theirs`: every copy the peer lacks or holds otherwise. Sorted.
pub fn to_send(mine: &[Summary], theirs: &[Summary]) -> Vec<String> {
    let theirs: HashMap<&str, &Summary> = theirs.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut ids: Vec<String> = mine
        .iter()
        .filter(|s| theirs.get(s.id.as_str()) != Some(s))
        .map(|s| s.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, version: u64) -> Summary {
        Summary {
            id: id.to_owned(),
            version,
            updated_at: 1_000 + version,
            deleted: false,
        }
    }

    fn digest(summaries: &[Summary]) -> Digest {
        let mut d = Digest::default();
        for s in summaries {
            d.add(s);
        }
        d
    }

    fn ids(n: usize) -> Vec<Summary> {
        (0..n)
            .map(|i| summary(&format!("session-{i}"), 1))
            .collect()
    }

    #[test]
    fn a_copy_adds_what_its_summary_adds() {
        use crate::session::{empty_object, Session};
        let mut session = Session::new(empty_object(), std::time::Duration::from_secs(60), 5);
        session.version = 7;
        let live = Entry::Live(session);
        let (mut by_copy, mut by_summary) = (Digest::default(), Digest::default());
        by_copy.add_copy("s1", &live);
        by_summary.add(&Summary::of("s1", &live));
        assert_eq!(by_copy, by_summary);
        assert_ne!(by_copy, Digest::default());
    }

    #[test]
    fn equal_sets_in_any_order_have_equal_digests() {
        let a = ids(500);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(digest(&a), digest(&b));
        assert!(digest(&a).differing(digest(&b).sums()).is_empty());
    }

    #[test]
    fn a_missing_copy_shows_in_its_bucket_only() {
        let a = ids(500);
        let mut b = a.clone();
        let lost = b.remove(137);
        assert_eq!(
            digest(&a).differing(digest(&b).sums()),
            vec![bucket(&lost.id)]
        );
    }

    #[test]
    fn a_newer_version_a_later_write_or_a_tombstone_differs() {
        let a = ids(50);
        for change in [
            |s: &mut Summary| s.version += 1,
            |s: &mut Summary| s.updated_at += 1,
            |s: &mut Summary| s.deleted = true,
        ] {
            let mut b = a.clone();
            change(&mut b[7]);
            assert_eq!(
                digest(&a).differing(digest(&b).sums()),
                vec![bucket(&a[7].id)]
            );
        }
    }

    #[test]
    fn a_malformed_digest_differs_everywhere() {
        assert_eq!(Digest::default().differing(&[0; 3]).len(), BUCKETS);
    }

    #[test]
    fn sends_what_the_peer_lacks_or_holds_otherwise_and_nothing_else() {
        let mine = vec![summary("a", 1), summary("b", 2), summary("c", 3)];
        let theirs = vec![summary("a", 1), summary("b", 5), summary("z", 1)];
        assert_eq!(to_send(&mine, &theirs), vec!["b", "c"]);
        assert!(to_send(&mine, &mine).is_empty());
    }

    /// Two holders with random differences converge in one round each way when
    /// each merges what it is sent by the version rule, as replication does.
    #[test]
    fn rounds_both_ways_converge() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let base = ids(300);
            let mut a: HashMap<String, Summary> =
                base.iter().map(|s| (s.id.clone(), s.clone())).collect();
            let mut b = a.clone();
            for _ in 0..rng.random_range(1..20) {
                let id = format!("session-{}", rng.random_range(0..320));
                let side = if rng.random_bool(0.5) { &mut a } else { &mut b };
                match rng.random_range(0..3) {
                    0 => {
                        side.remove(&id);
                    }
                    _ => {
                        let v = rng.random_range(1..5);
                        side.insert(id.clone(), summary(&id, v));
                    }
                }
            }
            for (from, to) in [(0, 1), (1, 0)] {
                let (x, y) = if from == 0 { (&a, &b) } else { (&b, &a) };
                let dx = digest(&x.values().cloned().collect::<Vec<_>>());
                let dy = digest(&y.values().cloned().collect::<Vec<_>>());
                let buckets = dy.differing(dx.sums());
                let in_buckets = |m: &HashMap<String, Summary>| -> Vec<Summary> {
                    m.values()
                        .filter(|s| buckets.contains(&bucket(&s.id)))
                        .cloned()
                        .collect()
                };
                let sent = to_send(&in_buckets(x), &in_buckets(y));
                let copies: Vec<Summary> = sent.iter().map(|id| x[id].clone()).collect();
                let (x, y) = if to == 1 {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                for copy in copies {
                    // The receiver keeps the winner; the sender learns it back.
                    let winner = match y.get(&copy.id) {
                        Some(held)
                            if (held.version, held.updated_at)
                                >= (copy.version, copy.updated_at) =>
                        {
                            held.clone()
                        }
                        _ => copy,
                    };
                    y.insert(winner.id.clone(), winner.clone());
                    x.insert(winner.id.clone(), winner);
                }
            }
            assert_eq!(a, b);
        }
    }
}
