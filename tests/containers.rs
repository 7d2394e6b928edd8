//! The sessionmesh image on real containers: a cluster of `docker run` nodes on a
//! user-defined Docker network, driven through published ports on 127.0.0.1 with
//! real HTTP traffic, then cut off, killed, stopped and restarted with the `docker`
//! CLI. One more test brings up the top-level `compose.yaml`.
//!
//! Needs a Docker engine. Without one every test here prints why it is skipped and
//! passes, unless `CONTAINER_TESTS_REQUIRED=1` (CI sets it), which turns the skip into
//! a failure. The image is `CONTAINER_TESTS_IMAGE` when set, else the tests run
//! `scripts/build-image.sh` once (fast when nothing changed) and use `sessionmesh:latest`.
//!
//! Every run names its containers and networks `smt-<run id>-...` and labels them, so
//! concurrent runs never collide; a drop guard removes them, also when a test fails.
//! Every wait is "until a condition holds, or fail after a timeout". The measured
//! times are printed as `figure:` lines, past the output capture.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use common::{client, header, set_cookie, wait_for};
use serde_json::{json, Value};

/// Bound on a node, or a cluster, turning ready; on a ring noticing a change.
const SLOW: Duration = Duration::from_secs(60);
/// `docker stop -t`: longer than the nodes' shutdown_grace (10 s) and leave rounds.
const STOP_GRACE_SECS: u64 = 30;
/// How long every session may take to read back right after a ring change (a
/// takeover or handoff in progress); a lost session never does.
const READ_WINDOW: Duration = Duration::from_secs(15);
/// Marks a request sent to no node: no node is restarting.
const NONE: usize = usize::MAX;

/// Prints a line past the test harness's output capture, so that skips and
/// measured figures show in a plain `cargo test` run (and in CI's log).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// ---------------------------------------------------------------------------
// The docker CLI

