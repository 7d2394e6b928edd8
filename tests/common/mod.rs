//! Test harness: real nodes on loopback port-0 listeners, inside the test process,
//! and helpers that wait for a condition with a timeout instead of sleeping.
#![allow(dead_code)]

pub mod firewall;
pub mod gossip;
pub mod pki;

/// The binary's demo application (public API only), served by in-process nodes.
#[path = "../../src/bin/sessionmesh/demo.rs"]
pub mod demo;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sessionmesh::config::{Config, Secret};
use sessionmesh::testing::Node;
use sessionmesh::web::ServedNode;
use sessionmesh::Mesh;

/// The addresses a node listens on.
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub gossip: SocketAddr,
}

/// An in-process node as the binary runs one: its mesh and public server
/// with the demo application.
pub struct NodeHandle(ServedNode);

/// Starts a node serving the demo application.
pub async fn start(config: Config) -> Result<NodeHandle, sessionmesh::StartError> {
    ServedNode::start(config, demo::routes)
        .await
        .map(NodeHandle)
}

impl NodeHandle {
    pub fn addrs(&self) -> BoundAddrs {
        BoundAddrs {
            public: self.0.public_addr(),
            internal: self.0.mesh().internal_addr(),
            gossip: self.0.mesh().gossip_addr(),
        }
    }

    pub fn mesh(&self) -> &Mesh {
        self.0.mesh()
    }

    /// The node's internals (store, ring, metrics...).
    pub fn node(&self) -> &Node {
        sessionmesh::testing::node(self.0.mesh())
    }

    pub async fn shutdown(self) {
        self.0.shutdown().await
    }
}

/// Generous bound for any wait: a loaded 2-core CI machine is slow.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        // Paces the poll; the condition above decides when to stop.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Secrets shared by the nodes of one test cluster.
pub struct Secrets {
    pub cookie: Secret,
    pub cluster: Secret,
}

impl Secrets {
    /// Random printable secrets (they may travel through environment variables).
    pub fn new() -> Secrets {
        let text = || -> String {
            (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect()
        };
        Secrets {
            cookie: Secret::new(text()),
            cluster: Secret::new(text()),
        }
    }

    /// The secrets as environment variables for a child `sessionmesh` process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = |secret: &Secret| String::from_utf8(secret.expose().to_vec()).unwrap();
        vec![
            ("SESSIONMESH_COOKIE_SECRET", s(&self.cookie)),
            ("SESSIONMESH_CLUSTER_SECRET", s(&self.cluster)),
        ]
    }
}

/// A node configuration for tests: loopback, port 0 everywhere, fast gossip.
pub fn test_config(node_id: &str, secrets: &Secrets, seeds: Vec<String>) -> Config {
    let any = "127.0.0.1:0".parse().unwrap();
    Config {
        node_id: node_id.to_owned(),
        cluster_id: "test".to_owned(),
        public_addr: any,
        internal_addr: any,
        gossip_addr: any,
        seeds,
        cookie_secret: secrets.cookie.clone(),
        cluster_secret: secrets.cluster.clone(),
        gossip_interval: Duration::from_millis(100),
        dead_node_grace: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
        workers: 1,
        generated_secrets: false,
        ..Config::default()
    }
}

