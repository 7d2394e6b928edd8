//! The real `sessionmesh` binary as a child process: configuration errors and a
//! graceful leave on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{header, wait_for, ChildNode, Cluster, WAIT};
use serde_json::{json, Value};

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad values and unknown keys stop the program with exit code 2 and a message
/// naming the key, before anything is bound.
#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("sessionmesh-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "node_id = \"a\"\nreplication_factr = 2\n").unwrap();
    let file = file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--session-ttl", "banana"], vec![], "session_ttl"),
        (
            vec!["--replication-factor", "0"],
            vec![],
            "replication_factor",
        ),
        (vec!["--public-addr", "nowhere"], vec![], "public_addr"),
        (vec!["--config", file], vec![], "replication_factr"),
        (
            vec![],
            vec![("SESSIONMESH_GOSSIP_INTERVAL", "fast")],
            "gossip_interval",
        ),
        (
            vec![],
            vec![("SESSIONMESH_NO_SUCH_KEY", "1")],
            "SESSIONMESH_NO_SUCH_KEY",
        ),
        (
            vec!["--seed", "127.0.0.1:7999"],
            vec![],
            "_secret is required",
        ),
    ];
    for (args, env, key) in cases {
        let (code, stderr) = run_binary(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{args:?} {env:?}: message should name {key}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM makes a node leave: it gossips `leaving` (so `/readyz` turns 503 and
/// peers drop it from their rings), finishes, and exits 0 within a bounded time.
///
/// 1. start two in-process nodes and the binary seeded with them;
/// 2. wait for a ring of three everywhere; read a session through the child;
/// 3. SIGTERM the child; watch its /readyz turn 503 while it drains;
/// 4. it exits 0; both peers' rings drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_cluster_and_exits_cleanly() {
    let cluster = Cluster::start(2).await;
    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    // A longer gossip interval widens the drain window that the test watches.
    let mut child = ChildNode::spawn(
        "child",
        &cluster.secrets,
        &seeds,
        &["--gossip-interval", "300ms"],
    );
    let fingerprint = cluster.wait_converged(3).await;
    let http = common::client();
    wait_for("the child to be ready with the same ring", WAIT, || async {
        let r = http.get(child.url("/readyz")).send().await.ok()?;
        let view: Value = http
            .get(child.url("/api/cluster"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r.status() == 200 && view["ring"]["fingerprint"] == fingerprint.as_str()).then_some(())
    })
    .await;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read = http
        .get(child.url(&format!("/api/sessions/{}", doc["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "x-served-by").as_deref(), Some("node1"));
    assert_eq!(header(&read, "x-entry-node").as_deref(), Some("child"));

    let sent = Instant::now();
    child.signal("TERM");
    wait_for("the child's /readyz to turn 503", WAIT, || async {
        let r = http.get(child.url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let status = child.wait_exit(Duration::from_secs(15)).await;
    let exited = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    cluster.wait_converged(2).await;
    eprintln!(
        "SIGTERM to exit: {exited:?}; dropped from every ring after {:?}",
        sent.elapsed()
    );
    for node in &cluster.nodes {
        assert!(!node.node().view().ring.contains("child"));
    }
    cluster.shutdown().await;
}
