//! Runs an example of `examples/` as a cluster of child processes: the built
//! example binary, one process a node, on loopback port-0 listeners.
//!
//! What an example binary must do to run here (the cart does, and
//! `scripts/run-example.sh` relies on the same): take the flags of the
//! `sessionmesh` binary ([`sessionmesh::config::ServeArgs`]); with
//! `--log-format json`, log JSON lines on stderr, among them the library's
//! "node ready" line (it names the bound addresses); have its public listener
//! bound when that line comes; serve [`sessionmesh::web::operator_routes`]
//! (the harness waits on `/api/cluster`).
//!
//! `cargo test` builds the examples, `cargo nextest run --test examples`
//! does not: [`example_binary`] runs `cargo build --example <name>` once per
//! test process (a no-op when the binary is fresh), so that a test never runs
//! a stale example.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{self, Secrets, WAIT};

/// The binary of example `name`, built for the profile and target directory
/// of this test (`target/<profile>/examples/<name>`, beside the `sessionmesh`
/// binary), with the cargo features the example requires.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .parent()
        .expect("the sessionmesh binary is in a directory");
    let binary = bin_dir.join("examples").join(name);
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if built.iter().any(|b| b == name) {
        return binary;
    }
    let target_dir = bin_dir
        .parent()
        .expect("the profile directory is in the target directory");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    // Without the variables cargo sets for the crate under test: build
    // scripts that track one (ring's tracks CARGO_MANIFEST_DIR) would
    // otherwise rebuild here, and again in the user's next cargo build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CRATE_VARIABLES.iter().any(|v| key.starts_with(v)) {
            cargo.env_remove(key.as_ref());
        }
    }
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name])
        .arg("--target-dir")
        .arg(target_dir);
    match bin_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
    }
    let features = required_features(name);
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    let output = cargo
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build example {name}: {e}"));
    assert!(
        output.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(binary.exists(), "cargo built no {}", binary.display());
    built.push(name.to_owned());
    binary
}

/// The environment variables (or their prefixes) cargo sets for a crate's
/// tests, not for cargo itself.
const CRATE_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The `required-features` of example `name` in Cargo.toml.
fn required_features(name: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let manifest: toml::Value = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .expect("Cargo.toml parses");
    let examples = manifest.get("example").and_then(|e| e.as_array());
    let example = examples
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name));
    example
        .and_then(|e| e.get("required-features"))
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// One node: a child process of the example binary and the addresses its
/// "node ready" line named. Killed when dropped; when the test panics, its
/// log is printed.
pub struct ExampleNode {
    pub node_id: String,
    pub public: std::net::SocketAddr,
    pub gossip: std::net::SocketAddr,
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads the log until the process closes its stderr.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl ExampleNode {
    /// Starts `binary` as node `node_id` of a test cluster (port 0 everywhere,
    /// fast gossip, one HTTP worker) and waits for its "node ready" line.
    pub async fn spawn(
        binary: &Path,
        node_id: &str,
        secrets: &Secrets,
        seeds: &[String],
        extra: &[String],
    ) -> ExampleNode {
        let mut command = tokio::process::Command::new(binary);
        command
            .args(["--node-id", node_id, "--cluster-id", "test"])
            .args(["--log-format", "json", "--workers", "1"])
            .args(["--public-addr", "127.0.0.1:0"])
            .args(["--internal-addr", "127.0.0.1:0"])
            .args(["--gossip-addr", "127.0.0.1:0"]);
        if !extra.iter().any(|flag| flag == "--gossip-interval") {
            command.args(["--gossip-interval", "100ms"]);
        }
        for seed in seeds {
            command.args(["--seed", seed]);
        }
        command
            .args(extra)
            .envs(secrets.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        let reader = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(event) = ready_event(&line) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(event);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let event = match tokio::time::timeout(WAIT, ready).await {
            Ok(Ok(event)) => event,
            outcome => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let why = match outcome {
                    Ok(_) => "exited before it was ready",
                    Err(_) => "was not ready in time",
                };
                panic!(
                    "{node_id} ({}) {why}; it wrote:\n{}",
                    binary.display(),
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let addr = |key: &str| {
            event[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("the node ready line has no {key} address: {event}"))
        };
        ExampleNode {
            node_id: node_id.to_owned(),
            public: addr("public"),
            gossip: addr("gossip"),
            child,
            log,
            reader: Some(reader),
        }
    }

    /// `http://<public address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("the node is running") as libc::pid_t;
        // SAFETY: kill(2) with a pid this test started and has not reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "sending signal {signal} to {}", self.node_id);
    }

    /// Waits for the process to exit, at most `timeout`, and for its log to be
    /// read to the end (its last lines may still be in the pipe when it exits).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                if let Some(reader) = self.reader.take() {
                    let _ = tokio::time::timeout(timeout, reader).await;
                }
                status
            }
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.node_id),
            Err(_) => panic!(
                "{} did not exit within {timeout:?}; it wrote:\n{}",
                self.node_id,
                self.log().join("\n")
            ),
        }
    }

    /// The lines the node logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// The JSON of a "node ready" log line.
