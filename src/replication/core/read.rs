//! Read-through: a node that must serve a session it does not hold, or holds
//! only in doubt, asks the other holders first. [`ReadThrough::candidates`]
//! says whom to ask; the answers go into a [`ReadThrough`], which says whether
//! they are enough to trust the best copy found (or a miss).
//!
//! Every acknowledged write is on `replication_factor` holders of the ring it
//! was made under (its writer and the peers that stored it: holders, or the
//! stand-ins past them, [`FALLBACKS`] at most): the asker's current ring or its
//! previous one (one change at a time). So the asker asks the holders and the
//! stand-ins under both. With fewer than `replication_factor` of them silent,
//! one that answered holds the latest acknowledged write. A member announcing
//! its departure counts like any other: until its last handoff pass is over
//! it may hold the only other copy, and its silence may be a lost message. (A
//! member that left, or that says its last pass is over, is not asked: it
//! holds nothing the new holders lack.)
//!
//! The asker's ring may change while it asks: a new holder it did not ask may
//! then hold the session, and its own copy may be handed off and dropped
//! meanwhile. Such a read-through is not complete, whatever the answers.
//!
//! A node that does not see a majority of the nodes it knows may be the
//! cut-off side of a partition: the others may have written the session under
//! a ring it never saw, whose holders it did not ask. It trusts nothing it
//! cannot confirm with at least one of them.

use super::FALLBACKS;
use crate::ring::{NodeId, Ring};

/// The answers of one read-through (see the module doc).
#[derive(Debug)]
pub struct ReadThrough {
    rf: usize,
    /// Whether the asker sees a majority of the nodes it knows.
    quorum: bool,
    asked: usize,
    silent: usize,
    moved: bool,
}

impl ReadThrough {
    /// The nodes to ask for `key`, in order, without `me`: its holders and
    /// their stand-ins under the `previous` ring, then under `ring`.
    pub fn candidates(
        previous: &Ring,
        ring: &Ring,
        key: &[u8],
        me: &str,
        rf: usize,
    ) -> Vec<NodeId> {
        let mut candidates: Vec<NodeId> = Vec::new();
        for node in previous
            .preference_list(key, rf + FALLBACKS)
            .chain(ring.preference_list(key, rf + FALLBACKS))
        {
            if &**node != me && !candidates.contains(node) {
                candidates.push(node.clone());
            }
        }
        candidates
    }

    /// A read-through with no answer yet.
    pub fn new(rf: usize, quorum: bool) -> ReadThrough {
        ReadThrough {
            rf,
            quorum,
            asked: 0,
            silent: 0,
            moved: false,
        }
    }

    /// A candidate answered (with a copy or without).
    pub fn answered(&mut self) {
        self.asked += 1;
    }

    /// A candidate could not be asked, or did not answer in time.
    pub fn silent(&mut self) {
        self.asked += 1;
        self.silent += 1;
    }

    /// The asker's ring changed since it chose whom to ask (see the module
    /// doc): the read-through is not complete.
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// Whether the answers are enough that one of them holds any acknowledged
    /// write: then what the asker holds after merging them is trusted, and a
    /// miss is definitive.
    pub fn complete(&self) -> bool {
        !self.moved && self.silent < self.rf.max(1) && (self.quorum || self.silent < self.asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: &[&str]) -> Ring {
        Ring::new(nodes.iter().copied(), 16, 5)
    }

    fn verdict(rf: usize, quorum: bool, answered: usize, silent: usize) -> bool {
        let mut read = ReadThrough::new(rf, quorum);
        (0..answered).for_each(|_| read.answered());
        (0..silent).for_each(|_| read.silent());
        read.complete()
    }

    #[test]
    fn candidates_are_the_holders_and_stand_ins_under_both_rings_without_the_asker_once_each() {
        let old = ring(&["a", "b", "c", "d"]);
        let new = ring(&["a", "b", "c", "d", "e"]);
        let key = b"k";
        let me = old.owner(key).expect("owner").clone();
        let got = ReadThrough::candidates(&old, &new, key, &me, 2);
        let mut want: Vec<NodeId> = Vec::new();
        for n in old
            .preference_list(key, 2 + FALLBACKS)
            .chain(new.preference_list(key, 2 + FALLBACKS))
        {
            if *n != me && !want.contains(n) {
                want.push(n.clone());
            }
        }
        assert_eq!(got, want);
        assert!(!got.contains(&me));
    }

    #[test]
    fn fewer_than_rf_silent_holders_is_complete() {
        assert!(verdict(2, true, 2, 1));
        assert!(!verdict(2, true, 1, 2));
        assert!(verdict(3, true, 1, 2));
        assert!(!verdict(3, true, 0, 3));
        // rf 1: no silence at all.
        assert!(verdict(1, true, 1, 0));
        assert!(!verdict(1, true, 1, 1));
        // Nobody to ask: complete (a one-node cluster).
        assert!(verdict(2, true, 0, 0));
    }

    #[test]
    fn a_ring_change_while_asking_makes_it_incomplete() {
        let mut read = ReadThrough::new(2, true);
        read.answered();
        read.answered();
        assert!(read.complete());
        read.moved();
        assert!(!read.complete());
    }

    #[test]
    fn without_quorum_one_answer_is_needed() {
        assert!(!verdict(3, false, 0, 2));
        assert!(verdict(3, false, 1, 2));
        // Nobody to ask: a node that sees no majority trusts nothing it
        // cannot confirm.
        assert!(!verdict(3, false, 0, 0));
    }
}
