//! Real gossip datagrams for tests: captured from nodes that list a test socket
//! as one of their seeds; and the drop counters a node exports on `/metrics`.

use std::net::SocketAddr;

use sessionmesh::testing::membership::SEAL_HEADER_LEN;
use tokio::net::UdpSocket;

use super::{Cluster, WAIT};

/// chitchat message types (the byte after magic number and version).
pub const SYN: u8 = 0;
pub const SYN_ACK: u8 = 1;

/// The chitchat message type of a sealed datagram.
pub fn kind(datagram: &[u8]) -> Option<u8> {
    datagram.get(SEAL_HEADER_LEN + 3).copied()
}

/// The next datagram on `socket` whose chitchat message type is `kind`, and
/// the address it came from.
pub async fn receive(socket: &UdpSocket, kind_wanted: u8) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    tokio::time::timeout(WAIT, async {
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            if kind(&buf[..n]) == Some(kind_wanted) {
                return (buf[..n].to_vec(), from);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no gossip message of type {kind_wanted} came"))
}

/// A SYN that a node of `cluster` sent to `socket` (listed in its seeds), and
/// the SYN-ACK that node answered when the test sent the SYN back to it (no
/// other datagram of a node's ever reaches itself, so its replay check lets
/// this one in once).
pub struct Captured {
    pub syn: Vec<u8>,
    pub syn_ack: Vec<u8>,
    /// Index of the node that sent both.
    pub sender: usize,
}

pub async fn capture(socket: &UdpSocket, cluster: &Cluster) -> Captured {
    let (syn, from) = receive(socket, SYN).await;
    let sender = cluster
        .nodes
        .iter()
        .position(|n| n.addrs().gossip == from)
        .unwrap_or_else(|| panic!("a SYN from {from}, no node of the cluster"));
    socket.send_to(&syn, from).await.unwrap();
    let (syn_ack, answered_by) = receive(socket, SYN_ACK).await;
    assert_eq!(answered_by, from, "the SYN-ACK comes from the SYN's sender");
    Captured {
        syn,
        syn_ack,
        sender,
    }
}

/// Every drop reason, as `/metrics` labels them.
pub const REASONS: [&str; 7] = [
    "malformed",
    "unsealed",
    "unknown_key",
    "bad_mac",
    "stale",
    "replayed",
    "undecodable",
];

/// `sessionmesh_gossip_dropped_total` by reason (in the order of [`REASONS`])
/// in the `/metrics` text at `url`.
pub async fn drops_at(http: &reqwest::Client, url: &str) -> [u64; 7] {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    REASONS.map(|reason| {
        let prefix = format!("sessionmesh_gossip_dropped_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    })
}

/// The drops of node `i` of `cluster`, by reason (see [`drops_at`]).
pub async fn drops_of(cluster: &Cluster, i: usize) -> [u64; 7] {
    drops_at(&cluster.http, &cluster.url(i, "/metrics")).await
}

/// The count of `reason` in drops as [`drops_at`] returns them.
pub fn count(drops: &[u64; 7], reason: &str) -> u64 {
    let at = REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or_else(|| panic!("no drop reason {reason}"));
    drops[at]
}
