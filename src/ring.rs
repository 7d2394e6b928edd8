//! The consistent-hash ring: a pure, immutable snapshot built from the ready members.
//!
//! Every node builds the same ring from the same member ids: each node contributes
//! `vnodes` virtual nodes `(node_id, i)`, hashed from their bytes by `hashring`'s
//! SipHash (keys 0, 0). The hashring version is pinned in `Cargo.toml` because its
//! hash is part of the contract between nodes.
//!
//! `hashring` answers "which virtual node is first clockwise from this key"; it does
//! not return *distinct* nodes. At build time the ring therefore records, for every
//! virtual node, the first `max_copies` distinct nodes found by walking clockwise
//! from it, so that `owner` and `replicas` cost one binary search and no allocation
//! beyond the answer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use sha2::{Digest, Sha256};

/// Identifier of a node (stable across restarts).
pub type NodeId = Arc<str>;

/// A virtual node. Only its `(node_id, index)` bytes are hashed.
#[derive(Clone, Debug)]
struct VNode {
    node_id: NodeId,
    index: u32,
    /// Position of `node_id` in [`Ring::nodes`]; not hashed.
    node: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.node_id.as_bytes());
        state.write(&self.index.to_le_bytes());
    }
}

/// A key hashed from its raw bytes, exactly as written (no length prefix).
struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// An immutable ring snapshot.
pub struct Ring {
    /// Distinct member ids, sorted.
    nodes: Vec<NodeId>,
    vnodes_per_node: u32,
    hashring: HashRing<VNode>,
    /// For virtual node `(node, index)`: offset into `successors`, at
    /// `(node * vnodes_per_node + index) * copies`.
    successors: Vec<u32>,
    /// How many distinct nodes each `successors` row holds.
    copies: usize,
    fingerprint: String,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("vnodes_per_node", &self.vnodes_per_node)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Ring {
    /// Builds the ring of `members` (duplicates ignored) with `vnodes_per_node`
    /// virtual nodes each, able to answer up to `max_copies` distinct nodes per key.
    pub fn new<I, S>(members: I, vnodes_per_node: u32, max_copies: usize) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: Into<NodeId>,
    {
        let mut nodes: Vec<NodeId> = members.into_iter().map(Into::into).collect();
        nodes.sort();
        nodes.dedup();
        let vnodes_per_node = vnodes_per_node.max(1);
        let copies = max_copies.clamp(1, nodes.len().max(1));

        let mut hashring = HashRing::new();
        let mut all = Vec::with_capacity(nodes.len() * vnodes_per_node as usize);
        for (node, node_id) in nodes.iter().enumerate() {
            for index in 0..vnodes_per_node {
                all.push(VNode {
                    node_id: node_id.clone(),
                    index,
                    node: node as u32,
                });
            }
        }
        hashring.batch_add(all);

        // Walk the ring once in clockwise order to find, for every virtual node, the
        // first `copies` distinct nodes starting at it.
        let order: Vec<VNode> = hashring.clone().into_iter().collect();
        let mut successors = vec![0u32; order.len() * copies];
        let n = order.len();
        for (pos, vnode) in order.iter().enumerate() {
            let row =
                (vnode.node as usize * vnodes_per_node as usize + vnode.index as usize) * copies;
            let mut found = 0;
            let mut step = 0;
            while found < copies && step < n {
                let candidate = order[(pos + step) % n].node;
                if !successors[row..row + found].contains(&candidate) {
                    successors[row + found] = candidate;
                    found += 1;
                }
                step += 1;
            }
        }

        let fingerprint = fingerprint(&nodes, vnodes_per_node);
        Ring {
            nodes,
            vnodes_per_node,
            hashring,
            successors,
            copies,
            fingerprint,
        }
    }

    /// The empty ring: owns nothing.
    pub fn empty() -> Ring {
        Ring::new(Vec::<NodeId>::new(), 1, 1)
    }

    /// Distinct member ids, sorted.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Whether no node is in it.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `node_id` is in it.
    pub fn contains(&self, node_id: &str) -> bool {
        self.nodes.binary_search_by(|n| (**n).cmp(node_id)).is_ok()
    }

    /// Virtual nodes per node.
    pub fn vnodes_per_node(&self) -> u32 {
        self.vnodes_per_node
    }

    /// Hash of the sorted member ids and the virtual node count: equal on every
    /// node that sees the same ready members.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn row(&self, key: &[u8]) -> Option<&[u32]> {
        let vnode = self.hashring.get(&KeyBytes(key))?;
        let row = (vnode.node as usize * self.vnodes_per_node as usize + vnode.index as usize)
            * self.copies;
        Some(&self.successors[row..row + self.copies])
    }

    /// The owner of `key`: the first node clockwise from its hash.
    pub fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        self.row(key).map(|row| &self.nodes[row[0] as usize])
    }

    /// The owner followed by the next distinct nodes clockwise: `copies` nodes in
    /// all, fewer when the ring is smaller or was built with a lower `max_copies`.
    pub fn preference_list(&self, key: &[u8], copies: usize) -> impl Iterator<Item = &NodeId> {
        self.row(key)
            .unwrap_or(&[])
            .iter()
            .take(copies)
            .map(|&n| &self.nodes[n as usize])
    }

    /// The replicas of `key`: the `copies - 1` distinct nodes after the owner.
    pub fn replicas(&self, key: &[u8], copies: usize) -> impl Iterator<Item = &NodeId> {
        self.preference_list(key, copies).skip(1)
    }

    /// Whether `node_id` is among the first `copies` nodes for `key`.
    pub fn holds(&self, key: &[u8], node_id: &str, copies: usize) -> bool {
        self.preference_list(key, copies).any(|n| &**n == node_id)
    }

    /// Fraction of the hash space owned by each node (sums to 1 on a non-empty ring).
    pub fn shares(&self) -> HashMap<NodeId, f64> {
        let order: Vec<(u64, u32)> = self
            .hashring
            .clone()
            .into_iter()
            .map(|v| (vnode_hash(&v), v.node))
            .collect();
        let mut shares: HashMap<NodeId, f64> = HashMap::new();
        if order.is_empty() {
            return shares;
        }
        // A virtual node owns the arc from its predecessor's hash (exclusive) to its own.
        for (i, &(hash, node)) in order.iter().enumerate() {
            let prev = if i == 0 {
                order[order.len() - 1].0
            } else {
                order[i - 1].0
            };
            let arc = hash.wrapping_sub(prev) as f64 / 2f64.powi(64);
            let arc = if order.len() == 1 { 1.0 } else { arc };
            *shares.entry(self.nodes[node as usize].clone()).or_default() += arc;
        }
        shares
    }
}

