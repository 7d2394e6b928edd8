//! Strangers on the gossip port: datagrams from anyone without the cluster
//! secret are dropped unread, so they announce nobody; and a member announced
//! by a holder of the secret whose advertised address cannot prove the secret
//! never enters a ring and never receives a session.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use common::gossip::{count, drops_at, drops_of};
use common::{test_config, wait_for, Cluster, Secrets, WAIT};
use serde_json::{json, Value};
use sessionmesh::testing::auth::Signer;
use sessionmesh::testing::membership::{GossipDrops, GossipKeys, SealedTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw gossip member announcing `public`/`internal` addresses, as an intruder
/// with the chitchat crate and the cluster id would, over `transport`.
async fn fake_member(
    cluster_id: &str,
    node_id: &str,
    seed: SocketAddr,
    internal: &str,
    transport: &dyn Transport,
) -> ChitchatHandle {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id, 1, addr),
        cluster_id: cluster_id.to_owned(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: addr,
        seed_nodes: vec![seed.to_string()],
        failure_detector_config: FailureDetectorConfig {
            initial_interval: Duration::from_millis(100),
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    let kv = vec![
        ("public_addr".to_owned(), internal.to_owned()),
        ("internal_addr".to_owned(), internal.to_owned()),
        ("status".to_owned(), "ready".to_owned()),
    ];
    spawn_chitchat(config, kv, transport).await.unwrap()
}

/// A TCP listener that counts connections and answers every request with 200
/// and a body that is no proof.
async fn trap() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<parking_lot::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (h, l) = (hits.clone(), lines.clone());
    tokio::spawn(async move {
        // Ends with the test's runtime.
        while let Ok((mut socket, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::Relaxed);
            let l = l.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                if let Ok(n) = socket.read(&mut buf).await {
                    let head = String::from_utf8_lossy(&buf[..n]);
                    l.lock()
                        .push(head.lines().next().unwrap_or_default().to_owned());
                }
                let body =
                    r#"{"cluster_id":"test","node_id":"evil","generation":1,"proof":"AAAA"}"#;
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, hits, lines)
}

/// The node ids in node `i`'s `/api/cluster` member list.
async fn members_listed(cluster: &Cluster, i: usize) -> Vec<String> {
    let view: Value = cluster
        .http
        .get(cluster.url(i, "/api/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates `n` sessions through every node and checks that their owner and
/// replicas are nodes of the cluster and that every node serves them.
async fn sessions_stay_home(cluster: &Cluster, n: usize) {
    let http = &cluster.http;
    let home = ["node1", "node2", "node3"];
    for i in 0..n {
        let doc: Value = http
            .post(cluster.url(i % 3, "/api/sessions"))
            .json(&json!({"i": i}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(home.contains(&doc["owner"].as_str().unwrap()));
        for r in doc["replicas"].as_array().unwrap() {
            assert!(home.contains(&r.as_str().unwrap()), "replica {r}");
        }
        let id = doc["id"].as_str().unwrap();
        for entry in 0..3 {
            let r = http
                .get(cluster.url(entry, &format!("/api/sessions/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
}

/// 1. a 3-node cluster; 2. an intruder without the secret gossips "evil"
///    (addresses at a trap) and "mimic" (addresses at node2's real internal
///    listener) to node1 with plain chitchat; 3. node1 drops their datagrams
///    unread (counted as `unsealed`), so no node ever lists either of them, no
///    ring changes, and the trap is never even challenged; 4. sessions stay on
///    the cluster's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_without_the_secret_announces_nobody() {
    let cluster = Cluster::start(3).await;
    let fingerprint = cluster.wait_converged(3).await;
    let seed = cluster.nodes[0].addrs().gossip;
    let (trap_addr, hits, _) = trap().await;
    let unsealed_before = count(&drops_of(&cluster, 0).await, "unsealed");
    let plain = UdpTransport;
    let evil = fake_member("test", "evil", seed, &trap_addr.to_string(), &plain).await;
    let mimic = fake_member(
        "test",
        "mimic",
        seed,
        &cluster.nodes[1].addrs().internal.to_string(),
        &plain,
    )
    .await;
    // Each intruder gossips to its seed every 100 ms: wait for a good many.
    wait_for("node1 to drop 20 of their datagrams", WAIT, || async {
        let unsealed = count(&drops_of(&cluster, 0).await, "unsealed");
        (unsealed >= unsealed_before + 20).then_some(())
    })
    .await;
    for i in 0..3 {
        let listed = members_listed(&cluster, i).await;
        assert_eq!(listed.len(), 3, "node{} lists {listed:?}", i + 1);
        let view = cluster.nodes[i].node().view();
        assert_eq!(
            view.ring.fingerprint(),
            fingerprint,
            "the ring did not change"
        );
        assert!(view.member("evil").is_none() && view.member("mimic").is_none());
    }
    sessions_stay_home(&cluster, 30).await;
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "nobody ever dialed the trap"
    );
    evil.shutdown().await.unwrap();
    mimic.shutdown().await.unwrap();
    cluster.shutdown().await;
}

/// Admission, behind sealed gossip: a holder of the secret (here, the test with
/// the cluster's own gossip keys) announces "evil" (addresses at a trap) and
/// "mimic" (addresses at node2's real internal listener). Every node sees both,
/// challenges them at their advertised internal address, and refuses them:
/// never admitted, never in a ring; 200 sessions created and read through every
/// node: none goes to the trap, which only ever saw admission challenges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_address_proves_nothing_never_enters_a_ring() {
    let cluster = Cluster::start(3).await;
    let fingerprint = cluster.wait_converged(3).await;
    let seed = cluster.nodes[0].addrs().gossip;
    let (trap_addr, _hits, lines) = trap().await;
    let sealed = SealedTransport::new(
        GossipKeys::new(&Signer::new(cluster.secrets.cluster.clone())),
        Arc::new(GossipDrops::default()),
    );
    let evil = fake_member("test", "evil", seed, &trap_addr.to_string(), &sealed).await;
    let mimic = fake_member(
        "test",
        "mimic",
        seed,
        &cluster.nodes[1].addrs().internal.to_string(),
        &sealed,
    )
    .await;
    let http = &cluster.http;

    // Every node learns of both from gossip and refuses them.
    wait_for(
        "every node to see and refuse the intruders",
        WAIT,
        || async {
            for i in 0..3 {
                let view: Value = http
                    .get(cluster.url(i, "/api/cluster"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let members = view["members"].as_array()?;
                for name in ["evil", "mimic"] {
                    let m = members.iter().find(|m| m["node_id"] == name)?;
                    assert_eq!(m["admitted"], false, "{name} admitted on node{}", i + 1);
                }
            }
            Some(())
        },
    )
    .await;
    for node in &cluster.nodes {
        let view = node.node().view();
        assert_eq!(
            view.ring.fingerprint(),
            fingerprint,
            "the ring did not change"
        );
        assert!(!view.ring.contains("evil") && !view.ring.contains("mimic"));
    }
    sessions_stay_home(&cluster, 200).await;
    let seen = lines.lock().clone();
    assert!(!seen.is_empty(), "the trap was challenged");
    for line in &seen {
        assert!(
            line.starts_with("GET /internal/admission?nonce="),
            "the trap only ever got challenges, got {line:?}"
        );
    }
    for node in &cluster.nodes {
        assert!(!node.node().view().ring.contains("evil"));
    }
    evil.shutdown().await.unwrap();
    mimic.shutdown().await.unwrap();
    cluster.shutdown().await;
}

/// A real sessionmesh node started with another cluster secret (same cluster
/// id, seeded with node1): node1 drops its gossip unread (counted as
/// `unknown_key`), so it never becomes a member of the cluster, and the
/// cluster never gossips with it: its ring is itself alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_never_heard() {
    let cluster = Cluster::start(2).await;
    let fingerprint = cluster.wait_converged(2).await;
    let unknown_before = count(&drops_of(&cluster, 0).await, "unknown_key");
    let other = Secrets::new();
    let stranger = common::start(test_config(
        "stranger",
        &other,
        vec![cluster.nodes[0].addrs().gossip.to_string()],
    ))
    .await
    .unwrap();
    wait_for(
        "node1 to drop 10 of the stranger's datagrams",
        WAIT,
        || async {
            let unknown = count(&drops_of(&cluster, 0).await, "unknown_key");
            (unknown >= unknown_before + 10).then_some(())
        },
    )
    .await;
    for i in 0..2 {
        let listed = members_listed(&cluster, i).await;
        assert!(
            !listed.contains(&"stranger".to_owned()),
            "node{}: {listed:?}",
            i + 1
        );
        assert_eq!(
            cluster.nodes[i].node().view().ring.fingerprint(),
            fingerprint
        );
    }
    let view = stranger.node().view();
    assert_eq!(view.members.len(), 1, "the stranger knows only itself");
    assert!(view
        .ring
        .nodes()
        .iter()
        .map(|n| n.to_string())
        .eq(["stranger".to_owned()]));
    let url = format!("http://{}/metrics", stranger.addrs().public);
    let own = drops_at(&cluster.http, &url).await;
    assert_eq!(
        own.iter().sum::<u64>(),
        0,
        "nobody gossiped to the stranger: {own:?}"
    );
    stranger.shutdown().await;
    cluster.shutdown().await;
}

/// A node of another cluster id is not even a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_ignored() {
    let cluster = Cluster::start(2).await;
    let mut config = test_config(
        "foreign",
        &cluster.secrets,
        vec![cluster.nodes[0].addrs().gossip.to_string()],
    );
    config.cluster_id = "another".to_owned();
    let foreign = common::start(config).await.unwrap();
    // Give gossip time to try: wait until the foreign node has given up on
    // finding peers (it starts as a cluster of one), then check.
    wait_for("the foreign node to serve alone", WAIT, || async {
        (foreign.node().view().ring.nodes().len() == 1).then_some(())
    })
    .await;
    for node in &cluster.nodes {
        let view = node.node().view();
        assert!(
            view.member("foreign").is_none(),
            "another cluster's node is no member"
        );
        assert_eq!(view.ring.nodes().len(), 2);
    }
    foreign.shutdown().await;
    cluster.shutdown().await;
}

/// The session id that an entry node passes to the owner (so that the owner need
/// not check the cookie's signature again) is trusted only on the internal
/// listener and only when the cluster secret signed it: a client that sends the
/// header itself gets nothing from it, on the owner or on any other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_session_header_is_never_trusted() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let nodes = &cluster;
    let login = |name: &'static str| async move {
        let response = http
            .get(nodes.url(0, &format!("/login?name={name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        common::set_cookie(&response, "SESSION").expect("a session cookie")
    };
    let victim = login("victim").await;
    let mallory = login("mallory").await;
    let victim_id = victim
        .trim_start_matches("SESSION=")
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let greeting = |page: &str| {
        page.split("<h1 id=\"greeting\">")
            .nth(1)
            .and_then(|rest| rest.split("</h1>").next())
            .unwrap_or_default()
            .to_owned()
    };
    // On every node (the owner and the others, which forward): the header alone
    // is a Guest; beside a valid cookie, the cookie's session wins.
    for i in 0..3 {
        let page = http
            .get(cluster.url(i, "/"))
            .header("x-sessionmesh-session", &victim_id)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(greeting(&page), "Hello, Guest", "node {i}, header alone");
        let page = http
            .get(cluster.url(i, "/"))
            .header("cookie", &mallory)
            .header("x-sessionmesh-session", &victim_id)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(greeting(&page), "Hello, mallory", "node {i}, with a cookie");
        let response = http
            .get(cluster.url(i, "/api/session"))
            .header("x-sessionmesh-session", &victim_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "node {i}: no cookie, no session");
    }
    // On the internal listener: a signature that does not cover the header is
    // refused; one that covers it (a peer's) is served.
    let peer = sessionmesh::testing::auth::Signer::new(cluster.secrets.cluster.clone());
    let signed_without = peer.sign("node2", "GET", "/fwd/", b"");
    let response = http
        .get(cluster.internal_url(0, "/fwd/"))
        .header("x-sessionmesh-auth", signed_without)
        .header("x-entry-node", "node2")
        .header("x-sessionmesh-session", &victim_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a session header the signature does not cover"
    );
    // A peer's signed header names no session by itself: a forwarded request
    // is a visitor's by its cookie (forwarded with it), checked here again.
    let signed_with = peer.sign_with_session("node2", "GET", "/fwd/", b"", Some(&victim_id));
    let page = http
        .get(cluster.internal_url(0, "/fwd/"))
        .header("x-sessionmesh-auth", signed_with)
        .header("x-entry-node", "node2")
        .header("x-sessionmesh-session", &victim_id)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        greeting(&page),
        "Hello, Guest",
        "a peer's signed header alone"
    );
    // With the cookie, as a peer of an older version forwards a page: served here.
    let signed = peer.sign_with_session("node2", "GET", "/fwd/", b"", Some(&victim_id));
    let page = http
        .get(cluster.internal_url(0, "/fwd/"))
        .header("x-sessionmesh-auth", signed)
        .header("x-entry-node", "node2")
        .header("x-sessionmesh-session", &victim_id)
        .header("cookie", &victim)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        greeting(&page),
        "Hello, victim",
        "a forwarded page with its cookie"
    );
    cluster.shutdown().await;
}

/// A signed internal request captured on the wire and sent again (inside the
/// 30 s timestamp window) is refused: every signature carries a nonce that the
/// node remembers while the timestamp is valid. Counted in
/// `sessionmesh_replayed_requests_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_internal_request_is_refused() {
    let cluster = Cluster::start(1).await;
    let peer = sessionmesh::testing::auth::Signer::new(cluster.secrets.cluster.clone());
    let captured = peer.sign("node2", "GET", "/internal/ping", b"");
    let send = || {
        cluster
            .http
            .get(cluster.internal_url(0, "/internal/ping"))
            .header(sessionmesh::testing::auth::HEADER, &captured)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 401);
    let error: serde_json::Value = again.json().await.unwrap();
    assert_eq!(error["error"], "unauthorized");
    assert!(
        error["message"].as_str().unwrap().contains("replayed"),
        "{error}"
    );
    // A fresh signature of the same request is served.
    let fresh = peer.sign("node2", "GET", "/internal/ping", b"");
    let response = cluster
        .http
        .get(cluster.internal_url(0, "/internal/ping"))
        .header(sessionmesh::testing::auth::HEADER, fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(cluster.nodes[0].node().metrics().replayed_requests.get(), 1);
    cluster.shutdown().await;
}
