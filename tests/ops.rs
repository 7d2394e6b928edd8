//! What operators use: `/metrics`, the cluster overview, whereis, the signed
//! leave request, and the CLI subcommands (`status`, `whereis`, `leave`,
//! `local-cluster`) run as the real binary.

mod common;

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

/// Concurrent overview requests share one gathering: thirty at once on one
/// node ask each peer once, not thirty times (before, each request that found
/// no fresh cache gathered on its own); counted in
/// `sessionmesh_dashboard_gathers_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overview_requests_share_one_gathering() {
    let cluster = Cluster::start(3).await;
    let gathers = || cluster.nodes[1].node().metrics().dashboard_gathers.get();
    let before = gathers();
    let url = cluster.url(1, "/api/cluster/overview");
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..30).map(|_| {
        let request = cluster.http.get(&url).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    }))
    .await;
    let took = started.elapsed();
    assert!(answers
        .iter()
        .all(|a| a["nodes"].as_array().map(Vec::len) == Some(3)));
    // The overview is reused for 500 ms after it was gathered: a burst that
    // took longer could honestly need a second gathering.
    assert!(took < Duration::from_millis(500), "the burst took {took:?}");
    assert_eq!(
        gathers() - before,
        1,
        "gatherings for 30 concurrent requests"
    );
    let text = metrics(&cluster, 1).await;
    assert!(
        text.contains("sessionmesh_dashboard_gathers_total "),
        "{text}"
    );
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

/// `sessionmesh status` prints the members, their ring shares and sessions in
/// words an operator reads: a leaving or gone member is not counted live, counts
/// take the right plural, handoff and repair are sentences, not JSON.
///
/// 1. three nodes; one session (owner and one replica);
/// 2. status: `3 live`, `1 owned, 1 replica copy`, a row per node, no JSON;
/// 3. node3 gossips `leaving` (the first step of its leave, held here so the
///    test sees it): `2 live, 1 leaving`, its row says leaving;
/// 4. node3 finishes leaving: `2 live, 1 gone`, `node3 (left)`, no row for it;
/// 5. a node that is not there: a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_counts_live_members_in_words() {
    let mut cluster = Cluster::start(3).await;
    let created = cluster
        .http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let node = cluster.url(0, "");
    let status_where = |wanted: &'static [&'static str]| {
        let node = node.clone();
        async move {
            // Every node answers the overview (on a loaded machine a peer may
            // miss one round; a later run has them all).
            wait_for(&format!("a status saying {wanted:?}"), WAIT, || async {
                let (ok, stdout, stderr) = run_cli(&["status", "--node", &node], &[]).await;
                assert!(ok, "{stderr}");
                wanted.iter().all(|w| stdout.contains(w)).then_some(stdout)
            })
            .await
        }
    };
    let words_not_json = |stdout: &str| {
        for bad in [
            "{",
            "\"",
            "1 sessions",
            "1 replica copies",
            "1 members",
            "1 nodes",
        ] {
            assert!(!stdout.contains(bad), "{bad:?} in:\n{stdout}");
        }
    };

    let stdout = status_where(&[
        "every node agrees",
        "members   3 live\n",
        "sessions  1 owned, 1 replica copy;",
    ])
    .await;
    words_not_json(&stdout);
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
    let handoff = stdout
        .lines()
        .skip_while(|l| *l != "handoff and repair")
        .skip(1)
        .filter(|l| l.contains("no repairs pending"))
        .count();
    assert_eq!(handoff, 3, "a handoff and repair line per node:\n{stdout}");

    // The first step of a leave: node3 gossips `leaving`.
    cluster.nodes[2]
        .node()
        .membership()
        .set_status(sessionmesh::testing::membership::Status::Leaving)
        .await;
    let stdout = status_where(&["members   2 live, 1 leaving\n"]).await;
    words_not_json(&stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("node3"))
        .unwrap_or_else(|| panic!("a row for node3: {stdout}"));
    assert!(row.contains("leaving"), "{row}");

    // The rest of it: node3 stops.
    let node3 = cluster.nodes.pop().unwrap();
    node3.shutdown().await;
    let stdout = status_where(&["members   2 live, 1 gone\n", "node3 (left)"]).await;
    words_not_json(&stdout);
    assert!(
        !stdout.lines().any(|l| l.starts_with("node3")),
        "no row for a member that is gone:\n{stdout}"
    );

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

