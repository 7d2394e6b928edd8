//! What operators use: `/metrics`, the cluster overview, whereis, the signed
//! leave request, and the CLI subcommands (`status`, `whereis`, `leave`,
//! `local-cluster`) run as the real binary.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_for, ChildNode, Cluster, WAIT};
use serde_json::{json, Value};
use sessionmesh::testing::auth::{Signer, HEADER};

async fn get_json(url: &str) -> Value {
    common::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(cluster: &Cluster, i: usize) -> String {
    let response = common::client()
        .get(cluster.url(i, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = common::header(&response, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the sample line that starts with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `/metrics` counts requests under their route pattern and counts forwards.
///
/// 1. two nodes; create a session on node1; read it through node2 (a forward)
///    and ask node2 for an unknown route;
/// 2. node2's metrics: the read under `route="/api/sessions/{id}"` (never the raw
///    id), the 404 under `unmatched`, one successful forward with its latency;
/// 3. node1's metrics: the read served to node2 over a peer link, one owned
///    session, two ready members, a ring of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_routes_forwards_sessions_and_members() {
    let cluster = Cluster::start(2).await;
    let http = &cluster.http;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap();
    assert_eq!(doc["owner"], cluster.id(0));
    let read = http
        .get(cluster.url(1, &format!("/api/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(common::header(&read, "x-entry-node"), Some(cluster.id(1)));
    let _ = read.bytes().await;
    let missing = http
        .get(cluster.url(1, "/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let text = metrics(&cluster, 1).await;
    assert_eq!(
        sample(
            &text,
            r#"sessionmesh_http_requests_total{listener="public",method="GET",route="/api/sessions/{id}",status="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"sessionmesh_http_requests_total{listener="public",method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains(id), "raw ids never become labels");
    assert_eq!(
        sample(&text, r#"sessionmesh_forwards_total{outcome="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sessionmesh_forward_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"sessionmesh_members{status="ready"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&text, "sessionmesh_ring_members"), Some(2.0));

    let text = metrics(&cluster, 0).await;
    assert_eq!(
        sample(&text, "sessionmesh_link_ops_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"sessionmesh_sessions{role="owned"}"#),
        Some(1.0)
    );
    assert!(sample(&text, "sessionmesh_ring_changes_total").unwrap_or(0.0) >= 1.0);
    for family in [
        "sessionmesh_replication_writes_total",
        "sessionmesh_handoff_sessions_sent_total",
        "sessionmesh_handoff_pending_sessions",
        "sessionmesh_repair_sessions_total",
        "sessionmesh_takeover_sessions_total",
    ] {
        assert!(sample(&text, family).is_some(), "{family} is exported");
    }
    cluster.shutdown().await;
}

/// `/api/cluster/overview` on any node gathers every member's view (over the
/// signed internal listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_gathers_every_members_view() {
    let cluster = Cluster::start(3).await;
    let overview = get_json(&cluster.url(1, "/api/cluster/overview")).await;
    assert_eq!(overview["viewer"]["node_id"], cluster.id(1));
    let nodes = overview["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{overview:#}");
    for (i, part) in nodes.iter().enumerate() {
        assert_eq!(part["node_id"], cluster.id(i));
        assert_eq!(part["ok"], true, "{part}");
        assert_eq!(part["cluster"]["node_id"], cluster.id(i));
        assert!(part["stats"]["requests"].is_u64());
    }
    let members = overview["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["live"] == true));
    // The internal route is for peers only.
    let unsigned = cluster
        .http
        .get(cluster.internal_url(0, "/internal/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let page = cluster
        .http
        .get(cluster.url(0, "/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(common::header(&page, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/api/cluster/overview"));
    cluster.shutdown().await;
}

/// whereis answers what the session document says, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whereis_agrees_with_the_session_document() {
    let cluster = Cluster::start(3).await;
    let doc: Value = cluster
        .http
        .post(cluster.url(2, "/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap();
    for i in 0..3 {
        let answer = get_json(&cluster.url(i, &format!("/api/cluster/whereis/{id}"))).await;
        assert_eq!(answer["owner"]["node_id"], doc["owner"], "{answer}");
        let replicas: Vec<&Value> = answer["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["node_id"])
            .collect();
        let expected: Vec<&Value> = doc["replicas"].as_array().unwrap().iter().collect();
        assert_eq!(replicas, expected);
    }
    // A cookie value (`id.signature`) names the same session.
    let answer =
        get_json(&cluster.url(0, &format!("/api/cluster/whereis/{id}.c2lnbmF0dXJl"))).await;
    assert_eq!(answer["owner"]["node_id"], doc["owner"]);
    let bad = cluster
        .http
        .get(cluster.url(0, "/api/cluster/whereis/not-an-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "bad_session_id");

    let out = run_cli(&["whereis", id, "--node", &cluster.url(0, "")], &[]).await;
    assert!(out.0, "{out:?}");
    let owner_line = format!("owner    {}", doc["owner"].as_str().unwrap());
    assert!(out.1.contains(&owner_line), "{}", out.1);
    cluster.shutdown().await;
}

/// `POST /api/admin/leave` needs a signature made with the cluster secret, for
/// this very node; then the node is asked to leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_needs_a_signature_for_this_node() {
    let cluster = Cluster::start(2).await;
    let node = cluster.id(0);
    let path = format!("/api/admin/leave?node={node}");
    let post = |signature: Option<String>, path: String| {
        let mut request = cluster.http.post(cluster.url(0, &path));
        if let Some(signature) = signature {
            request = request.header(HEADER, signature);
        }
        async move { request.send().await.unwrap() }
    };
    let good = Signer::new(cluster.secrets.cluster.clone());
    let wrong = Signer::new(sessionmesh::config::Secret::new(
        "another-secret-another-secret",
    ));
    assert_eq!(post(None, path.clone()).await.status(), 401);
    assert_eq!(
        post(Some(wrong.sign("x", "POST", &path, b"")), path.clone())
            .await
            .status(),
        401
    );
    let other = format!("/api/admin/leave?node={}", cluster.id(1));
    let response = post(Some(good.sign("x", "POST", &other, b"")), other).await;
    assert_eq!(
        response.status(),
        409,
        "a request for node2 does not make node1 leave"
    );
    // A signature covers the path and query it was made for.
    assert_eq!(
        post(
            Some(good.sign("x", "POST", &other_path(), b"")),
            path.clone()
        )
        .await
        .status(),
        401
    );
    let get = cluster
        .http
        .get(cluster.url(0, "/api/admin/leave"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);

    let response = post(Some(good.sign("x", "POST", &path, b"")), path).await;
    assert_eq!(response.status(), 202);
    tokio::time::timeout(WAIT, cluster.nodes[0].node().leave_requested())
        .await
        .expect("the node is asked to leave");
    cluster.shutdown().await;
}

fn other_path() -> String {
    "/api/admin/leave?node=somebody-else".to_owned()
}

/// Runs the binary with `args` (and extra environment); returns (success, stdout, stderr).
async fn run_cli(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
            .args(&args)
            .env_remove("SESSIONMESH_CLUSTER_SECRET")
            .env_remove("SESSIONMESH_CLUSTER_SECRET_FILE")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `sessionmesh status` prints the members, their ring shares and sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_prints_the_cluster_as_a_table() {
    let cluster = Cluster::start(3).await;
    for i in 0..3 {
        cluster
            .http
            .post(cluster.url(i, "/api/sessions"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    }
    let node = cluster.url(0, "");
    // Every node answers the overview (on a loaded machine a peer may miss one
    // round; the command then says so, and a later run has them all).
    let stdout = wait_for("a status where every node answered", WAIT, || async {
        let (ok, stdout, stderr) = run_cli(&["status", "--node", &node], &[]).await;
        assert!(ok, "{stderr}");
        stdout.contains("every node agrees").then_some(stdout)
    })
    .await;
    assert!(
        stdout.contains("3 live members, 3 sessions owned"),
        "{stdout}"
    );
    for i in 0..3 {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&cluster.id(i)))
            .unwrap_or_else(|| panic!("a row for {}: {stdout}", cluster.id(i)));
        assert!(row.contains("ready") && row.contains('%'), "{row}");
        assert!(
            row.contains(&cluster.nodes[i].addrs().public.to_string()),
            "{row}"
        );
    }
    let (ok, _, stderr) = run_cli(&["status", "--node", "127.0.0.1:1"], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    cluster.shutdown().await;
}

/// `sessionmesh leave` drains a running node: it leaves the rings, the process
/// exits 0, and the command follows it to the end.
///
/// 1. two in-process nodes and the binary seeded with them;
/// 2. `sessionmesh leave` without the secret refuses (exit 2), with a wrong one
///    is refused by the node;
/// 3. with the cluster secret: "accepted", then "has left"; the child exits 0
///    and both peers drop it from their rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_leave_drains_a_node_until_it_exits() {
    let cluster = Cluster::start(2).await;
    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    let mut child = ChildNode::spawn("leaver", &cluster.secrets, &seeds, &[]);
    cluster.wait_converged(3).await;
    let url = child.url("");

    let (ok, _, stderr) = run_cli(&["leave", "--node", &url], &[]).await;
    assert!(!ok);
    assert!(stderr.contains("SESSIONMESH_CLUSTER_SECRET"), "{stderr}");
    let wrong = [("SESSIONMESH_CLUSTER_SECRET", "x".repeat(32))];
    let (ok, _, stderr) = run_cli(&["leave", "--node", &url], &wrong).await;
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");

    let secret = String::from_utf8(cluster.secrets.cluster.expose().to_vec()).unwrap();
    let (ok, stdout, stderr) = run_cli(
        &["leave", "--node", &url],
        &[("SESSIONMESH_CLUSTER_SECRET", secret)],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("accepted: leaver is leaving"), "{stdout}");
    assert!(
        stdout.contains("leaver no longer answers: it has left"),
        "{stdout}"
    );
    let status = child.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    cluster.wait_converged(2).await;
    cluster.shutdown().await;
}

/// `sessionmesh local-cluster --nodes 3`: three nodes on loopback, their URLs
/// and the dashboard's printed; `sessionmesh leave` stops one alone; SIGINT
/// stops the rest and the command exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_runs_three_nodes_until_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .args([
            "local-cluster",
            "--nodes",
            "3",
            "--gossip-interval",
            "100ms",
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let next_line = |seen: &mut Vec<String>| {
        let line = lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("local-cluster went quiet; it printed:\n{}", seen.join("\n"))
        });
        seen.push(line.clone());
        line
    };
    let dashboard = loop {
        let line = next_line(&mut seen);
        if let Some(url) = line.trim().strip_prefix("dashboard") {
            break url.trim().to_owned();
        }
    };
    let leave_line = loop {
        let line = next_line(&mut seen);
        if line.trim().starts_with("leave") {
            break line;
        }
    };
    let node_urls: Vec<String> = seen
        .iter()
        .filter_map(|l| l.trim().strip_prefix("node").map(|rest| rest.to_owned()))
        .filter_map(|rest| rest.split_whitespace().nth(1).map(str::to_owned))
        .filter(|u| u.starts_with("http://"))
        .collect();
    assert_eq!(node_urls.len(), 3, "{seen:?}");
    assert!(dashboard.ends_with("/dashboard"), "{dashboard}");
    let base = dashboard.trim_end_matches("/dashboard").to_owned();

    let http = common::client();
    let page = http.get(&dashboard).send().await.unwrap();
    assert_eq!(page.status(), 200);
    wait_for("three live members in the overview", WAIT, || async {
        let overview: Value = http
            .get(format!("{base}/api/cluster/overview"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let members = overview["members"].as_array()?;
        let nodes = overview["nodes"].as_array()?;
        (members.iter().filter(|m| m["live"] == true).count() == 3
            && nodes.iter().all(|n| n["ok"] == true)
            && nodes.len() == 3)
            .then_some(())
    })
    .await;

    // The printed leave command works on one of the nodes.
    let secret_file = leave_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("SESSIONMESH_CLUSTER_SECRET_FILE="))
        .expect("the leave hint names the secret file")
        .to_owned();
    let last = node_urls[2].trim_end_matches('/').to_owned();
    let (ok, stdout, stderr) = run_cli(
        &["leave", "--node", &last],
        &[("SESSIONMESH_CLUSTER_SECRET_FILE", secret_file)],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    loop {
        if next_line(&mut seen).contains("node3 has left") {
            break;
        }
    }
    wait_for("two live members after node3 left", WAIT, || async {
        let overview: Value = http
            .get(format!("{base}/api/cluster/overview"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let ready = overview["members"]
            .as_array()?
            .iter()
            .filter(|m| m["live"] == true && m["status"] == "ready")
            .count();
        (ready == 2).then_some(())
    })
    .await;

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_for("local-cluster to exit", WAIT, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(exit.success(), "{exit:?}\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("all nodes stopped")),
        "{seen:?}"
    );
}