/// Runs `docker <args>`; the trimmed stdout, or a message with stderr.
async fn docker(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn docker_ok(args: &[&str]) -> String {
    docker(args).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `Some(reason)` when these tests cannot run here.
fn engine_missing() -> Option<String> {
    match std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("the docker CLI cannot run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// The image under test, built once per test binary; `None` when skipping.
fn image() -> Option<String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    let result = IMAGE.get_or_init(|| {
        if let Some(reason) = engine_missing() {
            return Err(reason);
        }
        if let Ok(image) = std::env::var("CONTAINER_TESTS_IMAGE") {
            return Ok(image);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-image.sh");
        let started = Instant::now();
        let status = std::process::Command::new("bash")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .status()
            .expect("bash runs scripts/build-image.sh");
        assert!(status.success(), "scripts/build-image.sh failed: {status}");
        say!(
            "figure: scripts/build-image.sh took {:?} in this test run",
            started.elapsed()
        );
        Ok("sessionmesh:latest".to_owned())
    });
    match result {
        Ok(image) => Some(image.clone()),
        Err(reason) => {
            let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "CONTAINER_TESTS_REQUIRED=1 but the container tests cannot run: {reason}"
            );
            say!(
                "SKIPPED container test: {reason} (set CONTAINER_TESTS_REQUIRED=1 to fail instead)"
            );
            None
        }
    }
}

/// A unique name stem for one test: `smt-<pid>-<nanos>-<test>`.
fn run_id(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("smt-{}-{nanos:x}-{test}", std::process::id())
}

/// Removes every container and network labelled with the run id when dropped, so a
/// failing assertion leaves nothing behind.
struct Cleanup {
    run: String,
    compose: Option<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        if let Some(compose) = &self.compose {
            let (program, args) = compose.split_first().expect("a compose command");
            let _ = std::process::Command::new(program)
                .args(args)
                .args(["down", "--volumes", "--timeout", "5"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let label = format!("label=io.sessionmesh.test={}", self.run);
        let ids = quiet(&["ps", "-aq", "--filter", &label]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            quiet(&args);
        }
        let nets = quiet(&["network", "ls", "-q", "--filter", &label]);
        for net in nets.split_whitespace() {
            quiet(&["network", "rm", net]);
        }
    }
}

/// The cluster view at `url` (`.../api/cluster`), if the node answers 200.
async fn cluster_view(http: &reqwest::Client, url: &str) -> Option<Value> {
    let response = http.get(url).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Whether a cluster view is of a ready node whose ring has `n` members.
fn ready_with_ring_of(view: &Value, n: usize) -> bool {
    view["status"] == "ready" && view["ring"]["nodes"].as_array().map(Vec::len) == Some(n)
}

// ---------------------------------------------------------------------------
// A cluster of containers

struct Node {
    /// node_id, host name and network alias: `node1`, ...
    name: String,
    container: String,
    /// Host port published for the public listener on 127.0.0.1.
    port: u16,
}

struct DockerCluster {
    image: String,
    network: String,
    run: String,
    secrets: [String; 2],
    extra_env: Vec<(String, String)>,
    nodes: Vec<Node>,
    http: reqwest::Client,
    _cleanup: Cleanup,
}

fn random_hex() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl DockerCluster {
    /// Starts `n` containers (`node1`..) seeded with each other's names on a new
    /// network, and waits until every one is ready with a ring of all `n`.
    async fn start(test: &str, image: String, n: usize, extra_env: &[(&str, &str)]) -> Self {
        let mut cluster = DockerCluster::new(test, image, n, extra_env).await;
        let started = Instant::now();
        for i in 0..n {
            let seeds = cluster.seeds();
            cluster.run_node(i, &seeds).await;
        }
        let all = cluster.names();
        let everyone: Vec<usize> = (0..n).collect();
        cluster.wait_ring(&everyone, &all, SLOW).await;
        say!(
            "figure: {n} containers from the first `docker run` to every node ready with a ring of {n}: {:?}",
            started.elapsed()
        );
        cluster
    }

    /// A new network for `n` nodes, none started yet.
    async fn new(test: &str, image: String, n: usize, extra_env: &[(&str, &str)]) -> Self {
        let run = run_id(test);
        let cleanup = Cleanup {
            run: run.clone(),
            compose: None,
        };
        let network = format!("{run}-net");
        let label = format!("io.sessionmesh.test={run}");
        docker_ok(&["network", "create", "--label", &label, &network]).await;
        let nodes = (1..=n)
            .map(|i| Node {
                name: format!("node{i}"),
                container: format!("{run}-node{i}"),
                port: 0,
            })
            .collect();
        DockerCluster {
            image,
            network,
            run,
            secrets: [random_hex(), random_hex()],
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nodes,
            http: client(),
            _cleanup: cleanup,
        }
    }

    fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}:7280", n.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `docker run` of node `i` seeded with `seeds`, then the host port Docker chose.
    async fn run_node(&mut self, i: usize, seeds: &str) {
        let label = format!("io.sessionmesh.test={}", self.run);
        let mut env = vec![
            ("SESSIONMESH_CLUSTER_ID".to_owned(), self.run.clone()),
            ("SESSIONMESH_SEEDS".to_owned(), seeds.to_owned()),
            (
                "SESSIONMESH_COOKIE_SECRET".to_owned(),
                self.secrets[0].clone(),
            ),
            (
                "SESSIONMESH_CLUSTER_SECRET".to_owned(),
                self.secrets[1].clone(),
            ),
        ];
        env.extend(self.extra_env.iter().cloned());
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let node = &self.nodes[i];
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &node.container,
            "--hostname",
            &node.name,
            "--network",
            &self.network,
            "--network-alias",
            &node.name,
            "--label",
            &label,
            "-p",
            "127.0.0.1::8080",
        ];
        for kv in &env {
            args.extend(["-e", kv.as_str()]);
        }
        args.push(&self.image);
        docker_ok(&args).await;
        self.refresh_port(i).await;
    }

    /// Reads the host port published for node `i`'s public listener (it changes
    /// when the container restarts).
    async fn refresh_port(&mut self, i: usize) {
        let container = self.nodes[i].container.clone();
        let port = wait_for(
            &format!("a published port for {container}"),
            SLOW,
            || async {
                let out = docker(&["port", &container, "8080/tcp"]).await.ok()?;
                out.lines()
                    .find_map(|l| l.strip_prefix("127.0.0.1:"))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            },
        )
        .await;
        self.nodes[i].port = port;
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nodes[i].port)
    }

    /// `GET /api/cluster` of node `i`, if it answers.
    async fn view(&self, i: usize) -> Option<Value> {
        cluster_view(&self.http, &self.url(i, "/api/cluster")).await
    }

    /// Waits until every node in `observers` is ready and its ring is exactly
    /// `expected`, all with one fingerprint. Returns how long that took.
    async fn wait_ring(
        &self,
        observers: &[usize],
        expected: &[&str],
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        wait_for(
            &format!("nodes {observers:?} to be ready with the ring {want:?}"),
            timeout,
            || async {
                let mut prints = Vec::new();
                for &i in observers {
                    let ready = self.http.get(self.url(i, "/readyz")).send().await.ok()?;
                    if ready.status() != 200 {
                        return None;
                    }
                    let view = self.view(i).await?;
                    let mut ring: Vec<String> = view["ring"]["nodes"]
                        .as_array()?
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect();
                    ring.sort();
                    if ring != want {
                        return None;
                    }
                    prints.push(view["ring"]["fingerprint"].as_str()?.to_owned());
                }
                prints.windows(2).all(|w| w[0] == w[1]).then_some(())
            },
        )
        .await;
        started.elapsed()
    }

    /// Creates `count` sessions through node `via` (so node `via` owns them) with
    /// distinct data; returns id → data.
    async fn create_sessions(&self, via: usize, count: usize) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        for k in 0..count {
            let data = json!({"made_by": self.nodes[via].name, "k": k});
            let response = self
                .http
                .post(self.url(via, "/api/sessions"))
                .json(&data)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                201,
                "creating a session on node{}",
                via + 1
            );
            let doc: Value = response.json().await.unwrap();
            out.insert(doc["id"].as_str().unwrap().to_owned(), data);
        }
        out
    }

    /// The sessions that node `via` cannot serve with the expected data, with why.
    async fn unreadable(&self, i: usize, sessions: &HashMap<String, Value>) -> Vec<String> {
        let via = &self.nodes[i].name;
        let mut bad = Vec::new();
        for (id, data) in sessions {
            match self
                .http
                .get(self.url(i, &format!("/api/sessions/{id}")))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => {
                    let doc: Value = r.json().await.unwrap_or_default();
                    if doc["data"] != *data {
                        bad.push(format!("via {via}: {id}: data {} != {data}", doc["data"]));
                    }
                }
                Ok(r) => bad.push(format!("via {via}: {id}: {}", r.status())),
                Err(e) => bad.push(format!("via {via}: {id}: {e}")),
            }
        }
        bad
    }

    /// Polls until every session reads back right through every node in `vias`, or
    /// `timeout` passes: how long it took, and what still failed at the end.
    async fn readable_within(
        &self,
        vias: &[usize],
        sessions: &HashMap<String, Value>,
        timeout: Duration,
    ) -> (Duration, Vec<String>) {
        let started = Instant::now();
        loop {
            let mut missing = Vec::new();
            for &via in vias {
                missing.extend(self.unreadable(via, sessions).await);
            }
            if missing.is_empty() || started.elapsed() > timeout {
                return (started.elapsed(), missing);
            }
            // Paces the poll; the condition above decides when to stop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn logs(&self, i: usize) -> String {
        let out = tokio::process::Command::new("docker")
            .args(["logs", &self.nodes[i].container])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    async fn inspect(&self, i: usize, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.nodes[i].container]).await
    }
}