/// `sessionmesh local-cluster --nodes 3`: three nodes on loopback; the summary
/// (URLs, dashboard, commands) comes after the nodes' start-up lines, every log
/// line names its node, no colour off a terminal; the printed commands work as
/// printed from a shell where `sessionmesh` is not on the PATH: `status`, and
/// `leave` stops one node alone; SIGINT stops the rest and the command exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_runs_three_nodes_until_ctrl_c() {
    // stdout and stderr into one file, in the order written, as on a terminal.
    let path = std::env::temp_dir().join(format!(
        "sessionmesh-local-cluster-test-{}.log",
        std::process::id()
    ));
    let file = std::fs::File::create(&path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .args([
            "local-cluster",
            "--nodes",
            "3",
            "--gossip-interval",
            "100ms",
        ])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    let output = wait_for("the local-cluster summary", WAIT, || {
        let output = read();
        async move {
            output
                .contains("Ctrl-C stops every node.")
                .then_some(output)
        }
    })
    .await;
    assert!(!output.contains('\x1b'), "colour in a file:\n{output:?}");
    let lines: Vec<&str> = output.lines().collect();
    let dashboard_at = lines
        .iter()
        .position(|l| l.trim().starts_with("dashboard"))
        .unwrap_or_else(|| panic!("a dashboard line:\n{output}"));
    let dashboard = lines[dashboard_at]
        .trim()
        .trim_start_matches("dashboard")
        .trim()
        .to_owned();
    assert!(dashboard.ends_with("/dashboard"), "{dashboard}");
    let base = dashboard.trim_end_matches("/dashboard").to_owned();

    // Log lines: `HH:MM:SS.mmm LEVEL node ...`; each names its node.
    let is_log = |l: &&str| {
        [" INFO ", " WARN ", " ERROR ", " DEBUG "]
            .iter()
            .any(|level| l.contains(level))
    };
    let logs: Vec<&str> = lines.iter().copied().filter(is_log).collect();
    assert!(!logs.is_empty(), "{output}");
    for line in &logs {
        let node = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            ["node1", "node2", "node3"].contains(&node),
            "a log line without its node: {line}\n{output}"
        );
    }
    // Each node's start-up lines come before the summary.
    for node in ["node1", "node2", "node3"] {
        let ready = lines
            .iter()
            .position(|l| l.contains(&format!(" {node} ")) && l.contains("node ready"))
            .unwrap_or_else(|| panic!("a `node ready` line of {node}:\n{output}"));
        assert!(
            ready < dashboard_at,
            "{node} ready after the summary:\n{output}"
        );
        let ring_of_3 = lines
            .iter()
            .position(|l| l.contains(&format!(" {node} ")) && l.contains("ring changed members=3"))
            .unwrap_or_else(|| panic!("{node} logs its ring of 3:\n{output}"));
        assert!(
            ring_of_3 < dashboard_at,
            "{node}'s ring of 3 after the summary:\n{output}"
        );
    }
    let node_urls: Vec<String> = lines[..dashboard_at]
        .iter()
        .rev()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .filter(|u| u.starts_with("http://"))
        .collect();
    assert_eq!(node_urls.len(), 3, "{output}");

    let http = common::client();
    let page = http.get(&dashboard).send().await.unwrap();
    assert_eq!(page.status(), 200);

    // The printed commands, run as printed, from a shell without sessionmesh
    // on its PATH.
    let command = |name: &str| -> String {
        let line = lines
            .iter()
            .find(|l| l.trim().starts_with(name))
            .unwrap_or_else(|| panic!("a `{name}` hint:\n{output}"));
        line.trim().trim_start_matches(name).trim().to_owned()
    };
    let shell = |command: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .args(["-c", &command])
                .env("PATH", "/usr/bin:/bin")
                .env_remove("SESSIONMESH_CLUSTER_SECRET")
                .env_remove("SESSIONMESH_CLUSTER_SECRET_FILE")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let (status, leave) = (command("status"), command("leave"));
    let out = wait_for("three live members in `status`", WAIT, || {
        let status = status.clone();
        async move {
            let out = shell(status).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && stdout.contains("members   3 live\n")).then_some(stdout)
        }
    })
    .await;
    assert!(out.contains(base.trim_start_matches("http://")), "{out}");

    let out = shell(leave.clone()).await;
    assert!(
        out.status.success(),
        "{leave}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left = String::from_utf8_lossy(&out.stdout).into_owned();
    let leaver = left
        .split("accepted: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{left}"))
        .to_owned();
    wait_for("the leaver to be gone", WAIT, || {
        let has_left = read().contains(&format!("{leaver} has left"));
        async move { has_left.then_some(()) }
    })
    .await;
    wait_for("two live members after one left", WAIT, || async {
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
    let output = read();
    let _ = std::fs::remove_file(&path);
    assert!(exit.success(), "{exit:?}\n{output}");
    assert!(output.contains("all nodes stopped"), "{output}");
}