fn ready_event(line: &str) -> Option<serde_json::Value> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    event["message"]
        .as_str()?
        .starts_with("node ready")
        .then_some(event)
}

impl Drop for ExampleNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} ---", self.node_id);
            for line in self.log() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.start_kill();
    }
}

/// A cluster of nodes of one example, talking to each other over loopback.
pub struct ExampleCluster {
    pub binary: PathBuf,
    pub secrets: Secrets,
    pub nodes: Vec<ExampleNode>,
    pub http: reqwest::Client,
    extra: Vec<String>,
}

impl ExampleCluster {
    /// Starts `n` nodes `node1..n` of example `name`, with `extra` flags on
    /// each, and waits until they agree on a ring of `n`.
    pub async fn start(name: &str, n: usize, extra: &[&str]) -> ExampleCluster {
        let owned = name.to_owned();
        let binary = tokio::task::spawn_blocking(move || example_binary(&owned))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let mut cluster = ExampleCluster {
            binary,
            secrets: Secrets::new(),
            nodes: Vec::new(),
            http: common::client(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // The first node starts alone; the others, seeded with it, at once.
        cluster.spawn("node1").await;
        let seeds = vec![cluster.nodes[0].gossip.to_string()];
        let others = (2..=n).map(|i| {
            let id = format!("node{i}");
            let (binary, secrets, seeds, extra) =
                (&cluster.binary, &cluster.secrets, &seeds, &cluster.extra);
            async move { ExampleNode::spawn(binary, &id, secrets, seeds, extra).await }
        });
        let others = futures_util::future::join_all(others).await;
        cluster.nodes.extend(others);
        cluster.wait_ring(n).await;
        cluster
    }

    /// Starts one more node, seeded with the running ones.
    pub async fn spawn(&mut self, node_id: &str) {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.gossip.to_string()).collect();
        let node =
            ExampleNode::spawn(&self.binary, node_id, &self.secrets, &seeds, &self.extra).await;
        self.nodes.push(node);
    }

    /// The running node `node_id`.
    pub fn node(&self, node_id: &str) -> &ExampleNode {
        self.nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .unwrap_or_else(|| panic!("{node_id} is not running"))
    }

    /// `url(path)` of the running node `node_id`.
    pub fn url(&self, node_id: &str, path: &str) -> String {
        self.node(node_id).url(path)
    }

    /// Takes node `node_id` out of the cluster's list (to kill or stop it).
    pub fn take(&mut self, node_id: &str) -> ExampleNode {
        let i = self
            .nodes
            .iter()
            .position(|n| n.node_id == node_id)
            .unwrap_or_else(|| panic!("{node_id} is not running"));
        self.nodes.remove(i)
    }

    /// `kill -9` of node `node_id`; returns once the process is gone.
    pub async fn kill(&mut self, node_id: &str) {
        let mut node = self.take(node_id);
        node.signal(libc::SIGKILL);
        let status = node.wait_exit(WAIT).await;
        assert!(!status.success(), "{node_id} was killed: {status}");
    }

    /// SIGTERM of node `node_id`: it must leave the cluster (and log it) and
    /// exit with status 0 within `WAIT`.
    pub async fn leave(&mut self, node_id: &str) {
        let mut leaving = self.take(node_id);
        leaving.signal(libc::SIGTERM);
        let status = leaving.wait_exit(WAIT).await;
        assert!(
            status.success(),
            "{node_id} exits cleanly after leaving: {status}"
        );
        assert!(
            leaving.log().iter().any(|l| l.contains("left the cluster")),
            "{node_id} logged its leave"
        );
    }

    /// The ids of the running nodes.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.node_id.clone()).collect()
    }

    /// `GET /api/cluster` of every running node.
    async fn views(&self) -> Option<Vec<serde_json::Value>> {
        let mut views = Vec::new();
        for node in &self.nodes {
            let response = self.http.get(node.url("/api/cluster")).send().await.ok()?;
            views.push(response.json().await.ok()?);
        }
        Some(views)
    }

