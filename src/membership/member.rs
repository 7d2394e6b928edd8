//! Typed members: what a node gossips about itself, parsed once from chitchat's key-values.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use chitchat::{ChitchatId, NodeState};
use serde::Serialize;

use crate::ring::NodeId;

/// Gossip key: the advertised `host:port` of the public listener.
pub const KEY_PUBLIC_ADDR: &str = "public_addr";
/// Gossip key: the advertised `host:port` of the internal listener.
pub const KEY_INTERNAL_ADDR: &str = "internal_addr";
/// Gossip key: the node's [`Status`].
pub const KEY_STATUS: &str = "status";
/// Gossip key, `true` once a leaving node's last handoff pass is over (see
/// [`Member::handed_off`]).
pub const KEY_HANDED_OFF: &str = "handed_off";

/// A node's life cycle: only `Ready` members are in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started, not yet in the ring.
    Joining,
    /// In the ring: owns and holds sessions.
    Ready,
    /// Handing its sessions off before it stops.
    Leaving,
}

impl Status {
    /// The word gossiped for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Ready => "ready",
            Status::Leaving => "leaving",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "joining" => Ok(Status::Joining),
            "ready" => Ok(Status::Ready),
            "leaving" => Ok(Status::Leaving),
            _ => Err(()),
        }
    }
}

/// A node as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub node_id: NodeId,
    pub generation: u64,
    pub public_addr: String,
    pub internal_addr: String,
    pub gossip_addr: SocketAddr,
    pub status: Status,
    /// A leaving member whose last handoff pass is over: every copy it holds
    /// is on the new holders too, and it takes no more. Its silence says
    /// nothing about any session (read-through does not ask it).
    pub handed_off: bool,
}

impl Member {
    /// Parses a gossiped node; `None` when a required key is missing or invalid, so
    /// that half-known nodes never enter the ring.
    pub fn from_state(id: &ChitchatId, state: &NodeState) -> Option<Member> {
        Some(Member {
            node_id: id.node_id.clone(),
            generation: id.generation_id,
            public_addr: valid_host_port(state.get(KEY_PUBLIC_ADDR)?)?,
            internal_addr: valid_host_port(state.get(KEY_INTERNAL_ADDR)?)?,
            gossip_addr: id.gossip_advertise_addr,
            status: state.get(KEY_STATUS)?.parse().ok()?,
            handed_off: state.get(KEY_HANDED_OFF) == Some("true"),
        })
    }
}

fn valid_host_port(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| s.to_owned())
}

/// The live members, one per node id: when several generations of a node are live
/// (just after a restart), the highest generation wins.
pub fn latest_generations<'a>(
    nodes: impl IntoIterator<Item = (&'a ChitchatId, &'a NodeState)>,
) -> HashMap<NodeId, Member> {
    let mut members: HashMap<NodeId, Member> = HashMap::new();
    for (id, state) in nodes {
        let Some(member) = Member::from_state(id, state) else {
            continue;
        };
        match members.get(&member.node_id) {
            Some(known) if known.generation >= member.generation => {}
            _ => {
                members.insert(member.node_id.clone(), member);
            }
        }
    }
    members
}

/// Convenience for chitchat's live-node maps.
pub fn live_members(live: &BTreeMap<ChitchatId, NodeState>) -> HashMap<NodeId, Member> {
    latest_generations(live.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(public: &str, status: &str) -> NodeState {
        let mut s = NodeState::for_test();
        s.set(KEY_PUBLIC_ADDR, public);
        s.set(KEY_INTERNAL_ADDR, "127.0.0.1:9001");
        s.set(KEY_STATUS, status);
        s
    }

    fn id(node: &str, generation: u64) -> ChitchatId {
        ChitchatId::new(node, generation, "127.0.0.1:7000".parse().unwrap())
    }

    #[test]
    fn the_highest_generation_of_a_node_wins() {
        let old = (id("a", 1), state("127.0.0.1:1", "ready"));
        let new = (id("a", 2), state("127.0.0.1:2", "joining"));
        for order in [[&old, &new], [&new, &old]] {
            let members = latest_generations(order.iter().map(|(i, s)| (i, s)));
            assert_eq!(members.len(), 1);
            let a = &members["a"];
            assert_eq!(a.generation, 2);
            assert_eq!(a.public_addr, "127.0.0.1:2");
            assert_eq!(a.status, Status::Joining);
        }
    }

    #[test]
    fn half_known_nodes_are_skipped() {
        let mut incomplete = NodeState::for_test();
        incomplete.set(KEY_STATUS, "ready");
        let bad_status = state("127.0.0.1:1", "dancing");
        let bad_addr = state("nowhere", "ready");
        let nodes = [
            (id("x", 1), incomplete),
            (id("y", 1), bad_status),
            (id("z", 1), bad_addr),
        ];
        assert!(latest_generations(nodes.iter().map(|(i, s)| (i, s))).is_empty());
    }
}
