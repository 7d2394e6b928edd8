//! Sealed gossip between real nodes: a captured datagram sent again changes
//! nothing and is counted, and the cluster secret rotates without a split.
//! (Forgeries, mutations and strangers: `garbage.rs`, `intruders.rs`.)

mod common;

use common::gossip::{capture, count, drops_at, drops_of, kind, SYN_ACK};
use common::{start, test_config, wait_for, Cluster, NodeHandle, Secrets, WAIT};
use serde_json::{json, Value};
use sessionmesh::config::Secret;
use tokio::net::UdpSocket;

/// Waits until every node of `cluster` has gossiped `rounds` more times.
async fn gossip_rounds(cluster: &Cluster, rounds: u64) {
    let mut start = Vec::new();
    for node in &cluster.nodes {
        start.push(node.node().membership().heartbeat().await);
    }
    wait_for(
        &format!("{rounds} more gossip rounds on every node"),
        WAIT,
        || async {
            for (node, from) in cluster.nodes.iter().zip(&start) {
                if node.node().membership().heartbeat().await < from + rounds {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Waits until node `i` of `cluster` has counted more than `before` drops for `reason`.
async fn wait_dropped(cluster: &Cluster, i: usize, reason: &str, before: u64) {
    wait_for(
        &format!("node{} to drop a datagram as {reason}", i + 1),
        WAIT,
        || async { (count(&drops_of(cluster, i).await, reason) > before).then_some(()) },
    )
    .await;
}

/// 1. 3 nodes that also list a test socket as a seed; a probe session;
/// 2. capture a SYN that node k sent to the test socket; sent back to node k,
///    it is answered once (a SYN-ACK);
/// 3. the same SYN again to node k: dropped as `replayed`, no answer;
/// 4. a few gossip rounds later, the SYN and the SYN-ACK to the other nodes
///    (which never saw them, but have heard newer datagrams from node k since):
///    dropped as `replayed`;
/// 5. the ring and the probe session are as before, and nothing was dropped
///    for any other reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_datagram_changes_nothing() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_seed = socket.local_addr().unwrap().to_string();
    let cluster = Cluster::start_with(3, |config| config.seeds.push(fake_seed.clone())).await;
    let fingerprint = cluster.wait_converged(3).await;
    let probe = json!({"written": "before the replays"});
    let doc: Value = cluster
        .http
        .post(cluster.url(0, "/api/sessions"))
        .json(&probe)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();

    let captured = capture(&socket, &cluster).await;
    let k = captured.sender;
    eprintln!("captured a SYN and a SYN-ACK of node{}", k + 1);
    let addr = |i: usize| cluster.nodes[i].addrs().gossip;

    // The same SYN to the same node again.
    let replayed = count(&drops_of(&cluster, k).await, "replayed");
    socket.send_to(&captured.syn, addr(k)).await.unwrap();
    wait_dropped(&cluster, k, "replayed", replayed).await;
    // The node dropped it before chitchat saw it: nothing answered it.
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
        assert!(
            !(from == addr(k) && kind(&buf[..n]) == Some(SYN_ACK)),
            "node{} answered a replayed SYN",
            k + 1
        );
    }

    // Later, to the nodes that never received them.
    gossip_rounds(&cluster, 3).await;
    for j in (0..3).filter(|&j| j != k) {
        for datagram in [&captured.syn, &captured.syn_ack] {
            let replayed = count(&drops_of(&cluster, j).await, "replayed");
            socket.send_to(datagram, addr(j)).await.unwrap();
            wait_dropped(&cluster, j, "replayed", replayed).await;
        }
    }

    gossip_rounds(&cluster, 3).await;
    for i in 0..3 {
        let view = cluster.nodes[i].node().view();
        assert_eq!(view.ring.fingerprint(), fingerprint, "node{}", i + 1);
        assert_eq!(view.ring.nodes().len(), 3, "node{}", i + 1);
        let r = cluster
            .http
            .get(cluster.url(i, &format!("/api/sessions/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the probe via node{}", i + 1);
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["data"], probe);
        let drops = drops_of(&cluster, i).await;
        eprintln!("node{} dropped {drops:?}", i + 1);
        let others: u64 = drops.iter().sum::<u64>() - count(&drops, "replayed");
        assert_eq!(others, 0, "node{} dropped {drops:?}", i + 1);
    }
    cluster.shutdown().await;
}

fn config(
    node_id: &str,
    secrets: &Secrets,
    previous: &[&Secret],
    seed: Option<&NodeHandle>,
) -> sessionmesh::Config {
    let seeds = seed
        .map(|n| vec![n.addrs().gossip.to_string()])
        .unwrap_or_default();
    let mut config = test_config(node_id, secrets, seeds);
    config.cluster_previous_secrets = previous.iter().map(|s| (*s).clone()).collect();
    config
}

/// Waits until each of `nodes` has admitted the current generation of every
/// other one and has them all in its ring.
async fn wait_together(nodes: &[&NodeHandle]) {
    wait_for("the nodes to admit each other", WAIT, || async {
        for node in nodes {
            let view = node.node().view();
            if view.ring.nodes().len() != nodes.len() {
                return None;
            }
            for peer in nodes {
                let id = peer.node().id();
                let current = view
                    .member(id)
                    .is_some_and(|m| m.generation == peer.node().generation());
                if !current || !view.admitted.iter().any(|a| &**a == id) || !view.ring.contains(id)
                {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
}

/// The session `id` reads back as `data` through every node of `nodes`.
async fn readable(http: &reqwest::Client, nodes: &[&NodeHandle], id: &str, data: &Value) {
    for node in nodes {
        let url = format!("http://{}/api/sessions/{id}", node.addrs().public);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "via {}", node.node().id());
        let doc: Value = r.json().await.unwrap();
        assert_eq!(&doc["data"], data, "via {}", node.node().id());
    }
}

/// Drops by reason on `node` that mean a secret mismatch or a forgery.
async fn key_drops(http: &reqwest::Client, node: &NodeHandle) -> (u64, u64) {
    let url = format!("http://{}/metrics", node.addrs().public);
    let drops = drops_at(http, &url).await;
    (count(&drops, "unknown_key"), count(&drops, "bad_mac"))
}

/// The documented rotation of `cluster_secret` from S1 to S2, restarting one
/// node at a time (2 nodes, replication factor 2, a session written first):
/// 1. node1 on S1 and node2 on S1 accepting S2 (the first round, under way);
/// 2. node1 restarted on S2 accepting S1: it seals gossip and signs internal
///    requests with S2, which node2 accepts (the second round, under way);
/// 3. node2 restarted on S2 alone (the third round).
///
/// At every step both nodes admit each other, the ring holds both, the session
/// reads back through both, and no node drops a datagram for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_secret_rotates_without_a_split() {
    let s1 = Secrets::new();
    let s2 = Secrets {
        cookie: s1.cookie.clone(),
        cluster: Secrets::new().cluster,
    };
    let http = common::client();

    let node1 = start(config("node1", &s1, &[], None)).await.unwrap();
    let node2 = start(config("node2", &s1, &[&s2.cluster], Some(&node1)))
        .await
        .unwrap();
    wait_together(&[&node1, &node2]).await;
    let data = json!({"rotation": "survives"});
    let url = format!("http://{}/api/sessions", node1.addrs().public);
    let doc: Value = http
        .post(&url)
        .json(&data)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    readable(&http, &[&node1, &node2], &id, &data).await;

    node1.shutdown().await;
    let node1 = start(config("node1", &s2, &[&s1.cluster], Some(&node2)))
        .await
        .unwrap();
    wait_together(&[&node1, &node2]).await;
    readable(&http, &[&node1, &node2], &id, &data).await;
    assert_eq!(key_drops(&http, &node1).await, (0, 0), "node1 on S2 + S1");
    assert_eq!(key_drops(&http, &node2).await, (0, 0), "node2 on S1 + S2");

    node2.shutdown().await;
    let node2 = start(config("node2", &s2, &[], Some(&node1)))
        .await
        .unwrap();
    wait_together(&[&node1, &node2]).await;
    readable(&http, &[&node1, &node2], &id, &data).await;
    assert_eq!(key_drops(&http, &node1).await, (0, 0), "node1 on S2 + S1");
    assert_eq!(key_drops(&http, &node2).await, (0, 0), "node2 on S2");

    // Once the old secret is gone, a node still on it is not heard.
    let before = key_drops(&http, &node2).await;
    let late = start(config("node3", &s1, &[], Some(&node2)))
        .await
        .unwrap();
    wait_for("node2 to drop the late node's gossip", WAIT, || async {
        (key_drops(&http, &node2).await.0 > before.0).then_some(())
    })
    .await;
    assert!(node2.node().view().member("node3").is_none());
    late.shutdown().await;
    node2.shutdown().await;
    node1.shutdown().await;
}
