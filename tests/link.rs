//! Peer links: session operations that enter a node other than the session's
//! holder go to the holder over one multiplexed WebSocket on the internal
//! listener.

mod common;

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::{header, set_cookie, Cluster};
use sessionmesh::testing::link::Frame;

/// Requests to a node's internal listener on `route`, from its metrics text.
fn internal_requests(metrics: &str, route: &str) -> u64 {
    let route = format!(r#"route="{route}""#);
    metrics
        .lines()
        .filter(|l| l.starts_with("sessionmesh_http_requests_total{"))
        .filter(|l| l.contains(r#"listener="internal""#) && l.contains(&route))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// 1. three nodes; log in on node1 (which mints an id it owns);
/// 2. 64 reads at once through node2 and node3: each greets the name, says
///    node1 served it and names its entry node;
/// 3. node1 served them over links (its link operation counter grew by at
///    least 64), and not one came as a forwarded HTTP request;
/// 4. after logout, the same reads greet the Guest (the holder said missing, so
///    the entry node served a guest's page);
/// 5. the login and the logout reached the replica over a link too: a write was
///    acknowledged by a replica, and no node got a replication batch over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_reads_entering_other_nodes_ask_the_owner_over_links() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let login = http
        .get(cluster.url(0, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&login, "x-served-by").as_deref(), Some("node1"));
    let cookie = set_cookie(&login, "SESSION").unwrap();
    let owner = cluster.nodes[0].node();
    let reads_before = owner.metrics().link_ops.get();

    let reads = (0..64).map(|i| {
        let entry = 1 + i % 2;
        let request = http
            .get(cluster.url(entry, "/"))
            .header("cookie", &cookie)
            .send();
        async move {
            let page = request.await.unwrap();
            assert_eq!(page.status(), 200);
            assert_eq!(header(&page, "x-served-by").as_deref(), Some("node1"));
            assert_eq!(
                header(&page, "x-entry-node"),
                Some(format!("node{}", entry + 1))
            );
            let body = page.text().await.unwrap();
            assert!(body.contains(">Hello, Ada<"), "{body}");
            assert!(
                body.contains(r#"<code id="served-by">node1</code>"#),
                "{body}"
            );
        }
    });
    futures_util::future::join_all(reads).await;
    let served = owner.metrics().link_ops.get() - reads_before;
    assert!(
        served >= 64,
        "{served} link operations served for 64 page reads"
    );
    let text = owner.metrics().encode().unwrap();
    assert_eq!(internal_requests(&text, "/fwd/"), 0, "{text}");

    let logout = http
        .post(cluster.url(0, "/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    for entry in [1, 2] {
        let page = http
            .get(cluster.url(entry, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&page, "x-served-by"),
            Some(format!("node{}", entry + 1))
        );
        assert!(page.text().await.unwrap().contains(">Hello, Guest<"));
    }
    let replicated = owner
        .replication()
        .stats()
        .replicated
        .load(Ordering::Relaxed);
    assert!(replicated >= 2, "{replicated} copies acknowledged");
    for node in &cluster.nodes {
        let text = node.node().metrics().encode().unwrap();
        assert_eq!(internal_requests(&text, "/internal/replicate"), 0, "{text}");
    }
    cluster.shutdown().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a link to node1's internal listener as a peer does: an upgrade signed
/// with the cluster secret.
async fn open_signed_link(cluster: &Cluster) -> Ws {
    let addr = cluster.nodes[0].addrs().internal;
    let url = format!("ws://{addr}{}", sessionmesh::testing::link::LINK_PATH);
    let signer = sessionmesh::testing::auth::Signer::new(cluster.secrets.cluster.clone());
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "x-sessionmesh-auth",
        signer
            .sign("peer", "GET", sessionmesh::testing::link::LINK_PATH, b"")
            .parse()
            .unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The wire protocol as a peer speaks it, against a real node:
/// 1. an upgrade without the cluster secret's signature is refused (401);
/// 2. a signed upgrade opens a link; requests in one message are each
///    answered under their own id: a session operation with the session, the
///    reads of versions before operations with the data and missing, and a
///    failure for an unknown request kind;
/// 3. a message that is not whole frames closes the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_serves_signed_peers_frame_by_frame() {
    let cluster = Cluster::start(1).await;
    let id = cluster
        .create_session(0, &serde_json::json!({"name": "Ada", "n": 1}))
        .await;
    let addr = cluster.nodes[0].addrs().internal;
    let url = format!("ws://{addr}{}", sessionmesh::testing::link::LINK_PATH);

    let unsigned = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(url.as_str(), unsigned).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("an unsigned link was not refused: {other:?}"),
    }

    let mut ws = open_signed_link(&cluster).await;

    let unknown = "A".repeat(22);
    let mut message = BytesMut::new();
    Frame::encode(
        7,
        sessionmesh::testing::link::READ,
        id.as_bytes(),
        &mut message,
    );
    Frame::encode(
        8,
        sessionmesh::testing::link::READ,
        unknown.as_bytes(),
        &mut message,
    );
    Frame::encode(9, 0x42, b"", &mut message);
    let get = format!(r#"{{"get":{{"id":"{id}"}}}}"#);
    Frame::encode(
        10,
        sessionmesh::testing::link::OP,
        get.as_bytes(),
        &mut message,
    );
    ws.send(Message::Binary(message.freeze())).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 4 {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(data) => {
                for frame in Frame::decode_all(data) {
                    let frame = frame.expect("whole frames");
                    answers.push((frame.id, frame.kind, frame.body));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    answers.sort_by_key(|a| a.0);
    assert_eq!(answers[0].0, 7);
    assert_eq!(answers[0].1, sessionmesh::testing::link::FOUND);
    let data: serde_json::Value = serde_json::from_slice(&answers[0].2).unwrap();
    assert_eq!(data, serde_json::json!({"name": "Ada", "n": 1}));
    assert_eq!(
        (answers[1].0, answers[1].1),
        (8, sessionmesh::testing::link::MISSING)
    );
    assert_eq!(
        (answers[2].0, answers[2].1),
        (9, sessionmesh::testing::link::FAILED)
    );
    assert!(
        std::str::from_utf8(&answers[2].2)
            .unwrap()
            .starts_with("unknown_request\n"),
        "{:?}",
        answers[2].2
    );
    assert_eq!(
        (answers[3].0, answers[3].1),
        (10, sessionmesh::testing::link::OP_REPLY)
    );
    let reply: serde_json::Value = serde_json::from_slice(&answers[3].2).unwrap();
    assert_eq!(
        reply["session"]["data"],
        serde_json::json!({"name": "Ada", "n": 1})
    );
    assert_eq!(reply["session"]["version"], 1);
    assert_eq!(reply["session"]["served_by"], "node1");

    // Half a frame: the node closes the link.
    ws.send(Message::Binary(Bytes::from_static(&[0, 0, 0, 40, 1])))
        .await
        .unwrap();
    match ws.next().await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("the link stayed open: {other:?}"),
    }
    cluster.shutdown().await;
}

/// A reply buffer does not grow with what one message asks for:
/// 1. a session of 60 KiB (near the default `max_session_bytes`);
/// 2. a peer reads it 400 times in one message of about 12 KB;
/// 3. every read is answered with the whole session, in several messages,
///    none larger than the batch size (256 KiB) plus one reply (before, all
///    24 MB of replies were gathered into one buffer and sent as one
///    message), and the node counted the cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_one_message_leave_in_messages_of_bounded_size() {
    const READS: u64 = 400;
    const DATA_BYTES: usize = 60 * 1024;
    let cluster = Cluster::start(1).await;
    let data = serde_json::json!({ "blob": "x".repeat(DATA_BYTES) });
    let id = cluster.create_session(0, &data).await;
    let cuts_before = cluster.nodes[0].node().metrics().link_replies_cut.get();

    let mut ws = open_signed_link(&cluster).await;
    let mut message = BytesMut::new();
    for request in 0..READS {
        Frame::encode(
            request,
            sessionmesh::testing::link::READ,
            id.as_bytes(),
            &mut message,
        );
    }
    ws.send(Message::Binary(message.freeze())).await.unwrap();

    let one_reply = serde_json::to_vec(&data).unwrap().len() + 13;
    let largest_allowed = 256 * 1024 + one_reply;
    let mut answered = std::collections::BTreeSet::new();
    let mut messages = 0;
    while (answered.len() as u64) < READS {
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("the replies came within 30 s");
        let Some(Ok(Message::Binary(bytes))) = received else {
            panic!("the link ended before every read was answered: {received:?}");
        };
        messages += 1;
        assert!(
            bytes.len() <= largest_allowed,
            "a reply message of {} bytes (at most {largest_allowed} allowed)",
            bytes.len()
        );
        for frame in Frame::decode_all(bytes) {
            let frame = frame.expect("whole frames");
            assert_eq!(frame.kind, sessionmesh::testing::link::FOUND);
            let got: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
            assert_eq!(got, data, "read {} answered with other data", frame.id);
            assert!(
                answered.insert(frame.id),
                "read {} answered twice",
                frame.id
            );
        }
    }
    assert_eq!(answered, (0..READS).collect());
    let cuts = cluster.nodes[0].node().metrics().link_replies_cut.get() - cuts_before;
    assert!(messages > 1 && cuts > 0, "{messages} messages, {cuts} cuts");
    cluster.shutdown().await;
}
