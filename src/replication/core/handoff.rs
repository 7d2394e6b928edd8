//! Handoff after a ring change: which node sends each copy to which new
//! holders, and when a node that no longer holds a session drops its copy.
//!
//! For each entry a node holds, going from placement `old` to `new`:
//! - if the node still holds the session under `new`, and is the first
//!   surviving holder under `old` (same generation: a restarted node lost its
//!   memory), it sends the entry to every holder that is new (not a surviving
//!   holder under `old`); if no holder survived, every remaining holder does;
//! - if the node no longer holds it, it sends the entry to every holder under
//!   `new` and drops its copy, but only once every delivery of the pass
//!   succeeded ([`HandoffPass::drops`]).
//!
//! Receivers merge by version, so a copy sent twice or late changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::membership::ClusterView;
use crate::ring::{NodeId, Ring};

/// A ring and the generations of its members: a restarted member (new
/// generation) lost its memory and must be sent its copies again.
#[derive(Clone, Debug)]
pub struct Placement {
    pub ring: Arc<Ring>,
    pub generations: HashMap<NodeId, u64>,
}

impl Placement {
    /// The placement `view` shows.
    pub fn of(view: &ClusterView) -> Placement {
        let generations = view
            .ring
            .nodes()
            .iter()
            .filter_map(|n| Some((n.clone(), view.member(n)?.generation)))
            .collect();
        Placement {
            ring: view.ring.clone(),
            generations,
        }
    }

    /// Whether both place copies on the same nodes, with the same memories.
    pub fn same(&self, other: &Placement) -> bool {
        self.ring.fingerprint() == other.ring.fingerprint() && self.generations == other.generations
    }

    /// Whether `node` was in this placement with the same generation as in `now`.
    pub fn kept(&self, node: &NodeId, now: &Placement) -> bool {
        matches!((self.generations.get(node), now.generations.get(node)), (Some(a), Some(b)) if a == b)
    }
}

/// What one node does with one entry it holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The nodes to send the entry to.
    pub to: Vec<NodeId>,
    /// Whether the node drops its copy once every delivery of the pass succeeded.
    pub drop: bool,
}

/// What `me` does with its entry for `key` when the placement goes from `old`
/// to `new`; `None`: nothing.
pub fn handoff(
    old: &Placement,
    new: &Placement,
    key: &[u8],
    me: &NodeId,
    rf: usize,
) -> Option<Handoff> {
    let new_holders: Vec<&NodeId> = new.ring.preference_list(key, rf).collect();
    if new_holders.is_empty() {
        return None;
    }
    let old_holders: Vec<&NodeId> = old.ring.preference_list(key, rf).collect();
    let keep = new_holders.contains(&me);
    let to: Vec<NodeId> = if keep {
        // The first old holder still here (same generation) sends; if none
        // survived, every remaining holder does.
        let sender = old_holders.iter().find(|n| old.kept(n, new));
        if sender.is_some_and(|s| *s != me) {
            return None;
        }
        new_holders
            .iter()
            .copied()
            .filter(|n| *n != me && !(old_holders.contains(n) && old.kept(n, new)))
            .cloned()
            .collect()
    } else {
        new_holders.into_iter().cloned().collect()
    };
    let drop = !keep;
    match to.is_empty() && !drop {
        true => None,
        false => Some(Handoff { to, drop }),
    }
}

/// One node's handoff pass from `old` to `new`: fed the entries it holds, it
/// says where each goes; fed what became of the sends, it says which copies
/// may be dropped.
#[derive(Debug)]
pub struct HandoffPass<K> {
    old: Placement,
    new: Placement,
    me: NodeId,
    rf: usize,
    /// Entries to drop (at their version then) once every send succeeded.
    to_drop: Vec<(K, u64)>,
    failed: bool,
}

impl<K> HandoffPass<K> {
    pub fn new(old: Placement, new: Placement, me: NodeId, rf: usize) -> HandoffPass<K> {
        HandoffPass {
            old,
            new,
            me,
            rf,
            to_drop: Vec::new(),
            failed: false,
        }
    }

    /// An entry held: `id`, under `key`, at `version`. The nodes to send it to.
    pub fn entry(&mut self, id: K, key: &[u8], version: u64) -> Vec<NodeId> {
        match handoff(&self.old, &self.new, key, &self.me, self.rf) {
            None => Vec::new(),
            Some(Handoff { to, drop }) => {
                if drop {
                    self.to_drop.push((id, version));
                }
                to
            }
        }
    }

    /// What became of one send (a batch) of the pass.
    pub fn sent(&mut self, ok: bool) {
        self.failed |= !ok;
    }

