//! Limits: every one answers with a clear status and is counted in
//! `sessionmesh_limit_hits_total`, and none loses an acknowledged write.

mod common;

use std::time::Duration;

use common::{header, Cluster};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn limit_hits(cluster: &Cluster, i: usize, limit: &str) -> u64 {
    let text = cluster
        .http
        .get(cluster.url(i, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!("sessionmesh_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Oversized headers (a huge cookie) get 431, counted; the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let cluster = Cluster::start_with(1, |c| c.max_header_bytes = 8 * 1024).await;
    let big_cookie = format!("SESSION={}", "a".repeat(10 * 1024));
    let r = cluster
        .http
        .get(cluster.url(0, "/"))
        .header("cookie", big_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "header_too_large");
    assert_eq!(limit_hits(&cluster, 0, "header_too_large").await, 1);
    let ok = cluster.http.get(cluster.url(0, "/")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    cluster.shutdown().await;
}

/// A node at `max_sessions` refuses new sessions with 503 + Retry-After, and
/// still serves and updates the ones it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_new_sessions_but_keeps_serving() {
    let cluster = Cluster::start_with(1, |c| c.max_sessions = 20).await;
    let http = &cluster.http;
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = http
            .post(cluster.url(0, "/api/sessions"))
            .json(&json!({"i": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let refused = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"i": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "node_full");
    let login = http
        .get(cluster.url(0, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 503, "a login needs a new session too");
    assert_eq!(limit_hits(&cluster, 0, "node_full").await, 2);
    for id in &ids {
        let r = http
            .patch(cluster.url(0, &format!("/api/sessions/{id}")))
            .json(&json!({"more": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "existing sessions still take writes");
    }
    cluster.shutdown().await;
}

/// Forwards beyond `max_forwards` in flight fail fast with 503 overloaded and
/// Retry-After instead of queueing; every other request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_beyond_the_bound_fail_fast() {
    let cluster = Cluster::start_with(2, |c| c.max_forwards = 1).await;
    let http = cluster.http.clone();
    // A session owned by node2, read through node1 (a forward each time).
    let doc: Value = http
        .post(cluster.url(1, "/api/sessions"))
        .json(&json!({"x": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = cluster.url(0, &format!("/api/sessions/{}", doc["id"].as_str().unwrap()));
    let mut overloaded = 0u64;
    // Bounded: at most 20 rounds of 64 concurrent reads.
    for _ in 0..20 {
        let round = futures_util::future::join_all((0..64).map(|_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let retry = header(&r, "retry-after");
                let body: Value = r.json().await.unwrap();
                (status, retry, body)
            }
        }))
        .await;
        for (status, retry, body) in round {
            match status {
                200 => assert_eq!(body["data"], json!({"x": 1})),
                503 => {
                    assert_eq!(body["error"], "overloaded");
                    assert!(retry.is_some());
                    overloaded += 1;
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(
        overloaded > 0,
        "64 concurrent forwards through a bound of 1 must hit it"
    );
    assert_eq!(limit_hits(&cluster, 0, "overloaded").await, overloaded);
    cluster.shutdown().await;
}

/// A client that stops sending its body is cut off with 408 within
/// `request_timeout`; one that sends nothing is dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let cluster = Cluster::start_with(1, |c| c.request_timeout = Duration::from_millis(500)).await;
    let addr = cluster.nodes[0].addrs().public;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /api/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server answers and closes within the bound"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(text.contains("request_timeout"));

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a connection that sends nothing is closed");
    assert_eq!(limit_hits(&cluster, 0, "request_timeout").await, 1);
    cluster.shutdown().await;
}

/// `max_session_bytes` bounds what a session holds, not only one request body:
/// merge patches that would grow a session past it, replacements, the
/// cookie-addressed API, and copies arriving from peers are all refused (413,
/// or a refused copy) and change nothing.
///
/// 1. a session by id gets a 40 KB field (200), then a second one through a
///    node that does not own it (413 `session_too_large`, counted): same
///    data, same version, on the owner and through every node;
/// 2. a PUT whose result is over the limit is refused the same way;
/// 3. by cookie: a session started with 40 KB, then a PATCH adding 40 KB more: 413;
/// 4. a replica never held more: the owner's copy and the replica's agree;
/// 5. a signed replication batch from a peer with a copy over the limit:
///    the node refuses it in its acknowledgement and does not hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_size_limit_holds_for_every_write() {
    let cluster = Cluster::start_with(3, |c| c.max_session_bytes = 64 * 1024).await;
    let http = &cluster.http;
    let big = "x".repeat(40 * 1024);
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    let path = format!("/api/sessions/{id}");
    let owner = (0..3).find(|&i| cluster.id(i) == doc["owner"]).unwrap();
    let other = (owner + 1) % 3;

    let first = http
        .patch(cluster.url(owner, &path))
        .json(&json!({"a": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let hits_before = limit_hits(&cluster, other, "session_too_large").await;
    let second = http
        .patch(cluster.url(other, &path))
        .json(&json!({"b": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 413, "a merge past the limit is refused");
    let refusal: Value = second.json().await.unwrap();
    assert_eq!(refusal["error"], "session_too_large", "{refusal}");
    let counted = limit_hits(&cluster, other, "session_too_large").await
        + limit_hits(&cluster, owner, "session_too_large").await;
    assert!(counted > hits_before, "the refusal is counted");
    let replace = http
        .put(cluster.url(other, &path))
        .json(&json!({"a": big, "c": "y".repeat(30 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        replace.status(),
        413,
        "a replacement past the limit is refused"
    );
    for i in 0..3 {
        let now: Value = http
            .get(cluster.url(i, &path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(now["version"], 2, "nothing changed, seen through node {i}");
        assert_eq!(now["data"], json!({"a": big}));
    }

    // By cookie.
    let started = http
        .put(cluster.url(other, "/api/session"))
        .json(&json!({"a": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let cookie = common::set_cookie(&started, "SESSION").unwrap();
    let grow = http
        .patch(cluster.url(owner, "/api/session"))
        .header("cookie", &cookie)
        .json(&json!({"b": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(grow.status(), 413);
    let held: Value = http
        .get(cluster.url(owner, "/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (held["version"].as_u64(), held["data"].get("b")),
        (Some(1), None)
    );

    // Every holder keeps version 2 of the first session: the copies agree.
    let sid = sessionmesh::testing::session::SessionId::parse(&id).unwrap();
    for node in &cluster.nodes {
        if let Some(record) = node.node().replication().copy(&sid) {
            assert_eq!(record.version, 2, "{} holds version 2", node.node().id());
            assert!(record.data.unwrap().get().len() < 64 * 1024);
        }
    }

    // A peer's copy over the limit.
    let fresh = sessionmesh::testing::session::SessionId::random();
    let now = sessionmesh::testing::session::now_millis();
    let huge = "z".repeat(70 * 1024);
    let body = format!(
        r#"{{"from":"node2","records":[{{"id":"{fresh}","version":1,"updated_at":{now},"created_at":{now},"expires_at":{},"ttl_ms":60000,"data":{{"h":"{huge}"}}}}]}}"#,
        now + 60_000
    );
    let ack = cluster.replicate_as(0, "node2", body).await;
    assert_eq!(ack["applied"], 0, "{ack}");
    assert_eq!(ack["refused"], json!([fresh.to_string()]));
    assert!(cluster.nodes[0].node().replication().copy(&fresh).is_none());
    cluster.shutdown().await;
}

/// The internal listener checks a request's signature before it reads the
/// body: a stranger who streams a body that never ends is refused at once
/// (before, every such request held up to 64 MiB of buffer until its body
/// ended); a peer's signed body that does not match its signed digest is
/// refused too. Both are counted as 401s of the internal listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_body_is_not_read_before_its_signature_is_checked() {
    let cluster = Cluster::start(1).await;
    let replicate = sessionmesh::testing::replication::client::REPLICATE_PATH;
    let refused_before = internal_401s(&cluster).await;
    let forged = [
        None,
        Some(format!(
            "v1.{}.node2.{}",
            sessionmesh::testing::session::now_millis(),
            "A".repeat(43)
        )),
    ];
    for auth in &forged {
        // One chunk, then a body that never ends (the sender stays open).
        use futures_util::StreamExt;
        let chunk = Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]);
        let endless = futures_util::stream::iter([chunk]).chain(futures_util::stream::pending());
        let body = reqwest::Body::wrap_stream(endless);
        let mut request = cluster
            .http
            .post(cluster.internal_url(0, replicate))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header(sessionmesh::testing::auth::HEADER, auth);
        }
        let response = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
    }

    // A peer's signature over one body, sent with another.
    let signer = sessionmesh::testing::auth::Signer::new(cluster.secrets.cluster.clone());
    let signed = r#"{"from":"node2","records":[]}"#;
    let sent = r#"{"from":"node2","records":[],"x":1}"#;
    // Signed over `signed`, sent with `body`.
    let post = |body: &'static str| {
        cluster
            .http
            .post(cluster.internal_url(0, replicate))
            .header(
                sessionmesh::testing::auth::HEADER,
                signer.sign("node2", "POST", replicate, signed.as_bytes()),
            )
            .header(
                sessionmesh::testing::auth::DIGEST_HEADER,
                sessionmesh::testing::auth::body_digest(signed.as_bytes()),
            )
            .body(body)
            .send()
    };
    let response = post(sent).await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "unauthorized");
    // The same signature with its own body is served.
    let response = post(signed).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(internal_401s(&cluster).await, refused_before + 3);
    cluster.shutdown().await;
}

/// `sessionmesh_http_requests_total` of the internal listener with status 401.
async fn internal_401s(cluster: &Cluster) -> u64 {
    let text = cluster
        .http
        .get(cluster.url(0, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("sessionmesh_http_requests_total{")
                && l.contains(r#"listener="internal""#)
                && l.contains(r#"status="401""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
