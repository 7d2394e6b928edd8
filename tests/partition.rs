//! Partitions with writes on both sides: four real nodes, each on its own
//! loopback address (127.0.0.11 to .14), cut in two by iptables rules that drop
//! every packet between the two sides (gossip, peer links, HTTP), then healed.
//! The outcome is the one docs/architecture.md states: only a side that sees a
//! majority of the nodes it knows takes writes; the other answers `503` with
//! `Retry-After` and changes nothing; after the heal every node serves the
//! majority side's writes (or, when no side had a majority, the data from
//! before the cut).
//!
//! Needs root and iptables; under `CI` it must run (`.ci/run` installs
//! iptables), elsewhere it says why it skips.

mod common;

use std::collections::HashMap;

use common::firewall::{spec, Rules};
use common::{wait_for, ChildNode, Secrets, WAIT};
use serde_json::{json, Value};

const HOSTS: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];

struct Nodes {
    nodes: Vec<ChildNode>,
    http: reqwest::Client,
}

impl Nodes {
    async fn start() -> Nodes {
        let secrets = Secrets::new();
        let mut nodes: Vec<ChildNode> = Vec::new();
        for (i, host) in HOSTS.iter().enumerate() {
            let seeds: Vec<String> = nodes.iter().map(|n| n.gossip.to_string()).collect();
            let id = format!("node{}", i + 1);
            let node = tokio::task::block_in_place(|| {
                ChildNode::spawn_on(host, &id, &secrets, &seeds, &["--replication-factor", "2"])
            });
            nodes.push(node);
        }
        let nodes = Nodes {
            nodes,
            http: common::client(),
        };
        nodes.wait_rings(&[0, 1, 2, 3], 4).await;
        nodes
    }

    fn url(&self, i: usize, path: &str) -> String {
        self.nodes[i].url(path)
    }

