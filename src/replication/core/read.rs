//! Read-through: a node that must serve a session it does not hold, or holds
//! only in doubt, asks the other holders first. [`ReadThrough::candidates`]
//! says whom to ask; the answers go into a [`ReadThrough`], which says whether
//! they are enough to trust the best copy found (or a miss).
//!
//! Every acknowledged write is on `replication_factor` holders of the ring it
//! was made under: the asker's current ring or its previous one (one change at
//! a time). So the asker asks the holders under both (and one node past the
//! current preference list: a stand-in or a newcomer's predecessor). With fewer
//! than `replication_factor` of them silent, one that answered holds the latest
//! acknowledged write. A leaving member handed its copies off before it stopped
//! answering: its silence does not count.
//!
//! A node that does not see a majority of the nodes it knows may be the
//! cut-off side of a partition: the others may have written the session under
//! a ring it never saw, whose holders it did not ask. It trusts nothing it
//! cannot confirm with at least one of them.

use crate::ring::{NodeId, Ring};

/// The answers of one read-through (see the module doc).
#[derive(Debug)]
pub struct ReadThrough {
    rf: usize,
    /// Whether the asker sees a majority of the nodes it knows.
    quorum: bool,
    asked: usize,
    silent: usize,
}

impl ReadThrough {
    /// The nodes to ask for `key`, in order, without `me`: its holders under
    /// the `previous` ring, then under `ring` and the node after them.
    pub fn candidates(
        previous: &Ring,
        ring: &Ring,
        key: &[u8],
        me: &str,
        rf: usize,
    ) -> Vec<NodeId> {
        let mut candidates: Vec<NodeId> = Vec::new();
        for node in previous
            .preference_list(key, rf)
            .chain(ring.preference_list(key, rf + 1))
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
        }
    }

    /// A candidate answered (with a copy or without).
    pub fn answered(&mut self) {
        self.asked += 1;
    }

    /// A candidate could not be asked; `leaving`: it is a member announcing
    /// its departure (it handed its copies off: as good as an empty answer).
    pub fn silent(&mut self, leaving: bool) {
        self.asked += 1;
        if !leaving {
            self.silent += 1;
        }
    }

    /// Whether the answers are enough that one of them holds any acknowledged
    /// write: then what the asker holds after merging them is trusted, and a
    /// miss is definitive.
    pub fn complete(&self) -> bool {
        self.silent < self.rf.max(1) && (self.quorum || self.silent < self.asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: &[&str]) -> Ring {
        Ring::new(nodes.iter().copied(), 16, 5)
    }

    fn verdict(rf: usize, quorum: bool, answered: usize, silent: usize, leaving: usize) -> bool {
        let mut read = ReadThrough::new(rf, quorum);
        (0..answered).for_each(|_| read.answered());
        (0..silent).for_each(|_| read.silent(false));
        (0..leaving).for_each(|_| read.silent(true));
        read.complete()
    }

    #[test]
    fn candidates_are_the_holders_under_both_rings_without_the_asker_once_each() {
        let old = ring(&["a", "b", "c", "d"]);
        let new = ring(&["a", "b", "c", "d", "e"]);
        let key = b"k";
        let me = old.owner(key).expect("owner").clone();
        let got = ReadThrough::candidates(&old, &new, key, &me, 2);
        let mut want: Vec<NodeId> = Vec::new();
        for n in old
            .preference_list(key, 2)
            .chain(new.preference_list(key, 3))
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
        assert!(verdict(2, true, 2, 1, 0));
        assert!(!verdict(2, true, 1, 2, 0));
        assert!(verdict(3, true, 1, 2, 0));
        assert!(!verdict(3, true, 0, 3, 0));
        // rf 1: no silence at all.
        assert!(verdict(1, true, 1, 0, 0));
        assert!(!verdict(1, true, 1, 1, 0));
        // Nobody to ask: complete (a one-node cluster).
        assert!(verdict(2, true, 0, 0, 0));
    }

    #[test]
    fn a_leaving_members_silence_does_not_count() {
        assert!(verdict(2, true, 1, 1, 2));
        assert!(!verdict(2, true, 0, 2, 1));
    }

    #[test]
    fn without_quorum_one_answer_is_needed() {
        assert!(!verdict(3, false, 0, 2, 0));
        assert!(verdict(3, false, 1, 2, 0));
        // Nobody to ask: a node that sees no majority trusts nothing it
        // cannot confirm.
        assert!(!verdict(3, false, 0, 0, 0));
        // A leaving member's silence is an empty answer, here too.
        assert!(verdict(3, false, 0, 0, 2));
    }
}