/// Logs in as `name` through `url` and returns the `SESSION=...` cookie pair.
async fn login(http: &reqwest::Client, base: &str, name: &str) -> String {
    let response = http
        .get(format!("{base}/login?name={name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie(&response, "SESSION").expect("login sets the session cookie");
    assert_eq!(response.text().await.unwrap(), "Login successful.");
    cookie
}

async fn greeting(http: &reqwest::Client, base: &str, cookie: &str) -> (String, Option<String>) {
    let response = http
        .get(format!("{base}/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served_by = header(&response, "x-served-by");
    (response.text().await.unwrap(), served_by)
}

// ---------------------------------------------------------------------------
// Scenarios

/// The image as a user meets it, and a login seen everywhere.
///
/// 1. start 3 containers on a new network, seeded by service name; wait for a ring of 3;
/// 2. the image runs as a non-root user and Docker's HEALTHCHECK reports `healthy`;
/// 3. log in as Ada through node1: node2 and node3 greet Ada (served by the owner);
/// 4. a session created through node2 by the API is readable through node1 and node3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_one_container_is_greeted_on_the_others() {
    let Some(image) = image() else { return };
    let cluster = DockerCluster::start("greet", image, 3, &[]).await;

    assert_eq!(
        cluster.inspect(0, "{{.Config.User}}").await,
        "sessionmesh:sessionmesh"
    );
    let uid = docker_ok(&["exec", &cluster.nodes[0].container, "id", "-u"]).await;
    assert_eq!(uid, "10001", "the process runs as a non-root user");
    let started = Instant::now();
    wait_for("Docker to report node1 healthy", SLOW, || async {
        let status = cluster.inspect(0, "{{.State.Health.Status}}").await;
        (status == "healthy").then_some(())
    })
    .await;
    say!(
        "figure: HEALTHCHECK healthy {:?} after the ring formed",
        started.elapsed()
    );

    let http = &cluster.http;
    let cookie = login(http, &cluster.url(0, ""), "Ada").await;
    let mut owners = Vec::new();
    for i in 0..3 {
        let (page, served_by) = greeting(http, &cluster.url(i, ""), &cookie).await;
        assert!(page.contains("Hello, Ada"), "node{} says: {page}", i + 1);
        owners.push(served_by.expect("x-served-by"));
    }
    assert!(
        owners.windows(2).all(|w| w[0] == w[1]),
        "one owner serves the session: {owners:?}"
    );

    let sessions = cluster.create_sessions(1, 5).await;
    for i in 0..3 {
        let bad = cluster.unreadable(i, &sessions).await;
        assert!(bad.is_empty(), "through node{}: {bad:?}", i + 1);
    }
}

/// A container cut off the network leaves the others' rings, its sessions stay
/// readable through the rest, and it comes back when reconnected.
///
/// 1. 3 containers; sessions created through every node (node3 owns a third);
/// 2. `docker network disconnect` node3; node1 and node2 drop it from their rings;
/// 3. every session, node3's included, is readable through node1 and node2
///    (this needs replication and takeover);
/// 4. `docker network connect` node3 back; all three rings hold three nodes again
///    and node3 serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_container_drops_out_and_rejoins() {
    let Some(image) = image() else { return };
    let mut cluster = DockerCluster::start("partition", image, 3, &[]).await;
    let mut sessions = HashMap::new();
    for i in 0..3 {
        sessions.extend(cluster.create_sessions(i, 10).await);
    }
    let node3 = cluster.nodes[2].container.clone();
    let network = cluster.network.clone();

    let cut = Instant::now();
    docker_ok(&["network", "disconnect", &network, &node3]).await;
    cluster.wait_ring(&[0, 1], &["node1", "node2"], SLOW).await;
    let detected = cut.elapsed();
    say!("figure: partition: node1 and node2 dropped node3 from their rings {detected:?} after the disconnect");

    let (took, missing) = cluster
        .readable_within(&[0, 1], &sessions, READ_WINDOW)
        .await;
    say!(
        "figure: partition: {} sessions through node1 and node2: {} reads still failing after {took:?}",
        sessions.len(),
        missing.len()
    );

    // Heal before asserting, so that the rejoin is measured whatever happened above.
    let healed = Instant::now();
    docker_ok(&["network", "connect", "--alias", "node3", &network, &node3]).await;
    cluster.refresh_port(2).await;
    cluster
        .wait_ring(&[0, 1, 2], &["node1", "node2", "node3"], SLOW)
        .await;
    say!(
        "figure: partition: node3 back in every ring {:?} after `docker network connect`",
        healed.elapsed()
    );

    assert!(
        missing.is_empty(),
        "sessions unreadable through the majority while node3 was cut off: {missing:?}"
    );
    let bad = cluster.unreadable(2, &sessions).await;
    assert!(bad.is_empty(), "through node3 after the heal: {bad:?}");
}

/// `docker kill` of one container loses no session with replication factor 2.
///
/// 1. 3 containers; sessions created through every node;
/// 2. `docker kill` node2 (SIGKILL: no leave, no handoff);
/// 3. node1 and node3 drop it from their rings;
/// 4. every session is readable through node1 and through node3 (this needs
///    replication and takeover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_container_loses_no_session() {
    let Some(image) = image() else { return };
    let cluster =
        DockerCluster::start("kill", image, 3, &[("SESSIONMESH_REPLICATION_FACTOR", "2")]).await;
    let mut sessions = HashMap::new();
    for i in 0..3 {
        sessions.extend(cluster.create_sessions(i, 10).await);
    }
    let killed = Instant::now();
    docker_ok(&["kill", &cluster.nodes[1].container]).await;
    let detected = cluster.wait_ring(&[0, 2], &["node1", "node3"], SLOW).await;
    say!("figure: kill: node1 and node3 dropped node2 from their rings {detected:?} after `docker kill`");

    let (took, missing) = cluster
        .readable_within(&[0, 2], &sessions, READ_WINDOW)
        .await;
    say!(
        "figure: kill: {} sessions through node1 and node3: {} reads still failing {took:?} after the rings changed ({:?} after the kill)",
        sessions.len(),
        missing.len(),
        killed.elapsed()
    );
    assert!(
        missing.is_empty(),
        "sessions lost to `docker kill`: {missing:?}"
    );
}

/// `docker stop` makes a node hand its sessions off and exit 0 within the grace
/// period. Replication factor 1, so that only the handoff can keep its sessions.
///
/// 1. 3 containers (replication factor 1); sessions created through every node;
/// 2. `docker stop -t 30` node2: SIGTERM to PID 1;
/// 3. it exits with status 0, well within the grace period, having logged its leave;
/// 4. node1 and node3 drop it from their rings;
/// 5. every session, node2's included, is readable through node1 and node3 (this
///    needs the handoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_container_hands_off_and_exits_cleanly() {
    let Some(image) = image() else { return };
    let cluster =
        DockerCluster::start("stop", image, 3, &[("SESSIONMESH_REPLICATION_FACTOR", "1")]).await;
    let mut sessions = HashMap::new();
    for i in 0..3 {
        sessions.extend(cluster.create_sessions(i, 10).await);
    }
    let grace = STOP_GRACE_SECS.to_string();
    let stopping = Instant::now();
    docker_ok(&["stop", "-t", &grace, &cluster.nodes[1].container]).await;
    let took = stopping.elapsed();
    say!(
        "figure: stop: `docker stop` of node2 returned after {took:?} (grace {STOP_GRACE_SECS} s)"
    );
    assert!(
        took < Duration::from_secs(STOP_GRACE_SECS),
        "the node used up its grace period: {took:?}"
    );
    assert_eq!(
        cluster.inspect(1, "{{.State.ExitCode}}").await,
        "0",
        "exit status after SIGTERM"
    );
    assert_eq!(cluster.inspect(1, "{{.State.OOMKilled}}").await, "false");
    let logs = cluster.logs(1).await;
    assert!(logs.contains("SIGTERM received"), "node2's log:\n{logs}");
    assert!(logs.contains("left the cluster"), "node2's log:\n{logs}");

    let dropped = cluster.wait_ring(&[0, 2], &["node1", "node3"], SLOW).await;
    say!(
        "figure: stop: node2 gone from the other rings {:?} after `docker stop` returned",
        dropped
    );
    let (took, missing) = cluster
        .readable_within(&[0, 2], &sessions, READ_WINDOW)
        .await;
    say!(
        "figure: stop: {} sessions through node1 and node3: {} reads still failing {took:?} after the rings changed",
        sessions.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "sessions lost to `docker stop` (no handoff?): {missing:?}"
    );
}