/// A cluster of in-process nodes.
pub struct Cluster {
    pub secrets: Secrets,
    pub nodes: Vec<NodeHandle>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts `n` nodes (`node1`…), each seeded with the first one's gossip
    /// address, and waits until every node sees all of them in its ring.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        Cluster::start_serving(n, tweak, demo::routes).await
    }

    /// `n` nodes serving `routes` (an application's own) instead of the demo.
    pub async fn start_serving(
        n: usize,
        tweak: impl Fn(&mut Config),
        routes: fn(&mut actix_web::web::ServiceConfig),
    ) -> Cluster {
        let secrets = Secrets::new();
        let mut nodes: Vec<NodeHandle> = Vec::new();
        for i in 1..=n {
            let seeds = nodes
                .first()
                .map(|first| vec![first.addrs().gossip.to_string()])
                .unwrap_or_default();
            let mut config = test_config(&format!("node{i}"), &secrets, seeds);
            tweak(&mut config);
            let node = ServedNode::start(config, routes).await.map(NodeHandle);
            nodes.push(node.expect("node starts"));
        }
        let cluster = Cluster {
            secrets,
            nodes,
            http: client(),
        };
        cluster.wait_converged(n).await;
        cluster
    }

    /// Waits until every running node's ring has `n` members and all agree.
    pub async fn wait_converged(&self, n: usize) -> String {
        wait_for(&format!("{n} nodes to converge"), WAIT, || async {
            let mut prints = Vec::new();
            for node in &self.nodes {
                let view = node.node().view();
                if view.ring.nodes().len() != n {
                    return None;
                }
                prints.push(view.ring.fingerprint().to_owned());
            }
            prints
                .windows(2)
                .all(|w| w[0] == w[1])
                .then(|| prints[0].clone())
        })
        .await
    }

    /// `http://<public addr><path>` of node `i` (0-based); `https` when it serves TLS.
    pub fn url(&self, i: usize, path: &str) -> String {
        let node = &self.nodes[i];
        let addr = node.addrs().public.to_string();
        node.node().config().public_scheme().url(&addr, path)
    }

    pub fn internal_url(&self, i: usize, path: &str) -> String {
        let node = &self.nodes[i];
        let addr = node.addrs().internal.to_string();
        node.node().config().internal_scheme().url(&addr, path)
    }

    pub fn id(&self, i: usize) -> String {
        self.nodes[i].node().id().to_owned()
    }

    /// Creates a session with `data` through node `i`'s public API: its id.
    pub async fn create_session(&self, i: usize, data: &serde_json::Value) -> String {
        let created: serde_json::Value = self
            .http
            .post(self.url(i, "/api/sessions"))
            .json(data)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["id"].as_str().expect("a session id").to_owned()
    }

    /// A replication batch (`body`, JSON) posted to node `i`'s internal
    /// listener as peer `from` signs it: its answer, JSON.
    pub async fn replicate_as(&self, i: usize, from: &str, body: String) -> serde_json::Value {
        let signer = sessionmesh::testing::auth::Signer::new(self.secrets.cluster.clone());
        let path = sessionmesh::testing::replication::client::REPLICATE_PATH;
        self.http
            .post(self.internal_url(i, path))
            .header(
                sessionmesh::testing::auth::HEADER,
                signer.sign(from, "POST", path, body.as_bytes()),
            )
            .header(
                sessionmesh::testing::auth::DIGEST_HEADER,
                sessionmesh::testing::auth::body_digest(body.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the internal listener answers")
            .json()
            .await
            .expect("a JSON acknowledgement")
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// A plain HTTP client: no cookie jar (tests carry cookies by hand), no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // Shorter than the nodes' keep-alive: never reuse a connection the server is closing.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `name=value` pair of the first `Set-Cookie` for `name`, if any.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .find(|pair| pair.starts_with(&format!("{name}=")))
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A `sessionmesh` binary running as a child process, with the addresses it
/// reported in its JSON start-up line.
pub struct ChildNode {
    pub child: std::process::Child,
    pub public: std::net::SocketAddr,
    pub internal: std::net::SocketAddr,
    pub gossip: std::net::SocketAddr,
    /// `http` or `https`, as the public listener serves.
    pub scheme: String,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl ChildNode {
    /// Starts the binary on port-0 loopback listeners and waits for its
    /// "node ready" log line.
    pub fn spawn(node_id: &str, secrets: &Secrets, seeds: &[String], extra: &[&str]) -> ChildNode {
        ChildNode::spawn_on("127.0.0.1", node_id, secrets, seeds, extra)
    }

    /// [`ChildNode::spawn`] with every listener on loopback address `host`
    /// (any of 127.0.0.0/8): its peer connections leave from there too, so
    /// that firewall rules can tell its traffic from other nodes'.
    pub fn spawn_on(
        host: &str,
        node_id: &str,
        secrets: &Secrets,
        seeds: &[String],
        extra: &[&str],
    ) -> ChildNode {
        use std::io::BufRead;
        let any = format!("{host}:0");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sessionmesh"));
        command
            .args([
                "--node-id",
                node_id,
                "--cluster-id",
                "test",
                "--log-format",
                "json",
            ])
            .args([
                "--public-addr",
                &any,
                "--internal-addr",
                &any,
                "--gossip-addr",
                &any,
            ])
            .args(["--workers", "1"])
            .args(extra)
            .envs(secrets.env())
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if !extra.contains(&"--gossip-interval") {
            command.args(["--gossip-interval", "100ms"]);
        }
        for seed in seeds {
            command.args(["--seed", seed]);
        }
        let mut child = command.spawn().expect("the sessionmesh binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(remaining) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{node_id} never reported ready; it wrote:\n{}",
                    seen.join("\n")
                );
            };
            seen.push(line.clone());
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("node ready"))
            {
                let addr = |key: &str| event[key].as_str().unwrap().parse().unwrap();
                return ChildNode {
                    public: addr("public"),
                    internal: addr("internal"),
                    gossip: addr("gossip"),
                    scheme: event["public_scheme"].as_str().unwrap_or("http").to_owned(),
                    child,
                    lines,
                };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.public, path)
    }

    /// Sends a signal (`TERM`, `KILL`, ...) to the child.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the child to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("the child to exit", timeout, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of `sessionmesh` child processes, for crashes and signals.
pub struct ChildCluster {
    pub secrets: Secrets,
    /// Slot per node ever started; `None` once it was killed or stopped.
    pub nodes: Vec<(String, Option<ChildNode>)>,
    pub http: reqwest::Client,
    pub extra: Vec<String>,
}

impl ChildCluster {
    /// Starts `n` nodes `node1..n` with `extra` flags, each seeded with the ones
    /// before, and waits until they agree on a ring of `n`.
    pub async fn start(n: usize, extra: &[&str]) -> ChildCluster {
        ChildCluster::start_with_client(n, extra, client()).await
    }

    /// Same as [`ChildCluster::start`], talking to the nodes with `http` (for
    /// nodes that serve HTTPS).
    pub async fn start_with_client(
        n: usize,
        extra: &[&str],
        http: reqwest::Client,
    ) -> ChildCluster {
        let mut cluster = ChildCluster {
            secrets: Secrets::new(),
            nodes: Vec::new(),
            http,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 1..=n {
            cluster.spawn(&format!("node{i}"));
        }
        cluster.wait_ring(n).await;
        cluster
    }

    /// Starts (or restarts) a node under `node_id`, seeded with the live nodes.
    pub fn spawn(&mut self, node_id: &str) {
        let seeds: Vec<String> = self.live().map(|c| c.gossip.to_string()).collect();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        // Waiting for the child's start-up line blocks: let the runtime move
        // other tasks (a test's writer) off this thread meanwhile.
        let child = tokio::task::block_in_place(|| {
            ChildNode::spawn(node_id, &self.secrets, &seeds, &extra)
        });
        match self.nodes.iter_mut().find(|(id, _)| id == node_id) {
            Some(slot) => slot.1 = Some(child),
            None => self.nodes.push((node_id.to_owned(), Some(child))),
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &ChildNode> {
        self.nodes.iter().filter_map(|(_, c)| c.as_ref())
    }

    pub fn urls(&self) -> Vec<String> {
        self.live().map(|c| c.url("")).collect()
    }

    pub fn node(&mut self, node_id: &str) -> &mut ChildNode {
        self.nodes
            .iter_mut()
            .find(|(id, _)| id == node_id)
            .and_then(|(_, c)| c.as_mut())
            .unwrap_or_else(|| panic!("{node_id} is not running"))
    }

    /// Takes a node out of the cluster's bookkeeping (after kill or stop).
    pub fn take(&mut self, node_id: &str) -> ChildNode {
        self.nodes
            .iter_mut()
            .find(|(id, _)| id == node_id)
            .and_then(|(_, c)| c.take())
            .unwrap_or_else(|| panic!("{node_id} is not running"))
    }

    /// `/api/cluster` of every live node.
    pub async fn views(&self) -> Option<Vec<serde_json::Value>> {
        let mut views = Vec::new();
        for url in self.urls() {
            let r = self
                .http
                .get(format!("{url}/api/cluster"))
                .send()
                .await
                .ok()?;
            views.push(r.json().await.ok()?);
        }
        Some(views)
    }

    /// Waits until every live node's ring has `n` members and they agree.
    pub async fn wait_ring(&self, n: usize) {
        wait_for(&format!("a ring of {n} on every node"), WAIT, || async {
            let views = self.views().await?;
            let prints: HashSet<&str> = views
                .iter()
                .filter_map(|v| v["ring"]["fingerprint"].as_str())
                .collect();
            let all_n = views
                .iter()
                .all(|v| v["ring"]["nodes"].as_array().is_some_and(|a| a.len() == n));
            (all_n && prints.len() == 1).then_some(())
        })
        .await
    }

    /// Waits until the live nodes together hold every one of `total` sessions
    /// on `copies` nodes (one owner, `copies - 1` replicas), with no handoff
    /// running. Returns how long that took.
    pub async fn wait_fully_replicated(&self, total: u64, copies: u64) -> Duration {
        let started = Instant::now();
        wait_for(
            &format!("{total} sessions on {copies} nodes each"),
            Duration::from_secs(90),
            || async {
                let views = self.views().await?;
                let sum = |key: &str| {
                    views
                        .iter()
                        .map(|v| v["sessions"][key].as_u64().unwrap_or(0))
                        .sum::<u64>()
                };
                let idle = views.iter().all(|v| v["handoff"]["running"] == false);
                (idle && sum("owned") == total && sum("replica") == total * (copies - 1))
                    .then_some(())
            },
        )
        .await;
        started.elapsed()
    }
}

/// A child process that is killed and reaped when the test ends, even when it
/// panics first.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