fn vnode_hash(vnode: &VNode) -> u64 {
    use std::hash::BuildHasher;
    hashring::DefaultHashBuilder.hash_one(vnode)
}

fn fingerprint(nodes: &[NodeId], vnodes: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(vnodes.to_le_bytes());
    for node in nodes {
        hasher.update((node.len() as u64).to_le_bytes());
        hasher.update(node.as_bytes());
    }
    crate::auth::hex(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    fn random_keys(n: usize) -> Vec<[u8; 16]> {
        (0..n).map(|_| rand::random::<[u8; 16]>()).collect()
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let ring = Ring::empty();
        assert!(ring.owner(b"abc").is_none());
        assert_eq!(ring.preference_list(b"abc", 3).count(), 0);
    }

    #[test]
    fn three_nodes_share_100k_keys_evenly() {
        let ring = Ring::new(ids(3), 128, 2);
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        for key in random_keys(100_000) {
            *counts.entry(ring.owner(&key).unwrap().clone()).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (node, count) in counts {
            let share = count as f64 / 100_000.0;
            assert!((share - 1.0 / 3.0).abs() <= 0.05, "{node} owns {share:.3}");
        }
    }

    #[test]
    fn shares_match_the_owner_counts() {
        let ring = Ring::new(ids(3), 128, 2);
        let shares = ring.shares();
        let total: f64 = shares.values().sum();
        assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
        for share in shares.values() {
            assert!((share - 1.0 / 3.0).abs() <= 0.05, "share {share}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_share() {
        let before = Ring::new(ids(3), 128, 2);
        let after = Ring::new(ids(2), 128, 2);
        for key in random_keys(20_000) {
            let old = before.owner(&key).unwrap();
            let new = after.owner(&key).unwrap();
            if &**old != "node3" {
                assert_eq!(old, new, "a key not owned by node3 moved");
            }
        }
    }

    #[test]
    fn fingerprint_depends_on_members_only() {
        let a = Ring::new(["b", "a", "c"], 64, 2);
        let b = Ring::new(["c", "a", "b", "a"], 64, 3);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), Ring::new(["a", "b"], 64, 2).fingerprint());
        assert_ne!(
            a.fingerprint(),
            Ring::new(["a", "b", "c"], 32, 2).fingerprint()
        );
    }

    #[test]
    fn the_ring_is_the_same_whatever_the_member_order() {
        let a = Ring::new(["n1", "n2", "n3", "n4"], 128, 3);
        let b = Ring::new(["n4", "n2", "n1", "n3"], 128, 3);
        for key in random_keys(1_000) {
            let pa: Vec<_> = a.preference_list(&key, 3).collect();
            let pb: Vec<_> = b.preference_list(&key, 3).collect();
            assert_eq!(pa, pb);
        }
    }

    /// The walk is checked against a naive reference: hashring's own
    /// `get_with_replicas` over the whole ring, with duplicates skipped.
    #[test]
    fn preference_list_matches_a_naive_clockwise_walk() {
        let ring = Ring::new(ids(5), 16, 3);
        for key in random_keys(500) {
            let all = ring
                .hashring
                .get_with_replicas(&KeyBytes(&key), ring.hashring.len())
                .unwrap();
            let mut naive: Vec<NodeId> = Vec::new();
            for v in all {
                if !naive.contains(&v.node_id) {
                    naive.push(v.node_id.clone());
                }
            }
            naive.truncate(3);
            let fast: Vec<NodeId> = ring.preference_list(&key, 3).cloned().collect();
            assert_eq!(fast, naive);
        }
    }

    proptest! {
        #[test]
        fn preference_lists_are_distinct_members(
            n in 1usize..12,
            copies in 1usize..5,
            key in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let ring = Ring::new(ids(n), 32, copies);
            let list: Vec<_> = ring.preference_list(&key, copies).collect();
            prop_assert_eq!(list.len(), copies.min(n));
            let distinct: HashSet<_> = list.iter().collect();
            prop_assert_eq!(distinct.len(), list.len());
            for node in &list {
                prop_assert!(ring.contains(node));
            }
            prop_assert_eq!(Some(list[0]), ring.owner(&key));
        }

        #[test]
        fn adding_a_node_only_takes_keys_for_itself(
            n in 1usize..8,
            keys in proptest::collection::vec(any::<[u8; 16]>(), 1..64),
        ) {
            let before = Ring::new(ids(n), 32, 1);
            let after = Ring::new(ids(n + 1), 32, 1);
            let newcomer = format!("node{}", n + 1);
            for key in keys {
                let old = before.owner(&key).unwrap();
                let new = after.owner(&key).unwrap();
                prop_assert!(old == new || **new == *newcomer);
            }
        }
    }
}
