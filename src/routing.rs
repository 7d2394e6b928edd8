//! Where a session operation is served: the routing policy, with no I/O.
//!
//! - An operation that came from a peer is served where it landed, whatever
//!   this node believes about the ring: rings disagree for a gossip round or
//!   two after a change, and bouncing an operation between two nodes with
//!   different rings must never happen (one hop at most).
//! - This node serves the sessions it owns, and everything while its ring is
//!   empty (a lone node that is not ready yet, or the last node leaving).
//! - Otherwise the session's holders are tried in ring order: the owner, then
//!   the replicas. A holder that cannot be reached at all is passed over at
//!   once (its replica takes over without waiting for the failure detector); a
//!   holder that failed in the middle of a request is passed over only for a
//!   read, since a write may have been applied there. When the walk reaches
//!   this node, it serves.
//!
//! [`crate::mesh`] executes the plan; tests drive it here without sockets.

use crate::ring::{NodeId, Ring};

/// One step of a plan.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// Serve from this node's memory.
    Here,
    /// Ask this holder.
    Peer(&'a NodeId),
}

/// The holders to try for `key`, in order; ends at the first [`Target::Here`].
pub fn plan<'a>(
    ring: &'a Ring,
    key: &[u8],
    self_id: &str,
    copies: usize,
    from_peer: bool,
) -> Vec<Target<'a>> {
    if from_peer || ring.owner(key).is_none_or(|owner| &**owner == self_id) {
        return vec![Target::Here];
    }
    let mut targets = Vec::with_capacity(copies);
    for holder in ring.preference_list(key, copies) {
        if &**holder == self_id {
            targets.push(Target::Here);
            break;
        }
        targets.push(Target::Peer(holder));
    }
    targets
}

/// Whether `plan` (for `ring`, `from_peer` as given to [`plan`]) serves the
/// session here because this node is its owner: not for a peer, not with an
/// empty ring, and this node first.
pub fn owned_here(plan: &[Target<'_>], ring: &Ring, from_peer: bool) -> bool {
    !from_peer && !ring.is_empty() && plan.first() == Some(&Target::Here)
}

/// How asking a holder failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: the request never reached it.
    Unreachable,
    /// It broke off or did not answer in time: a write may have been applied.
    Broken,
}

/// Whether to go on to the next holder after `failure`.
pub fn try_next(failure: Failure, read: bool) -> bool {
    failure == Failure::Unreachable || read
}

/// Whether a freshly minted id would be owned by `self_id`; used to create
/// sessions that need no forward.
pub fn owns(ring: &Ring, key: &[u8], self_id: &str) -> bool {
    ring.owner(key).is_some_and(|o| &**o == self_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_owner_is_asked_first_and_the_walk_ends_here(key in any::<[u8; 16]>(), me in 0usize..4, from_peer: bool) {
            let ring = Ring::new(["a", "b", "c", "d"], 32, 3);
            let me = ["a", "b", "c", "d"][me];
            let owner = ring.owner(&key).unwrap();
            let plan = plan(&ring, &key, me, 2, from_peer);
            prop_assert_eq!(owned_here(&plan, &ring, from_peer), !from_peer && &**owner == me);
            if from_peer || &**owner == me {
                prop_assert_eq!(plan, vec![Target::Here]);
            } else {
                prop_assert_eq!(&plan[0], &Target::Peer(owner));
                let holders: Vec<&NodeId> = ring.preference_list(&key, 2).collect();
                // Every peer in the plan holds the session, in ring order, and
                // the plan ends with this node exactly when it is a holder.
                for (step, holder) in plan.iter().zip(&holders) {
                    match step {
                        Target::Peer(p) => prop_assert_eq!(*p, *holder),
                        Target::Here => prop_assert_eq!(&***holder, me),
                    }
                }
                let holds = holders.iter().any(|h| &***h == me);
                prop_assert_eq!(plan.last() == Some(&Target::Here), holds);
                prop_assert!(!plan.iter().any(|t| matches!(t, Target::Peer(p) if &***p == me)));
            }
        }
    }

    #[test]
    fn an_empty_ring_serves_here() {
        assert_eq!(
            plan(&Ring::empty(), b"k", "a", 2, false),
            vec![Target::Here]
        );
        assert!(!owns(&Ring::empty(), b"k", "a"));
    }

    #[test]
    fn only_reads_pass_a_holder_that_broke_off() {
        assert!(try_next(Failure::Unreachable, false));
        assert!(try_next(Failure::Unreachable, true));
        assert!(try_next(Failure::Broken, true));
        assert!(
            !try_next(Failure::Broken, false),
            "a write may have been applied"
        );
    }
}
