//! No stale read after a one-sided exclusion: a node whose gossip stops
//! reaching the others (while it still hears them) is dropped from their
//! rings without noticing; its sessions are rewritten through the others;
//! when its gossip comes back, every read through it carries the rewrite.
//!
//! The exclusion is real: an iptables rule drops the UDP datagrams the node
//! sends from its gossip port (loopback only, that one port), removed after.
//! Needs root and iptables; under `CI` it must run (`.ci/run` installs
//! iptables), elsewhere it says why it skips.

mod common;

use std::time::Duration;

use common::firewall::{spec, Rules};
use common::{wait_for, ChildCluster, WAIT};
use serde_json::{json, Value};

/// 1. three real nodes; 30 sessions created through node1 (ids it owns);
/// 2. node1's outgoing gossip is dropped; wait until node2 and node3 have
///    dropped node1 from their rings (node1 still has all three);
/// 3. every session is rewritten through node2 (acknowledged);
/// 4. node1's gossip is let through again;
/// 5. at once, every session is read through node1, concurrently: each read
///    carries the rewrite (or is a 503 to retry, never the old data);
/// 6. once the rings agree again, every read through every node does too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_one_sided_exclusion_carry_every_rewrite() {
    let mut cluster = ChildCluster::start(3, &["--replication-factor", "2"]).await;
    let gossip_port = cluster.node("node1").gossip.port();
    let node1 = cluster.node("node1").url("");
    let node2 = cluster.node("node2").url("");
    let http = cluster.http.clone();
    let mut ids = Vec::new();
    for i in 0..30 {
        let doc: Value = http
            .post(format!("{node1}/api/sessions"))
            .json(&json!({"v": 1, "i": i}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["owner"], "node1", "node1 mints ids it owns");
        ids.push(doc["id"].as_str().unwrap().to_owned());
    }

    // What node1 sends from its gossip port (UDP, loopback) is dropped.
    let port = gossip_port.to_string();
    let Some(cut) = Rules::drop_all(&[spec(&["-o", "lo", "-p", "udp", "--sport", &port])]) else {
        return;
    };
    let ring_of = |url: String| {
        let http = http.clone();
        async move {
            let v: Value = http
                .get(format!("{url}/api/cluster"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(v["ring"]["nodes"].clone())
        }
    };
    let node3 = cluster.node("node3").url("");
    wait_for("node2 and node3 to drop node1", WAIT, || async {
        let (a, b) = (ring_of(node2.clone()).await?, ring_of(node3.clone()).await?);
        (a == json!(["node2", "node3"]) && b == a).then_some(())
    })
    .await;
    // What node1 sees meanwhile depends on timing: it still hears the others'
    // digests but no longer gets their state (its answers are dropped), so
    // in time it takes them for dead too; either way, it must not serve old
    // copies once it is back.
    eprintln!(
        "node1's ring while cut off: {:?}",
        ring_of(node1.clone()).await
    );

    for id in &ids {
        common::wait_for(&format!("rewrite of {id}"), WAIT, || async {
            let r = http
                .patch(format!("{node2}/api/sessions/{id}"))
                .json(&json!({"v": 2}))
                .send()
                .await
                .ok()?;
            match r.status().as_u16() {
                200 => Some(()),
                503 => None,
                status => panic!("rewrite of {id}: {status} {:?}", r.text().await),
            }
        })
        .await;
    }

    drop(cut);
    let reads = ids.iter().map(|id| {
        let (http, node1) = (http.clone(), node1.clone());
        async move {
            // Bounded: a 503 says retry; anything else is the answer.
            for _ in 0..200 {
                let r = http
                    .get(format!("{node1}/api/sessions/{id}"))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => return r.json::<Value>().await.unwrap()["data"]["v"].clone(),
                    503 => tokio::time::sleep(Duration::from_millis(25)).await,
                    status => panic!("read of {id} through node1: {status} {:?}", r.text().await),
                }
            }
            panic!("read of {id} through node1 kept answering 503")
        }
    });
    let seen: Vec<Value> = futures_util::future::join_all(reads).await;
    let stale: Vec<&String> = ids
        .iter()
        .zip(&seen)
        .filter(|(_, v)| **v != json!(2))
        .map(|(id, _)| id)
        .collect();
    assert!(stale.is_empty(), "stale reads through node1: {stale:?}");

    cluster.wait_ring(3).await;
    for url in cluster.urls() {
        for id in &ids {
            let v: Value = http
                .get(format!("{url}/api/sessions/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["data"]["v"], 2, "{id} through {url}");
        }
    }
}