/// Seed names that do not resolve when a node starts are tried again within
/// seconds (chitchat alone re-resolves them once a minute).
///
/// 1. node2 and node3 start seeded only with `node1`, whose name does not resolve
///    yet: each is a cluster of one;
/// 2. node1 starts seeded only with itself;
/// 3. within 20 s all three are in one ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_that_resolve_late_are_joined_within_seconds() {
    let Some(image) = image() else { return };
    let mut cluster = DockerCluster::new("seeds", image, 3, &[]).await;
    for i in [1, 2] {
        cluster.run_node(i, "node1:7280").await;
    }
    cluster.wait_ring(&[1], &["node2"], SLOW).await;
    cluster.wait_ring(&[2], &["node3"], SLOW).await;
    let started = Instant::now();
    cluster.run_node(0, "node1:7280").await;
    let took = cluster
        .wait_ring(
            &[0, 1, 2],
            &["node1", "node2", "node3"],
            Duration::from_secs(20),
        )
        .await;
    say!(
        "figure: seeds: nodes waiting on an unresolvable seed joined it {:?} after it started",
        started.elapsed().max(took)
    );
}

/// What the traffic generator counts.
#[derive(Default)]
struct Tally {
    sent: usize,
    /// Failed requests sent to a node that was not restarting: (entry, what).
    failed: Vec<(String, String)>,
    /// Failed requests sent to the restarting node (allowed).
    failed_restarting: usize,
    /// Answers 503 with Retry-After, each sent again: (entry, error code).
    refused: Vec<String>,
}