    async fn ring(&self, i: usize) -> Option<Vec<String>> {
        let view: Value = self
            .http
            .get(self.url(i, "/api/cluster"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        serde_json::from_value(view["ring"]["nodes"].clone()).ok()
    }

    /// Waits until each of `nodes` has a ring of `n` members.
    async fn wait_rings(&self, nodes: &[usize], n: usize) {
        wait_for(&format!("rings of {n} on {nodes:?}"), WAIT, || async {
            for &i in nodes {
                if self.ring(i).await?.len() != n {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    async fn create(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            // Right after the start (leases being granted on a loaded machine)
            // a create may be refused with 503 and Retry-After: sent again, as
            // a client does; any other answer but 201 fails the test.
            let doc: Value = wait_for(&format!("create {i}"), WAIT, || async move {
                let r = self
                    .http
                    .post(self.url(i % 4, "/api/sessions"))
                    .json(&json!({"i": i, "side": "before"}))
                    .send()
                    .await
                    .ok()?;
                match r.status().as_u16() {
                    201 => r.json().await.ok(),
                    503 if r.headers().contains_key("retry-after") => None,
                    status => panic!("create {i}: {status} {:?}", r.text().await),
                }
            })
            .await;
            ids.push(doc["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// PUT through node `i`: the status.
    async fn put(&self, i: usize, id: &str, data: &Value) -> u16 {
        let r = self
            .http
            .put(self.url(i, &format!("/api/sessions/{id}")))
            .json(data)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 503 {
            assert!(r.headers().contains_key("retry-after"), "a 503 says when");
        }
        status
    }

    /// Every session through every node once the rings agree again: (data,
    /// version) of each, the same through each node.
    async fn read_everywhere(&self, ids: &[String]) -> HashMap<String, (Value, u64)> {
        let mut seen = HashMap::new();
        for id in ids {
            let mut answers = Vec::new();
            for i in 0..4 {
                let doc: Value = wait_for(&format!("{id} through node{}", i + 1), WAIT, || async {
                    let r = self
                        .http
                        .get(self.url(i, &format!("/api/sessions/{id}")))
                        .send()
                        .await
                        .ok()?;
                    match r.status().as_u16() {
                        200 => r.json().await.ok(),
                        503 => None,
                        status => panic!("{id} through node{}: {status}", i + 1),
                    }
                })
                .await;
                answers.push((doc["data"].clone(), doc["version"].as_u64().unwrap()));
            }
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{id}: every node serves the same copy: {answers:?}"
            );
            seen.insert(id.clone(), answers[0].clone());
        }
        seen
    }
}

/// Drops everything between the nodes of `a` and those of `b`, both ways,
/// until dropped; `None` (the test skips) without iptables.
fn cut(a: &[usize], b: &[usize]) -> Option<Rules> {
    let mut specs = Vec::new();
    for &x in a {
        for &y in b {
            for (from, to) in [(HOSTS[x], HOSTS[y]), (HOSTS[y], HOSTS[x])] {
                specs.push(spec(&["-o", "lo", "-s", from, "-d", to]));
            }
        }
    }
    Rules::drop_all(&specs)
}

/// Three against one: the three take every write (after taking over the
/// cut-off node's sessions); the one refuses every write and read with 503;
/// after the heal every node serves the three's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_against_one_the_majority_writes_and_the_minority_refuses() {
    let nodes = Nodes::start().await;
    let ids = nodes.create(24).await;
    let Some(cut) = cut(&[0, 1, 2], &[3]) else {
        return;
    };
    nodes.wait_rings(&[0, 1, 2], 3).await;

    for (k, id) in ids.iter().enumerate() {
        let majority = json!({"i": k, "side": "majority"});
        wait_for(&format!("write of {id} through node1"), WAIT, || async {
            match nodes.put(0, id, &majority).await {
                200 => Some(()),
                503 => None,
                status => panic!("write of {id} through node1: {status}"),
            }
        })
        .await;
        let minority = json!({"i": k, "side": "minority"});
        assert_eq!(
            nodes.put(3, id, &minority).await,
            503,
            "write of {id} through node4"
        );
        let read = nodes
            .http
            .get(nodes.url(3, &format!("/api/sessions/{id}")))
            .send()
            .await
            .unwrap();
        if read.status() != 503 {
            let served = common::header(&read, "x-served-by");
            let entry = common::header(&read, "x-entry-node");
            let view: Value = nodes
                .http
                .get(nodes.url(3, "/api/cluster"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            panic!(
                "read of {id} through node4 while cut off: {} served by {served:?} entry {entry:?}: {:?}; node4 ring {} missing {} quorum {}",
                read.status(),
                read.text().await,
                view["ring"]["nodes"], view["missing"], view["quorum"]
            );
        }
    }

    drop(cut);
    nodes.wait_rings(&[0, 1, 2, 3], 4).await;
    let seen = nodes.read_everywhere(&ids).await;
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(seen[id].0, json!({"i": k, "side": "majority"}), "{id}");
    }
}

/// Two against two: neither side has a majority, so neither takes a write
/// (503 on both sides); after the heal every node serves the data from before
/// the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_against_two_nobody_writes() {
    let nodes = Nodes::start().await;
    let ids = nodes.create(24).await;
    let before = nodes.read_everywhere(&ids).await;
    let Some(cut) = cut(&[0, 1], &[2, 3]) else {
        return;
    };
    nodes.wait_rings(&[0, 1, 2, 3], 2).await;

    for (k, id) in ids.iter().enumerate() {
        for (node, side) in [(0, "left"), (2, "right")] {
            let data = json!({"i": k, "side": side});
            assert_eq!(
                nodes.put(node, id, &data).await,
                503,
                "write of {id} through node{}",
                node + 1
            );
        }
    }

    drop(cut);
    nodes.wait_rings(&[0, 1, 2, 3], 4).await;
    let after = nodes.read_everywhere(&ids).await;
    assert_eq!(after, before, "no write was taken on either side");
}
