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