/// A rolling restart of every node, one at a time, under continuous traffic through
/// the nodes that stay up, loses no session and fails no request.
///
/// 1. 3 containers (replication factor 2); 30 sessions created through every node;
/// 2. traffic: reads and merge-patch writes (a counter per session), round robin over
///    the nodes not being restarted, never pausing;
/// 3. for node1, node2, node3 in turn: take it out of the rotation, `docker stop` it
///    (graceful leave), `docker start` it, wait until it is back in every ring,
///    put it back in the rotation;
/// 4. afterwards every session is readable through every node with its last
///    acknowledged write, and no request through a node that stayed up failed
///    (a write forwarded to the leaving owner over a link that closed under it
///    did, 502 `owner_failed`, until links closed only once every request they
///    read was answered; `tests/replication.rs` checks that on processes). A
///    503 with Retry-After is no failure: nothing was done, and the traffic
///    sends it again, as clients do (the figures count them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_traffic_loses_no_session_and_fails_no_request() {
    rolling_restart("rolling").await;
}

async fn rolling_restart(name: &str) {
    let Some(image) = image() else { return };
    let mut cluster =
        DockerCluster::start(name, image, 3, &[("SESSIONMESH_REPLICATION_FACTOR", "2")]).await;
    let mut sessions = HashMap::new();
    for i in 0..3 {
        sessions.extend(cluster.create_sessions(i, 30).await);
    }
    let ids: Vec<String> = sessions.keys().cloned().collect();

    let ports = Arc::new(RwLock::new(
        cluster.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
    ));
    let restarting = Arc::new(AtomicUsize::new(NONE));
    let in_flight: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (ports, restarting, in_flight, stop) = (
            ports.clone(),
            restarting.clone(),
            in_flight.clone(),
            stop.clone(),
        );
        let ids = ids.clone();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        async move {
            let mut tally = Tally::default();
            // Last acknowledged counter per session.
            let mut acked: HashMap<String, u64> = HashMap::new();
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut next_entry = 0usize;
            for k in 0u64.. {
                if stop.load(Ordering::Acquire) || Instant::now() > deadline {
                    break;
                }
                pace.tick().await;
                let id = &ids[(k as usize) % ids.len()];
                // The next node in the rotation that is not restarting.
                let skip = restarting.load(Ordering::Acquire);
                let entry = (0..3)
                    .map(|j| (next_entry + j) % 3)
                    .find(|&j| j != skip)
                    .unwrap_or(0);
                next_entry = (entry + 1) % 3;
                in_flight[entry].fetch_add(1, Ordering::AcqRel);
                let port = ports.read().unwrap()[entry];
                let url = format!("http://127.0.0.1:{port}/api/sessions/{id}");
                let write = k % 2 == 1;
                // A 503 with Retry-After (an owner in transition refused the
                // request: nothing was done) is sent again, as a client does.
                let mut result;
                let mut attempts = 0;
                loop {
                    result = if write {
                        http.patch(&url).json(&json!({"n": k})).send().await
                    } else {
                        http.get(&url).send().await
                    };
                    attempts += 1;
                    let refused = matches!(&result, Ok(r) if r.status() == 503
                        && r.headers().contains_key("retry-after"));
                    if !refused || attempts == 50 {
                        break;
                    }
                    if let Ok(r) = result {
                        let body: Value = r.json().await.unwrap_or_default();
                        tally
                            .refused
                            .push(format!("node{}: {}", entry + 1, body["error"]));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                in_flight[entry].fetch_sub(1, Ordering::AcqRel);
                tally.sent += 1;
                let problem = match result {
                    Ok(r) if r.status() == 200 => {
                        let doc: Value = r.json().await.unwrap_or_default();
                        let seen = doc["data"]["n"].as_u64();
                        if write {
                            acked.insert(id.clone(), k);
                            None
                        } else {
                            match acked.get(id) {
                                Some(&want) if seen != Some(want) => Some(format!(
                                    "GET {id}: n = {seen:?}, last acknowledged {want}"
                                )),
                                _ => None,
                            }
                        }
                    }
                    Ok(r) => Some(format!(
                        "{} {id}: {}",
                        if write { "PATCH" } else { "GET" },
                        r.status()
                    )),
                    Err(e) => Some(format!("{id}: {e}")),
                };
                if let Some(problem) = problem {
                    if entry == skip {
                        tally.failed_restarting += 1;
                    } else {
                        tally.failed.push((format!("node{}", entry + 1), problem));
                    }
                }
            }
            (tally, acked)
        }
    });

    let grace = STOP_GRACE_SECS.to_string();
    let everyone = ["node1", "node2", "node3"];
    for i in 0..3 {
        let started = Instant::now();
        restarting.store(i, Ordering::Release);
        wait_for(
            "requests in flight to the restarting node to finish",
            SLOW,
            || {
                let n = in_flight[i].load(Ordering::Acquire);
                async move { (n == 0).then_some(()) }
            },
        )
        .await;
        docker_ok(&["stop", "-t", &grace, &cluster.nodes[i].container]).await;
        let stopped = started.elapsed();
        assert_eq!(cluster.inspect(i, "{{.State.ExitCode}}").await, "0");
        docker_ok(&["start", &cluster.nodes[i].container]).await;
        cluster.refresh_port(i).await;
        ports.write().unwrap()[i] = cluster.nodes[i].port;
        cluster.wait_ring(&[0, 1, 2], &everyone, SLOW).await;
        restarting.store(NONE, Ordering::Release);
        say!(
            "figure: rolling restart: node{} stopped in {stopped:?}, back in every ring {:?} after it was taken out",
            i + 1,
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Release);
    let (tally, acked) = traffic.await.unwrap();
    say!(
        "figure: rolling restart: {} requests, {} failed through nodes that stayed up, {} failed through the restarting node, {} answers 503 with Retry-After sent again {:?}",
        tally.sent,
        tally.failed.len(),
        tally.failed_restarting,
        tally.refused.len(),
        tally.refused
    );

    // What every session must hold now: its data with the last acknowledged counter.
    let expected: HashMap<String, Value> = sessions
        .iter()
        .map(|(id, data)| {
            let mut data = data.clone();
            if let Some(&n) = acked.get(id) {
                data["n"] = json!(n);
            }
            (id.clone(), data)
        })
        .collect();
    let (took, lost) = cluster
        .readable_within(&[0, 1, 2], &expected, READ_WINDOW)
        .await;
    say!("figure: rolling restart: checked every session through every node in {took:?}");
    say!(
        "figure: rolling restart: {} of {} session reads wrong afterwards",
        lost.len(),
        3 * expected.len()
    );
    let sample: Vec<_> = tally.failed.iter().take(20).collect();
    if !sample.is_empty() {
        say!("figure: rolling restart: failed requests, the first: {sample:?}");
    }
    assert!(
        lost.is_empty(),
        "sessions lost or stale after the rolling restart: {lost:?}"
    );
    assert!(
        tally.failed.is_empty(),
        "{} requests through nodes that stayed up failed; the first: {sample:?}",
        tally.failed.len()
    );
}

// ---------------------------------------------------------------------------
// The compose files, through their load balancer's one address

/// A project of one of the top-level compose files (`-p <run id>`), taken down
/// with its volumes when dropped. Every published port is left to Docker.
struct ComposeProject {
    /// `docker compose` or `docker-compose`, then `-p <project> -f <file>`.
    command: Vec<String>,
    images: [(&'static str, String); 3],
    _cleanup: Cleanup,
}

/// The image the compose files name in `variable`: `CONTAINER_TESTS_<...>` when set,
/// else what scripts/build-image.sh builds. `None` (skipped) when it is missing.
async fn compose_image(variable: &str, default: &str) -> Option<String> {
    let image =
        std::env::var(format!("CONTAINER_TESTS_{variable}")).unwrap_or_else(|_| default.to_owned());
    if docker(&["image", "inspect", "--format", "{{.Id}}", &image])
        .await
        .is_ok()
    {
        return Some(image);
    }
    let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "image {image} is missing: scripts/build-image.sh builds it"
    );
    say!("SKIPPED compose test: image {image} is missing (scripts/build-image.sh builds it)");
    None
}

impl ComposeProject {
    /// `None` (the test is skipped) without an engine, a compose CLI or the images.
    async fn new(test: &str, file: &str) -> Option<ComposeProject> {
        let image = image()?;
        let lb = compose_image("LB_IMAGE", "sessionmesh-haproxy:latest").await?;
        let app = compose_image("APP_IMAGE", "sessionmesh-example-flask:latest").await?;
        let mut command: Vec<String> = if docker(&["compose", "version"]).await.is_ok() {
            vec!["docker".into(), "compose".into()]
        } else if tokio::process::Command::new("docker-compose")
            .arg("version")
            .output()
            .await
            .is_ok_and(|o| o.status.success())
        {
            vec!["docker-compose".into()]
        } else {
            let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "neither `docker compose` nor `docker-compose` is installed"
            );
            say!(
                "SKIPPED compose test: neither `docker compose` nor `docker-compose` is installed"
            );
            return None;
        };
        let project = run_id(test);
        let file = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        command.extend(["-p".into(), project.clone(), "-f".into(), file]);
        Some(ComposeProject {
            _cleanup: Cleanup {
                run: project,
                compose: Some(command.clone()),
            },
            command,
            images: [
                ("SESSIONMESH_IMAGE", image),
                ("SESSIONMESH_LB_IMAGE", lb),
                ("SESSIONMESH_APP_IMAGE", app),
            ],
        })
    }

    /// `<compose> <args>`, with the images under test, every published port left
    /// to Docker and no secrets from the environment (the secrets service makes them).
    async fn run(&self, args: &[&str]) -> String {
        let (program, rest) = self.command.split_first().expect("a compose command");
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .args(args)
            .stdin(std::process::Stdio::null());
        for port in ["LB_PORT", "NODE1_PORT", "NODE2_PORT", "NODE3_PORT"] {
            command.env(port, "");
        }
        for (variable, image) in &self.images {
            command.env(variable, image);
        }
        command
            .env_remove("SESSIONMESH_COOKIE_SECRET")
            .env_remove("SESSIONMESH_CLUSTER_SECRET");
        let out = command.output().await.expect("the compose CLI runs");
        assert!(
            out.status.success(),
            "compose {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `up -d`; the figure of how long it took until `ready` holds.
    async fn up(&self) -> Instant {
        let started = Instant::now();
        self.run(&["up", "-d", "--no-build"]).await;
        started
    }

    /// `http://127.0.0.1:<host port>` of a service's container port 8080.
    async fn base_url(&self, service: &str) -> String {
        let text = self.run(&["port", service, "8080"]).await;
        let port: u16 = text
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("compose port {service} 8080 said {text:?}"));
        format!("http://127.0.0.1:{port}")
    }
}

/// The node a request entered at: `x-entry-node` when the answer came from
/// another node (the owner), else `x-served-by`.
fn entry_node(response: &reqwest::Response) -> String {
    header(response, "x-entry-node")
        .or_else(|| header(response, "x-served-by"))
        .expect("every answer names the node that served it")
}

/// Waits until the load balancer at `lb` sends requests to every one of `nodes`:
/// `nodes.len()` requests in a row for `path`, each a 200, enter at each node once
/// (round robin, every node in rotation).
async fn wait_in_rotation(http: &reqwest::Client, lb: &str, path: &str, nodes: &[&str]) {
    wait_for(
        &format!("the load balancer to send {path} to each of {nodes:?} in turn"),
        SLOW,
        || async {
            let mut entered = std::collections::BTreeSet::new();
            for _ in 0..nodes.len() {
                let response = http.get(format!("{lb}{path}")).send().await.ok()?;
                if response.status() != 200 {
                    return None;
                }
                entered.insert(entry_node(&response));
            }
            (entered.iter().map(String::as_str).collect::<Vec<_>>() == nodes).then_some(())
        },
    )
    .await;
}

/// The top-level compose.yaml brings up a working 3-node cluster behind one
/// address, the HAProxy load balancer, round robin with no stickiness.
///
/// 1. `docker compose up -d` (or `docker-compose`) with a unique project name and the
///    host ports left to Docker;
/// 2. all three nodes turn ready with a ring of three, and the load balancer sends
///    requests to each in turn;
/// 3. a login through the load balancer is greeted on every following request
///    through it, which enter at all three nodes;
/// 4. the node each node is published on too (for operators) greets it as well;
/// 5. the secrets service wrote one pair of secrets, readable only by the node user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_serves_the_cluster_behind_one_address() {
    let Some(project) = ComposeProject::new("compose", "compose.yaml").await else {
        return;
    };
    let started = project.up().await;
    let mut nodes = Vec::new();
    for service in ["node1", "node2", "node3"] {
        nodes.push(project.base_url(service).await);
    }
    let lb = project.base_url("lb").await;
    let http = client();
    wait_for(
        "the compose cluster to be ready with a ring of 3",
        SLOW,
        || async {
            for node in &nodes {
                let view = cluster_view(&http, &format!("{node}/api/cluster")).await?;
                if !ready_with_ring_of(&view, 3) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    wait_in_rotation(&http, &lb, "/", &["node1", "node2", "node3"]).await;
    say!(
        "figure: compose: `up -d` to a ready ring of 3 in rotation behind the load balancer in {:?}",
        started.elapsed()
    );

    let cookie = login(&http, &lb, "Grace").await;
    let mut entered = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let response = http
            .get(format!("{lb}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        entered.insert(entry_node(&response));
        let page = response.text().await.unwrap();
        assert!(
            page.contains("Hello, Grace"),
            "through the load balancer: {page}"
        );
    }
    assert_eq!(
        entered.into_iter().collect::<Vec<_>>(),
        ["node1", "node2", "node3"],
        "requests through the load balancer enter at every node"
    );
    for node in &nodes {
        let (page, _) = greeting(&http, node, &cookie).await;
        assert!(page.contains("Hello, Grace"), "{node} says: {page}");
    }
    let modes = project
        .run(&[
            "exec",
            "-T",
            "node1",
            "/bin/sh",
            "-c",
            "stat -c '%a %U' /run/sessionmesh/cookie_secret /run/sessionmesh/cluster_secret",
        ])
        .await;
    assert_eq!(
        modes.trim(),
        "400 sessionmesh\n400 sessionmesh",
        "secret files: {modes}"
    );
}

/// One `GET` through the gateway deployment's load balancer: the status, the page
/// and the node it entered at.
async fn gateway_get(
    http: &reqwest::Client,
    lb: &str,
    path: &str,
    cookie: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut request = http.get(format!("{lb}{path}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let entry = (status == 200).then(|| entry_node(&response));
    if status == 503 {
        assert!(
            response.headers().contains_key("retry-after"),
            "a 503 says when to retry"
        );
    }
    (status, response.text().await.unwrap(), entry)
}

/// compose.gateway.yaml: the Flask example next to each of three nodes, behind
/// the load balancer's one address.
///
/// 1. `up -d`; the load balancer sends requests to each node in turn;
/// 2. a guest is greeted as Guest; a login sets the session cookie and the
///    application's own cookie;
/// 3. every following request through the load balancer is greeted by name, and
///    they enter at all three nodes;
/// 4. session headers forged by the client never reach the application;
/// 5. `kill -9` of the session's owner: once the load balancer and the nodes
///    noticed (until then a request may get a 503 with Retry-After, never another
///    page), every request is greeted by name again;
/// 6. a logout through the load balancer logs out everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_compose_file_serves_the_application_behind_one_address() {
    let Some(project) = ComposeProject::new("gateway", "compose.gateway.yaml").await else {
        return;
    };
    let started = project.up().await;
    let lb = project.base_url("lb").await;
    let http = client();
    wait_in_rotation(&http, &lb, "/", &["node1", "node2", "node3"]).await;
    wait_for("every node to see a ring of 3", SLOW, || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let view = cluster_view(&http, &format!("{lb}/_sessionmesh/api/cluster")).await?;
            if !ready_with_ring_of(&view, 3) {
                return None;
            }
            seen.insert(view["node_id"].as_str()?.to_owned());
        }
        (seen.len() == 3).then_some(())
    })
    .await;
    say!(
        "figure: compose.gateway.yaml: `up -d` to 3 ready nodes in rotation in {:?}",
        started.elapsed()
    );

    // 2. A guest, then a login.
    let (status, page, _) = gateway_get(&http, &lb, "/", None).await;
    assert_eq!(status, 200);
    assert!(page.starts_with("Hello, Guest (entered at node"), "{page}");
    let response = http
        .get(format!("{lb}/login?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie(&response, "SESSION").expect("the login sets the session cookie");
    assert!(
        set_cookie(&response, "last_login").is_some(),
        "the application's own cookie passes through"
    );
    assert_eq!(response.text().await.unwrap(), "Login successful.\n");

    // 3. Greeted by name on every request, entering at every node.
    let mut entered = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let (status, page, entry) = gateway_get(&http, &lb, "/", Some(&cookie)).await;
        assert_eq!(status, 200, "{page}");
        let entry = entry.unwrap();
        assert_eq!(page, format!("Hello, Ada (entered at {entry})\n"));
        entered.insert(entry);
    }
    assert_eq!(
        entered.into_iter().collect::<Vec<_>>(),
        ["node1", "node2", "node3"]
    );

    // 4. Forged session headers, with and without the cookie.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE,
        br#"{"name":"Mallory"}"#,
    );
    for cookie in [None, Some(cookie.as_str())] {
        let mut request = http
            .get(format!("{lb}/whoami"))
            .header("x-sessionmesh-id", "forged")
            .header("x-sessionmesh-data", &forged)
            .header("x-sessionmesh-version", "99");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let whoami: Value = request.send().await.unwrap().json().await.unwrap();
        match cookie {
            None => {
                assert_eq!(whoami["id"], Value::Null, "{whoami}");
                assert_eq!(whoami["session"], json!({}), "{whoami}");
            }
            Some(_) => {
                assert_eq!(whoami["session"]["name"], "Ada", "{whoami}");
                assert_ne!(whoami["id"], "forged", "{whoami}");
                assert_ne!(whoami["version"], "99", "{whoami}");
            }
        }
    }

    // 5. kill -9 of the session's owner.
    let response = http
        .get(format!("{lb}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let owner = header(&response, "x-served-by").expect("the owner is named");
    project.run(&["kill", "-s", "SIGKILL", &owner]).await;
    let killed_at = Instant::now();
    let survivors: Vec<&str> = ["node1", "node2", "node3"]
        .into_iter()
        .filter(|n| *n != owner)
        .collect();
    wait_for(
        "every request through the load balancer to be greeted by name again",
        SLOW,
        || async {
            for _ in 0..4 {
                let (status, page, entry) = gateway_get(&http, &lb, "/", Some(&cookie)).await;
                match status {
                    200 => {
                        let entry = entry.unwrap();
                        assert!(survivors.contains(&entry.as_str()), "{entry}");
                        assert_eq!(page, format!("Hello, Ada (entered at {entry})\n"));
                    }
                    // The takeover in progress: retry later, never another page.
                    502..=504 => return None,
                    other => panic!("after the kill: {other} {page}"),
                }
            }
            Some(())
        },
    )
    .await;
    say!(
        "figure: compose.gateway.yaml: kill -9 of the owner {owner} to every request greeted again in {:?}",
        killed_at.elapsed()
    );
    for _ in 0..6 {
        let (status, page, _) = gateway_get(&http, &lb, "/", Some(&cookie)).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.starts_with("Hello, Ada (entered at"), "{page}");
    }

    // 6. A logout through the load balancer logs out everywhere.
    let response = http
        .get(format!("{lb}/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Logged out.\n");
    let mut entered = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, page, entry) = gateway_get(&http, &lb, "/", Some(&cookie)).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.starts_with("Hello, Guest (entered at"), "{page}");
        entered.insert(entry.unwrap());
    }
    assert_eq!(entered.into_iter().collect::<Vec<_>>(), survivors);
}
