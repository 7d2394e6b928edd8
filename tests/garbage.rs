//! Garbage in: random bytes on the gossip, internal and public ports; oversized
//! and invalid headers; invalid UTF-8 in paths, queries, cookies and bodies;
//! deeply nested JSON; absurd numbers; hostile replication batches. After each
//! barrage every node must still be up and right: `/readyz` 200, a session
//! written before reads back through every node, a new login works, and the
//! ring is the one from before.
//!
//! Every barrage is bounded in count and time, goes to loopback only, and is
//! seeded: the seed is printed, and `GARBAGE_SEED=<n>` replays it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::gossip::{capture, count, drops_of};
use common::{set_cookie, Cluster};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use sessionmesh::testing::auth::{self, Signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// chitchat's wire header: magic number (little endian), protocol version, message type.
const CHITCHAT_MAGIC: u16 = 45_139;
/// The first byte of a sealed gossip datagram (its format version).
const SEALED: u8 = 1;

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("GARBAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: GARBAGE_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

// ---- what must hold after every barrage ----

/// A session and a ring recorded before a barrage.
struct Before {
    id: String,
    data: Value,
    fingerprint: String,
    nodes: usize,
}

async fn before(cluster: &Cluster) -> Before {
    let data = json!({"probe": "written before the garbage", "n": 1});
    let r = cluster
        .http
        .post(cluster.url(0, "/api/sessions"))
        .json(&data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    Before {
        id: doc["id"].as_str().unwrap().to_owned(),
        data,
        fingerprint: cluster.nodes[0].node().view().ring.fingerprint().to_owned(),
        nodes: cluster.nodes.len(),
    }
}

/// Every node still has the ring it had before, is ready, serves the session
/// written before and logs a new visitor in.
async fn still_correct(cluster: &Cluster, before: &Before, after: &str) {
    for i in 0..cluster.nodes.len() {
        let view = cluster.nodes[i].node().view();
        assert_eq!(
            view.ring.nodes().len(),
            before.nodes,
            "after {after}: node{} has a ring of {:?}",
            i + 1,
            view.ring.nodes()
        );
        assert_eq!(
            view.ring.fingerprint(),
            before.fingerprint,
            "after {after}: node{}'s ring changed",
            i + 1
        );
    }
    still_serving(cluster, before, after).await;
}

/// Every node is ready, serves the session written before and logs a new
/// visitor in (whatever its ring).
async fn still_serving(cluster: &Cluster, before: &Before, after: &str) {
    for i in 0..cluster.nodes.len() {
        let http = &cluster.http;
        for path in ["/healthz", "/readyz"] {
            let r = http.get(cluster.url(i, path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "after {after}: {path} of node{}", i + 1);
        }
        let r = http
            .get(cluster.url(i, &format!("/api/sessions/{}", before.id)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "after {after}: the probe via node{}",
            i + 1
        );
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["data"], before.data, "after {after}");

        let name = format!("visitor{i}");
        let r = http
            .get(cluster.url(i, &format!("/login?name={name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "after {after}: login on node{}", i + 1);
        let cookie = set_cookie(&r, "SESSION").expect("a session cookie");
        let other = (i + 1) % cluster.nodes.len();
        let page = http
            .get(cluster.url(other, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("Hello, {name}")),
            "after {after}: node{} greets the visitor of node{}: {page}",
            other + 1,
            i + 1
        );
    }
    eprintln!("after {after}: every node up and correct");
}

// ---- raw HTTP/1.1 ----

/// What a server did with a raw request.
#[derive(Debug, PartialEq)]
enum Answer {
    Status(u16, String),
    /// Closed (or reset) the connection without an HTTP answer.
    Closed,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Status(s, _) => Some(*s),
            Answer::Closed => None,
        }
    }
}

/// Sends `request` on a fresh connection (writing and reading at once, so a
/// server that answers before reading everything is heard) and returns the
/// answer's status and body, or `Closed`.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.shutdown().await;
        // Keep the write half until the reader is done.
        wr
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) => {
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Answer::Status(status, body)
        }
        None => Answer::Closed,
    }
}

/// A request with `Connection: close` and, when given, a body with its length.
fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method != "GET" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends every case and checks that each answer is one of its `allowed` ones
/// (a `None` there admits a connection closed without an answer).
async fn expect_each(addr: SocketAddr, cases: Vec<(String, Vec<u8>, Vec<Option<u16>>)>) {
    let answers: Vec<(String, Answer, Vec<Option<u16>>)> = futures_util::stream::iter(cases)
        .map(|(what, req, allowed)| async move { (what, raw(addr, req).await, allowed) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut wrong = Vec::new();
    for (what, answer, allowed) in &answers {
        if !allowed.contains(&answer.status()) {
            wrong.push(format!("{what}: {answer:?}, expected one of {allowed:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
}

// ---- the barrages ----

/// Random datagrams on every gossip port (half of them behind a valid chitchat
/// header, to reach the message decoder), then random bytes and half-HTTP on
/// every public and internal TCP port.
///
/// 1. start 3 nodes, write a probe session;
/// 2. 600 random datagrams (1 B to 64 KiB) to each node's gossip port, half
///    behind a plain chitchat header, a quarter behind a seal's version byte:
///    each node drops them as unsealed, of an unknown key, or malformed;
/// 3. 60 connections to each public and internal port, each writing up to
///    16 KiB of random bytes (some after a plausible request line) and closing:
///    no answer may be a 5xx;
/// 4. every node is still up and correct, with the same ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_every_port() {
    let cluster = Cluster::start(3).await;
    let before = before(&cluster).await;
    let mut rng = rng("random_bytes_on_every_port");

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = 0;
    for node in &cluster.nodes {
        let gossip = node.addrs().gossip;
        for i in 0..600 {
            let len = if i % 50 == 0 {
                rng.random_range(1_500..65_000)
            } else {
                rng.random_range(1..1_500)
            };
            let mut datagram = random_bytes(&mut rng, len);
            if i % 2 == 0 && len >= 4 {
                datagram[..2].copy_from_slice(&CHITCHAT_MAGIC.to_le_bytes());
                datagram[2] = rng.random_range(0..2);
                datagram[3] = rng.random_range(0..4);
            } else if i % 4 == 1 {
                datagram[0] = SEALED;
            }
            socket.send_to(&datagram, gossip).await.unwrap();
            sent += 1;
            if i % 25 == 0 {
                // Paces the barrage so that it does not just fill socket buffers.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    eprintln!("sent {sent} random datagrams to the gossip ports");
    still_correct(&cluster, &before, "random gossip datagrams").await;
    for i in 0..cluster.nodes.len() {
        let drops = drops_of(&cluster, i).await;
        eprintln!("node{} dropped {drops:?}", i + 1);
        for reason in ["unsealed", "unknown_key", "malformed"] {
            assert!(
                count(&drops, reason) > 0,
                "node{} counted no {reason}",
                i + 1
            );
        }
        assert_eq!(count(&drops, "undecodable"), 0, "node{}", i + 1);
    }

    let mut conns = Vec::new();
    for node in &cluster.nodes {
        for addr in [node.addrs().public, node.addrs().internal] {
            for i in 0..60 {
                let len = rng.random_range(1..16 * 1024);
                let mut bytes = random_bytes(&mut rng, len);
                let prefix: &[u8] = match i % 4 {
                    0 => b"",
                    1 => b"GET / HTTP/1.1\r\n",
                    2 => b"POST /api/sessions HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n",
                    _ => {
                        b"PATCH /internal/replicate HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
                    }
                };
                bytes.splice(0..0, prefix.iter().copied());
                conns.push((addr, bytes));
            }
        }
    }
    let answers: Vec<Answer> = futures_util::stream::iter(conns)
        .map(|(addr, bytes)| raw(addr, bytes))
        .buffer_unordered(16)
        .collect()
        .await;
    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
    let errors = count(&|a| a.status().is_some_and(|s| s >= 500));
    eprintln!(
        "{} garbage connections: {} answered 4xx, {} closed without an answer, {errors} answered 5xx",
        answers.len(),
        count(&|a| a.status().is_some_and(|s| (400..500).contains(&s))),
        count(&|a| *a == Answer::Closed),
    );
    assert_eq!(errors, 0, "garbage got a 5xx: {answers:?}");
    still_correct(&cluster, &before, "random bytes on the TCP ports").await;
    cluster.shutdown().await;
}

/// Real gossip packets, captured and then mutated (bytes flipped, cut short,
/// spliced), sent to every node: every node drops them unread, and nothing
/// changes.
///
/// 1. start 3 nodes that also list a test socket as a seed: they send it SYNs;
/// 2. send a captured SYN back to its sender from the test socket: it answers
///    a SYN-ACK carrying the cluster state;
/// 3. send 300 mutations of those packets to every node's gossip port;
/// 4. every node is still up and correct, with the same ring, and counted
///    drops for a wrong MAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_gossip_packets() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_seed = socket.local_addr().unwrap().to_string();
    let cluster = Cluster::start_with(3, |config| config.seeds.push(fake_seed.clone())).await;
    let before = before(&cluster).await;
    let mut rng = rng("mutated_gossip_packets");

    let captured = capture(&socket, &cluster).await;
    let (syn, syn_ack) = (captured.syn, captured.syn_ack);
    eprintln!(
        "captured a SYN of {} bytes and a SYN-ACK of {} bytes from node{}",
        syn.len(),
        syn_ack.len(),
        captured.sender + 1
    );

    for node in &cluster.nodes {
        let gossip = node.addrs().gossip;
        for i in 0..300 {
            let mut packet = if i % 2 == 0 {
                syn.clone()
            } else {
                syn_ack.clone()
            };
            match i % 3 {
                0 => {
                    for _ in 0..rng.random_range(1..5) {
                        let at = rng.random_range(4..packet.len());
                        packet[at] ^= 1 << rng.random_range(0..8);
                    }
                }
                1 => packet.truncate(rng.random_range(4..packet.len())),
                _ => {
                    let at = rng.random_range(4..packet.len());
                    let len = rng.random_range(1..64);
                    let noise = random_bytes(&mut rng, len);
                    packet.splice(at..at, noise);
                }
            }
            socket.send_to(&packet, gossip).await.unwrap();
            if i % 25 == 0 {
                // Paces the barrage.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    // Let the nodes gossip a few rounds with what they took in.
    gossip_rounds(&cluster, 5).await;
    still_correct(&cluster, &before, "mutated gossip packets").await;
    for i in 0..cluster.nodes.len() {
        let drops = drops_of(&cluster, i).await;
        eprintln!("node{} dropped {drops:?}", i + 1);
        assert!(count(&drops, "bad_mac") > 0, "node{}", i + 1);
        assert_eq!(count(&drops, "undecodable"), 0, "node{}", i + 1);
    }
    cluster.shutdown().await;
}

/// A forged heartbeat must not take a live node out of a ring.
///
/// chitchat takes the heartbeats in any SYN-ACK's digest at face value. One
/// datagram whose digest gives node2 a heartbeat of 2^63 made node1 ignore
/// node2's real (lower) heartbeats: node1 declared node2 dead within a second
/// and never took it back, and gossiped the forged heartbeat on, so node3
/// dropped node2 too; node2 ran on alone with its own view (seen with plain
/// chitchat 0.13: ring sizes [2, 3, 2] two seconds after the datagram, node2
/// still out of node1's ring 20 s later: split brain). Sealed gossip drops the
/// forgery unread: its MAC no longer matches.
///
/// 1. start 3 nodes that also list a test socket as a seed; capture a SYN and,
///    sending it back to its sender, a SYN-ACK;
/// 2. set node2's heartbeat in that SYN-ACK's digest to 2^63 - 1 and send it
///    once to node1, from the test socket;
/// 3. node1 counts it as dropped for a wrong MAC;
/// 4. every node's ring still holds the three nodes 10 gossip rounds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_heartbeat_does_not_split_the_rings() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_seed = socket.local_addr().unwrap().to_string();
    let cluster = Cluster::start_with(3, |config| config.seeds.push(fake_seed.clone())).await;
    let before = before(&cluster).await;
    let syn_ack = capture(&socket, &cluster).await.syn_ack;
    let mut forged = syn_ack.clone();
    // Digest entry: node id, generation (8), gossip address (1 + 4 + 2), heartbeat (8).
    let id_end = forged
        .windows(5)
        .position(|w| w == b"node2")
        .expect("node2 in the digest")
        + 5;
    let heartbeat = id_end + 8 + 7;
    forged[heartbeat..heartbeat + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let bad_mac_before = count(&drops_of(&cluster, 0).await, "bad_mac");
    socket
        .send_to(&forged, cluster.nodes[0].addrs().gossip)
        .await
        .unwrap();
    common::wait_for("node1 to drop the forgery", common::WAIT, || async {
        (count(&drops_of(&cluster, 0).await, "bad_mac") > bad_mac_before).then_some(())
    })
    .await;
    // Give a forgery that got through a few gossip rounds to act.
    gossip_rounds(&cluster, 10).await;
    still_correct(&cluster, &before, "a forged heartbeat").await;
    cluster.shutdown().await;
}

/// Oversized, numerous and invalid headers, invalid UTF-8 and odd bytes in
/// paths and query strings, huge If-Match values, malformed session ids: each
/// gets a 4xx (431 for headers too large, or a closed connection), never a
/// 5xx, and the node stays correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_heads() {
    let cluster = Cluster::start(3).await;
    let before = before(&cluster).await;
    let id = before.id.clone();
    let session = format!("/api/sessions/{id}");
    let public = cluster.nodes[0].addrs().public;
    // A valid cookie, to pair with hostile neighbours.
    let login = cluster
        .http
        .get(cluster.url(1, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&login, "SESSION").unwrap();

    let big = |n: usize| "A".repeat(n).into_bytes();
    let ok_or_too_large = vec![Some(200), Some(431), None];
    let too_large = vec![Some(431), Some(400), None];
    let bad = vec![Some(400), Some(404)];
    let mut cases: Vec<(String, Vec<u8>, Vec<Option<u16>>)> = Vec::new();
    let mut case = |what: &str, req: Vec<u8>, allowed: &[Option<u16>]| {
        cases.push((what.to_owned(), req, allowed.to_vec()))
    };

    // Cookies: too long, too many, not UTF-8, not ours: a Guest, or 431.
    for (what, value) in [
        (
            "an 8 KiB cookie",
            [b"SESSION=".to_vec(), big(8 * 1024)].concat(),
        ),
        (
            "a 100 KiB cookie",
            [b"SESSION=".to_vec(), big(100 * 1024)].concat(),
        ),
        ("4000 cookies", "a=b; ".repeat(4000).into_bytes()),
        (
            "a non-UTF-8 cookie",
            b"SESSION=\xff\xfe\xfd.\xc3\x28".to_vec(),
        ),
        (
            "a cookie of a session id with a forged tag",
            format!("SESSION={id}.AAAAAAAAAAAAAAAAAAAAAA").into_bytes(),
        ),
    ] {
        case(
            &format!("GET / with {what}"),
            request("GET", b"/", &[("cookie", &value)], b""),
            &ok_or_too_large,
        );
        case(
            &format!("GET /api/session with {what}"),
            request("GET", b"/api/session", &[("cookie", &value)], b""),
            &[Some(404), Some(431), None],
        );
    }
    let page = raw(
        public,
        request("GET", b"/", &[("cookie", b"SESSION=\xff\xfe\xfd")], b""),
    )
    .await;
    assert!(
        matches!(&page, Answer::Status(200, body) if body.contains("Hello, Guest")),
        "a non-UTF-8 cookie is a Guest: {page:?}"
    );
    // A valid cookie among hostile ones still works.
    // Control bytes are not allowed in a header value: the parser refuses them.
    case(
        "a cookie with control bytes",
        request("GET", b"/", &[("cookie", b"SESSION=\x01\x02\x7f")], b""),
        &[Some(400)],
    );
    let mixed = [
        b"junk=\xff\xfe; =; ;; ".to_vec(),
        cookie.clone().into_bytes(),
        b"; SESSION=garbage".to_vec(),
    ]
    .concat();
    case(
        "GET / with a valid cookie among junk",
        request("GET", b"/", &[("cookie", &mixed)], b""),
        &[Some(200)],
    );

    // Head too large: one huge header, or too many.
    case(
        "a 200 KiB cookie",
        request(
            "GET",
            b"/",
            &[("cookie", &[b"SESSION=".to_vec(), big(200 * 1024)].concat())],
            b"",
        ),
        &too_large,
    );
    let many: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("x-h{i}"), b"v".to_vec()))
        .collect();
    let many: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    case("200 headers", request("GET", b"/", &many, b""), &too_large);
    case(
        "a 300 KiB path",
        request(
            "GET",
            &[b"/api/sessions/".to_vec(), big(300 * 1024)].concat(),
            &[],
            b"",
        ),
        &too_large,
    );

    // If-Match: huge, out of range, not UTF-8, odd forms: 400, never a write.
    let patch_with = |value: &[u8]| {
        request(
            "PATCH",
            session.as_bytes(),
            &[("if-match", value), ("content-type", b"application/json")],
            br#"{"probe":"overwritten"}"#,
        )
    };
    case(
        "a 100 KiB If-Match",
        patch_with(
            &[
                b"\"".to_vec(),
                "9".repeat(100 * 1024).into_bytes(),
                b"\"".to_vec(),
            ]
            .concat(),
        ),
        &[Some(400), Some(431), None],
    );
    for value in [
        &b"\"18446744073709551616\""[..],
        b"\"-1\"",
        b"W/\"1\"",
        b"\xff\xfe",
        // A list that names neither version of the session (RFC 9110 lists).
        b"\"2\", \"3\"",
        b"\"\"",
        b"0x1",
    ] {
        case(
            &format!("If-Match {}", String::from_utf8_lossy(value)),
            patch_with(value),
            &[Some(400), Some(412)],
        );
    }

    // Paths and query strings: invalid UTF-8, encoded or not; malformed ids.
    for (what, target) in [
        (
            "raw non-UTF-8 in the path",
            b"/api/sessions/\xff\xfe\xfd".to_vec(),
        ),
        (
            "percent-encoded non-UTF-8 in the path",
            b"/api/sessions/%ff%fe%C3%28".to_vec(),
        ),
        ("an encoded NUL in the path", b"/api/sessions/%00".to_vec()),
        (
            "dot segments",
            b"/api/sessions/../../internal/replicate".to_vec(),
        ),
        (
            "encoded dot segments",
            b"/api/sessions/%2e%2e%2f%2e%2e%2fhealthz".to_vec(),
        ),
        (
            "a 21-character id",
            b"/api/sessions/AAAAAAAAAAAAAAAAAAAAA".to_vec(),
        ),
        (
            "a non-canonical id",
            b"/api/sessions/AAAAAAAAAAAAAAAAAAAAAB".to_vec(),
        ),
        (
            "a 10 KiB id",
            [b"/api/sessions/".to_vec(), big(10 * 1024)].concat(),
        ),
        (
            "a non-ASCII id",
            "/api/sessions/ÅÅÅÅÅÅÅÅÅÅÅ".as_bytes().to_vec(),
        ),
        ("a trailing slash", format!("{session}/").into_bytes()),
    ] {
        case(
            &format!("GET with {what}"),
            request("GET", &target, &[], b""),
            &bad,
        );
        case(
            &format!("PATCH with {what}"),
            request("PATCH", &target, &[], br#"{"probe":"overwritten"}"#),
            &[Some(400), Some(404), Some(405)],
        );
    }
    // The absolute form is valid HTTP/1.1: served like the origin form.
    case(
        "GET with an absolute URI",
        request(
            "GET",
            format!("http://evil.example{session}").as_bytes(),
            &[],
            b"",
        ),
        &[Some(200)],
    );
    for query in [
        &b"name=%ff%fe"[..],
        b"name=\xff\xfe",
        b"name=%00",
        b"name=&name=&name=",
        b"%ff=%ff",
        b"name",
        b"=",
    ] {
        case(
            &format!("login with query {}", String::from_utf8_lossy(query)),
            request(
                "GET",
                &[b"/login?".to_vec(), query.to_vec()].concat(),
                &[],
                b"",
            ),
            &[Some(200), Some(400)],
        );
    }
    case(
        "a 100 KiB name",
        request(
            "GET",
            &[b"/login?name=".to_vec(), big(100 * 1024)].concat(),
            &[],
            b"",
        ),
        &[Some(400), Some(431), None],
    );

    for addr in [public, cluster.nodes[2].addrs().public] {
        expect_each(addr, cases.clone()).await;
    }
    still_correct(&cluster, &before, "hostile request heads").await;
    let r = cluster
        .http
        .get(cluster.url(2, &session))
        .send()
        .await
        .unwrap();
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["version"], 1, "no hostile request wrote: {doc}");
    cluster.shutdown().await;
}

/// Bodies and numbers no client should send: invalid UTF-8, not objects,
/// 100 000 levels of nesting, absurd `ttl_seconds`: each a 4xx, never a 5xx or
/// a crash, and nothing written.
///
/// The nodes accept bodies up to 4 MiB here, so that the deep documents reach
/// the JSON parser instead of stopping at the size limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_numbers() {
    let cluster = Cluster::start_with(3, |config| config.max_session_bytes = 4 << 20).await;
    let before = before(&cluster).await;
    let session = format!("/api/sessions/{}", before.id);
    let login = cluster
        .http
        .get(cluster.url(1, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&login, "SESSION").unwrap().into_bytes();

    let deep = |open: &str, close: &str, levels: usize| {
        let mut s = String::with_capacity((open.len() + close.len()) * levels + 8);
        s.push('{');
        s.push_str("\"a\":");
        for _ in 0..levels {
            s.push_str(open);
        }
        s.push('1');
        for _ in 0..levels {
            s.push_str(close);
        }
        s.push('}');
        s.into_bytes()
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", b"{\"a\":\"\xff\xfe\"}".to_vec()),
        ("a lone surrogate escape", br#"{"a":"\ud800"}"#.to_vec()),
        ("a NUL byte", b"{\"a\":1}\x00".to_vec()),
        ("an array", b"[1,2,3]".to_vec()),
        ("a string", b"\"x\"".to_vec()),
        ("truncated JSON", b"{\"a\":[1,2".to_vec()),
        ("100 000 levels of [", b"[".repeat(100_000)),
        (
            "100 000 levels of [ closed",
            [b"[".repeat(100_000), b"]".repeat(100_000)].concat(),
        ),
        (
            "100 000 levels of {\"a\": inside an object",
            deep("{\"a\":", "}", 100_000),
        ),
        (
            "100 000 levels of [ inside an object",
            deep("[", "]", 100_000),
        ),
        ("1 000 000 levels of [", b"[".repeat(1_000_000)),
        (
            "a huge number",
            [
                b"{\"a\":".to_vec(),
                "9".repeat(100_000).into_bytes(),
                b"}".to_vec(),
            ]
            .concat(),
        ),
        ("a huge exponent", b"{\"a\":1e999999999}".to_vec()),
        (
            "duplicate keys, one deep",
            [
                b"{\"a\":1,\"a\":".to_vec(),
                b"[".repeat(50_000),
                b"]".repeat(50_000),
                b"}".to_vec(),
            ]
            .concat(),
        ),
    ];
    let mut cases = Vec::new();
    for (what, body) in &bodies {
        for (method, target, headers) in [
            ("PUT", session.as_bytes().to_vec(), vec![]),
            ("PATCH", session.as_bytes().to_vec(), vec![]),
            ("POST", b"/api/sessions".to_vec(), vec![]),
            (
                "PATCH",
                b"/api/session".to_vec(),
                vec![("cookie", cookie.as_slice())],
            ),
            ("PUT", b"/api/session".to_vec(), vec![]),
        ] {
            cases.push((
                format!("{method} {} with {what}", String::from_utf8_lossy(&target)),
                request(method, &target, &headers, body),
                // 413 too: a request body limit may stop them before the parser.
                vec![Some(400), Some(413)],
            ));
        }
    }
    cases.push((
        "POST /login with a non-UTF-8 form".to_owned(),
        request(
            "POST",
            b"/login",
            &[("content-type", b"application/x-www-form-urlencoded")],
            b"name=\xff\xfe%ff",
        ),
        vec![Some(303), Some(400)],
    ));
    cases.push((
        "a body longer than its Content-Length says".to_owned(),
        [
            request("POST", b"/api/sessions", &[], b"{}"),
            b"{\"more\":1}".repeat(100),
        ]
        .concat(),
        vec![Some(201)],
    ));
    for ttl in [
        "0",
        "-1",
        "2592001",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999",
        "1e9",
        "1.5",
        "NaN",
        "%ff",
        "1&ttl_seconds=2",
        "",
        "0x10",
    ] {
        cases.push((
            format!("POST /api/sessions?ttl_seconds={ttl}"),
            request(
                "POST",
                format!("/api/sessions?ttl_seconds={ttl}").as_bytes(),
                &[],
                b"{}",
            ),
            vec![Some(400)],
        ));
    }
    for addr in [
        cluster.nodes[0].addrs().public,
        cluster.nodes[1].addrs().public,
    ] {
        expect_each(addr, cases.clone()).await;
    }
    still_correct(&cluster, &before, "hostile bodies and numbers").await;
    let doc: Value = cluster
        .http
        .get(cluster.url(2, &session))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["version"], 1, "no hostile body wrote: {doc}");
    cluster.shutdown().await;
}

/// The internal listener: unsigned garbage gets 401; batches signed with the
/// cluster secret (a buggy or compromised peer) carrying garbage, deep data and
/// absurd numbers get 400 or are merged, and never bring a node down. The
/// nodes then serve, edit and hand off whatever they accepted: a fourth node
/// joins and the probe session reads back through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_replication_batches() {
    let mut cluster = Cluster::start(3).await;
    let before = before(&cluster).await;
    let signer = Signer::new(cluster.secrets.cluster.clone());
    let internal = cluster.nodes[0].addrs().internal;
    let replicate = sessionmesh::testing::replication::client::REPLICATE_PATH;
    let signed = |method: &str, path: &str, body: &[u8]| {
        let header = signer.sign("node2", method, path, body);
        let digest = auth::body_digest(body);
        request(
            method,
            path.as_bytes(),
            &[
                (auth::HEADER, header.as_bytes()),
                (auth::DIGEST_HEADER, digest.as_bytes()),
                ("content-type", b"application/json"),
            ],
            body,
        )
    };
    let mut rng = rng("hostile_replication_batches");
    let fresh_id = |rng: &mut StdRng| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rng.random::<[u8; 16]>())
    };
    let now = sessionmesh::testing::session::now_millis();
    let record = |id: &str, version: u64, expires_at: u64, ttl_ms: u64, data: Option<&str>| {
        let mut r = format!(
            r#"{{"id":"{id}","version":{version},"updated_at":{now},"created_at":{now},"expires_at":{expires_at},"ttl_ms":{ttl_ms}"#
        );
        if let Some(data) = data {
            r.push_str(r#","data":"#);
            r.push_str(data);
        }
        r.push('}');
        r
    };
    let batch = |records: &[String]| {
        format!(r#"{{"from":"node2","records":[{}]}}"#, records.join(",")).into_bytes()
    };

    let deep_data = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let absurd_ids: Vec<String> = (0..6).map(|_| fresh_id(&mut rng)).collect();
    let absurd = [
        record(
            &absurd_ids[0],
            u64::MAX,
            u64::MAX,
            u64::MAX,
            Some(r#"{"x":1}"#),
        ),
        record(&absurd_ids[1], 1, u64::MAX, 0, Some(r#"{"x":1}"#)),
        record(&absurd_ids[2], u64::MAX, now + 60_000, 60_000, None),
        record(
            &absurd_ids[3],
            1,
            now + 60_000,
            u64::MAX,
            Some(r#"{"x":1}"#),
        ),
        record(&absurd_ids[4], 0, now + 60_000, 0, Some(&deep_data)),
        record(
            &absurd_ids[5],
            1,
            253_402_300_800_000,
            60_000,
            Some(r#"{"x":1}"#),
        ),
    ];
    let mut cases: Vec<(String, Vec<u8>, Vec<Option<u16>>)> = vec![
        (
            "unsigned garbage".into(),
            request("POST", replicate.as_bytes(), &[], &random_bytes(&mut rng, 4096)),
            vec![Some(401)],
        ),
        (
            "a forged signature".into(),
            request(
                "POST",
                replicate.as_bytes(),
                &[(auth::HEADER, b"v1.1.node2.AAAA")],
                &batch(&[record(&fresh_id(&mut rng), 1, now + 60_000, 60_000, Some("{}"))]),
            ),
            vec![Some(401)],
        ),
        (
            "a non-UTF-8 signature".into(),
            request("POST", replicate.as_bytes(), &[(auth::HEADER, b"v1.\xff\xfe")], b"{}"),
            vec![Some(401)],
        ),
        ("signed random bytes".into(), signed("POST", replicate, &random_bytes(&mut rng, 4096)), vec![Some(400)]),
        ("signed 100 000 levels of [".into(), signed("POST", replicate, &b"[".repeat(100_000)), vec![Some(400)]),
        (
            "signed records of the wrong types".into(),
            signed("POST", replicate, br#"{"from":1,"records":[{"id":[],"version":"x"}]}"#),
            vec![Some(400)],
        ),
        (
            "signed records with negative and fractional numbers".into(),
            signed("POST", replicate, &batch(&[r#"{"id":"x","version":-1,"updated_at":1.5,"created_at":0,"expires_at":0,"ttl_ms":0}"#.to_owned()])),
            vec![Some(400)],
        ),
        (
            "signed 20 000 records with malformed ids".into(),
            signed("POST", replicate, &batch(&(0..20_000).map(|i| record(&format!("bad{i}"), 1, now + 60_000, 60_000, Some("{}"))).collect::<Vec<_>>())),
            vec![Some(200)],
        ),
        (
            "signed records whose data is not an object".into(),
            signed("POST", replicate, &batch(&["1", "[1]", "\"x\"", "null", "true"].map(|d| record(&fresh_id(&mut rng), 1, now + 60_000, 60_000, Some(d))))),
            vec![Some(200)],
        ),
        (
            "signed records with absurd numbers and 100 000 levels of data".into(),
            signed("POST", replicate, &batch(&absurd)),
            vec![Some(200)],
        ),
        (
            "a signed copy request with a malformed id".into(),
            signed("GET", "/internal/sessions/%ff%fe", b""),
            vec![Some(404), Some(400)],
        ),
    ];
    for id in &absurd_ids {
        let path = format!("/internal/sessions/{id}");
        cases.push((
            format!("a signed copy request for {id}"),
            signed("GET", &path, b""),
            vec![Some(200), Some(404)],
        ));
        let fwd = format!("/fwd/api/sessions/{id}");
        cases.push((
            format!("a signed forwarded read of {id}"),
            signed("GET", &fwd, b""),
            vec![Some(200), Some(404)],
        ));
    }
    expect_each(internal, cases).await;

    // Whatever was merged is served, edited and deleted through the public API
    // (4xx allowed, no 5xx), then handed off to a joining node.
    let mut answers = Vec::new();
    for id in &absurd_ids {
        for i in 0..3 {
            let url = cluster.url(i, &format!("/api/sessions/{id}"));
            let get = cluster.http.get(&url).send().await.unwrap().status();
            let patch = cluster
                .http
                .patch(&url)
                .json(&json!({"counter": 1}))
                .send()
                .await
                .unwrap()
                .status();
            answers.push((id.clone(), i, get, patch));
        }
    }
    eprintln!("absurd records through the public API: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|(_, _, g, p)| !g.is_server_error() && !p.is_server_error()),
        "a 5xx for an absurd record: {answers:?}"
    );
    still_correct(&cluster, &before, "hostile replication batches").await;

    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    let config = common::test_config("node4", &cluster.secrets, seeds);
    cluster
        .nodes
        .push(common::start(config).await.expect("node4 starts"));
    cluster.wait_converged(4).await;
    let r = cluster
        .http
        .get(cluster.url(3, &format!("/api/sessions/{}", before.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the probe through the new node");
    for id in &absurd_ids {
        let r = cluster
            .http
            .delete(cluster.url(3, &format!("/api/sessions/{id}")))
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_server_error(), "delete {id}: {}", r.status());
    }
    cluster.shutdown().await;
}

/// Waits until every node of `cluster` has gossiped `rounds` more times.
async fn gossip_rounds(cluster: &Cluster, rounds: u64) {
    let mut start = Vec::new();
    for node in &cluster.nodes {
        start.push(node.node().membership().heartbeat().await);
    }
    common::wait_for(
        &format!("{rounds} more gossip rounds on every node"),
        Duration::from_secs(30),
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