    /// Waits until every running node's ring has the `n` nodes and they agree.
    pub async fn wait_ring(&self, n: usize) {
        common::wait_for(&format!("a ring of {n} on every node"), WAIT, || async {
            let views = self.views().await?;
            let fingerprint = views[0]["ring"]["fingerprint"].as_str()?;
            views
                .iter()
                .all(|v| {
                    v["ring"]["fingerprint"] == fingerprint
                        && v["ring"]["nodes"].as_array().is_some_and(|a| a.len() == n)
                })
                .then_some(())
        })
        .await
    }

    /// The node that owns the session of `cookie` (`SESSION=<value>`, or any
    /// `name=<id>` or `name=<id>.<signature>`), as node `asked`'s ring places
    /// it (`GET /api/cluster/whereis/{id}`, which takes an id or a cookie
    /// value of sessionmesh's).
    pub async fn owner(&self, asked: &str, cookie: &str) -> String {
        let value = cookie.split_once('=').map_or(cookie, |(_, v)| v);
        let url = self.url(asked, &format!("/api/cluster/whereis/{value}"));
        let response = self.http.get(&url).send().await.expect("whereis answers");
        assert_eq!(response.status(), 200, "GET {url}");
        let placement: serde_json::Value = response.json().await.expect("whereis is JSON");
        placement["owner"]["node_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no owner in {placement}"))
            .to_owned()
    }
}

impl ExampleCluster {
    /// The owner of the one session the cluster holds, by the nodes' own
    /// counts (`sessions.owned` of `GET /api/cluster`): for a session whose
    /// cookie does not show its id (actix-session's encrypted cookie). Waits
    /// until exactly one node counts one session it owns.
    pub async fn owner_of_only_session(&self) -> String {
        common::wait_for("one node owning the one session", WAIT, || async {
            let views = self.views().await?;
            let owned: Vec<u64> = views
                .iter()
                .map(|v| v["sessions"]["owned"].as_u64())
                .collect::<Option<_>>()?;
            if owned.iter().sum::<u64>() != 1 {
                return None;
            }
            let i = owned.iter().position(|&n| n == 1)?;
            Some(self.nodes[i].node_id.clone())
        })
        .await
    }
}

/// An answer of an example: status, JSON body and the node named by
/// `x-served-by`.
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub body: serde_json::Value,
    pub served_by: Option<String>,
}

impl Answer {
    /// The `error` code of a JSON error.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// A visitor's browser on a cluster: sends JSON to any node and keeps the
/// session cookie (`cookie_name`) the nodes set, and drops it when they
/// expire it. Clones share nothing: each carries its own cookie.
pub struct Browser {
    http: reqwest::Client,
    /// Node id and base URL of the cluster's nodes.
    nodes: Vec<(String, String)>,
    cookie_name: &'static str,
    cookie: Mutex<Option<String>>,
}

impl Browser {
    /// A browser without a cookie.
    pub fn new(cluster: &ExampleCluster, cookie_name: &'static str) -> Browser {
        Browser::with_cookie(cluster, cookie_name, None)
    }

    /// A browser holding `cookie` (`name=value`).
    pub fn with_cookie(
        cluster: &ExampleCluster,
        cookie_name: &'static str,
        cookie: Option<String>,
    ) -> Browser {
        Browser {
            http: cluster.http.clone(),
            nodes: cluster
                .nodes
                .iter()
                .map(|n| (n.node_id.clone(), n.url("")))
                .collect(),
            cookie_name,
            cookie: Mutex::new(cookie),
        }
    }

    fn url(&self, node: &str, path: &str) -> String {
        let (_, base) = self
            .nodes
            .iter()
            .find(|(id, _)| id == node)
            .unwrap_or_else(|| panic!("no node {node}"));
        format!("{base}{path}")
    }

    /// The `name=value` pair of the session cookie the browser holds.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// Sends `method path` with the cookie (and `body` as JSON) to `node`;
    /// the answer must be JSON.
    pub async fn call(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let url = self.url(node, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(cookie) = self.cookie() {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let expired = format!("{}=", self.cookie_name);
        match common::set_cookie(&response, self.cookie_name) {
            Some(pair) if pair == expired => *self.cookie.lock().unwrap() = None,
            Some(pair) => *self.cookie.lock().unwrap() = Some(pair),
            None => {}
        }
        let served_by = common::header(&response, "x-served-by");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {url}: not JSON ({status}): {text}"));
        Answer {
            status,
            body,
            served_by,
        }
    }

    pub async fn get(&self, node: &str, path: &str) -> Answer {
        self.call(node, reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, node: &str, path: &str, body: serde_json::Value) -> Answer {
        self.call(node, reqwest::Method::POST, path, Some(body))
            .await
    }
}