    /// Whether every send so far succeeded.
    pub fn ok(&self) -> bool {
        !self.failed
    }

    /// The copies to drop, each unless it changed since its version: all
    /// those no longer held here when every send of the pass succeeded, else
    /// none (the pass is retried).
    pub fn drops(self) -> Vec<(K, u64)> {
        match self.failed {
            true => Vec::new(),
            false => self.to_drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(nodes: &[&str], generations: &[u64]) -> Placement {
        Placement {
            ring: Arc::new(Ring::new(nodes.iter().copied(), 16, 4)),
            generations: nodes
                .iter()
                .zip(generations)
                .map(|(n, g)| (NodeId::from(*n), *g))
                .collect(),
        }
    }

    fn all(p: &Placement) -> Vec<NodeId> {
        p.ring.nodes().to_vec()
    }

    #[test]
    fn a_join_is_sent_by_the_first_surviving_holder_and_by_those_that_drop() {
        let old = placement(&["a", "b", "c"], &[1, 1, 1]);
        let new = placement(&["a", "b", "c", "d"], &[1, 1, 1, 1]);
        let rf = 2;
        let d: NodeId = "d".into();
        let mut checked = 0;
        for i in 0u32..300 {
            let key = i.to_be_bytes();
            let holders: Vec<NodeId> = new.ring.preference_list(&key, rf).cloned().collect();
            let old_holders: Vec<NodeId> = old.ring.preference_list(&key, rf).cloned().collect();
            if !holders.contains(&d) {
                // No new holder: the holders send nothing, and a copy held
                // elsewhere (a stand-in's) goes to the holders and is dropped.
                for me in all(&old) {
                    let h = handoff(&old, &new, &key, &me, rf);
                    match old_holders.contains(&me) {
                        true => assert!(h.is_none(), "{me} sends {h:?}"),
                        false => assert_eq!(
                            h,
                            Some(Handoff {
                                to: holders.clone(),
                                drop: true
                            })
                        ),
                    }
                }
                continue;
            }
            checked += 1;
            let mut keepers_sending = 0;
            for me in &old_holders {
                match handoff(&old, &new, &key, me, rf) {
                    Some(Handoff { to, drop: true }) => {
                        assert!(!holders.contains(me));
                        assert_eq!(to, holders, "a dropper sends to every new holder");
                    }
                    Some(Handoff { to, drop: false }) => {
                        keepers_sending += 1;
                        assert_eq!(to, vec![d.clone()]);
                        assert_eq!(me, &old_holders[0], "only the first old holder");
                    }
                    None => assert!(holders.contains(me) && *me != old_holders[0]),
                }
            }
            assert!(keepers_sending <= 1);
        }
        assert!(checked > 0);
    }

    #[test]
    fn a_restarted_holder_is_sent_its_copies_again() {
        let old = placement(&["a", "b", "c"], &[1, 1, 1]);
        let new = placement(&["a", "b", "c"], &[1, 2, 1]);
        let rf = 2;
        let b: NodeId = "b".into();
        for i in 0u32..100 {
            let key = i.to_be_bytes();
            let holders: Vec<NodeId> = new.ring.preference_list(&key, rf).cloned().collect();
            let senders: Vec<(NodeId, Handoff)> = all(&old)
                .into_iter()
                .filter(|me| holders.contains(me) && *me != b)
                .filter_map(|me| Some((me.clone(), handoff(&old, &new, &key, &me, rf)?)))
                .collect();
            if holders.contains(&b) {
                assert_eq!(senders.len(), 1, "{senders:?}");
                assert_eq!(senders[0].1.to, vec![b.clone()]);
            } else {
                assert!(senders.is_empty(), "{senders:?}");
            }
        }
    }

    #[test]
    fn a_pass_drops_nothing_when_a_send_failed() {
        let old = placement(&["a", "b", "c"], &[1, 1, 1]);
        let new = placement(&["b", "c"], &[1, 1]);
        let a: NodeId = "a".into();
        let mut pass = HandoffPass::new(old.clone(), new.clone(), a.clone(), 2);
        let to = pass.entry(7u32, b"k", 3);
        let holders: Vec<NodeId> = new.ring.preference_list(b"k", 2).cloned().collect();
        assert_eq!(to, holders, "a leaves: sends everything");
        pass.sent(true);
        pass.sent(false);
        assert!(!pass.ok());
        assert!(pass.drops().is_empty());
        let mut pass = HandoffPass::new(old, new, a, 2);
        let _ = pass.entry(7u32, b"k", 3);
        pass.sent(true);
        assert_eq!(pass.drops(), vec![(7, 3)]);
    }
}
