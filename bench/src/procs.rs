//! Child processes on loopback: redis-server, the peer, sessionmesh nodes.
//!
//! Every child is killed (SIGKILL) and reaped when its handle drops, so an error
//! anywhere in the harness leaves nothing running. Every wait is bounded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a child may take to report that it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines a child wrote last, kept for error messages.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A child process, killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    tail: Tail,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid())
    }

    /// The last lines the child wrote on the piped stream.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        tail.into_iter().collect::<Vec<_>>().join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?;
    Ok(kib * 1024)
}

/// Spawns `command` with the chosen stream piped into a reader thread that sends
/// each line on the returned channel and keeps the last 40 in the tail.
fn spawn_reading(
    name: &str,
    command: &mut Command,
    stdout: bool,
) -> anyhow::Result<(Proc, mpsc::Receiver<String>)> {
    command.stdin(Stdio::null());
    if stdout {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    } else {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name} ({command:?})"))?;
    let stream: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().context("piped stdout")?)
    } else {
        Box::new(child.stderr.take().context("piped stderr")?)
    };
    let tail: Tail = Arc::default();
    let (tx, rx) = mpsc::channel();
    {
        let tail = tail.clone();
        std::thread::spawn(move || {
            // Drains the pipe for the child's whole life, so it never blocks on a
            // full pipe; ends at EOF (the child exited).
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut t) = tail.lock() {
                    if t.len() == 40 {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
    }
    Ok((
        Proc {
            name: name.to_owned(),
            child,
            tail,
        },
        rx,
    ))
}

/// Waits for the first line for which `accept` returns `Some`.
fn wait_line<T>(
    proc: &mut Proc,
    lines: &mpsc::Receiver<String>,
    mut accept: impl FnMut(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(value) = accept(&line) {
                    return Ok(value);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{} exited before it was ready:\n{}", proc.name, proc.tail())
            }
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}):\n{}", proc.name, proc.tail());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready after {START_TIMEOUT:?}:\n{}",
                proc.name,
                proc.tail()
            );
        }
    }
}

/// A free TCP port on loopback (for redis-server, which cannot bind port 0).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A redis-server on loopback: no persistence (sessionmesh has none either).
pub struct Redis {
    pub proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> anyhow::Result<Redis> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let dir = TempDir::new("redis")?;
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning", "--dir"])
                .arg(&dir.0);
            let (mut proc, _lines) = spawn_reading("redis-server", &mut command, true)?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if redis_cli(port, &["PING"]).is_ok_and(|r| r.trim() == "PONG") {
                    return Ok(Redis {
                        proc,
                        port,
                        _dir: dir,
                    });
                }
                if let Some(status) = proc.exited() {
                    last = Some(format!("exited ({status}): {}", proc.tail()));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("redis-server did not answer PING:\n{}", proc.tail());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("redis-server would not start: {}", last.unwrap_or_default())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        redis_cli(self.port, args)
    }

    /// A numeric field of `INFO memory` (e.g. `used_memory`).
    pub fn memory_field(&self, field: &str) -> anyhow::Result<u64> {
        let info = self.cli(&["INFO", "memory"])?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .with_context(|| format!("no {field} in INFO memory"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {field}"))
    }
}

pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli")?;
    if !out.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "sessionmesh-bench-{what}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The peer (`bench-peer`): session mode against Redis, or plain.
pub struct Peer {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub id: String,
}

impl Peer {
    /// `redis`: Some(url) for the session mode, None for plain.
    pub fn start(
        bin: &Path,
        id: &str,
        redis: Option<&str>,
        cookie_key_hex: &str,
    ) -> anyhow::Result<Peer> {
        let mut command = Command::new(bin);
        command.args(["--id", id, "--workers", "1", "--listen", "127.0.0.1:0"]);
        match redis {
            Some(url) => command.args(["--mode", "session", "--redis", url]),
            None => command.args(["--mode", "plain"]),
        };
        command.env("BENCH_PEER_COOKIE_KEY", cookie_key_hex);
        let (mut proc, lines) = spawn_reading(id, &mut command, true)?;
        let addr = wait_line(&mut proc, &lines, |line| {
            line.strip_prefix("listening ")
                .and_then(|a| a.trim().parse().ok())
        })?;
        Ok(Peer {
            proc,
            addr,
            id: id.to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Secrets shared by the sessionmesh nodes of one benchmark cluster.
#[derive(Clone)]
pub struct Secrets {
    pub cookie: String,
    pub cluster: String,
}

impl Secrets {
    pub fn random() -> Secrets {
        Secrets {
            cookie: random_hex(32),
            cluster: random_hex(32),
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A sessionmesh node: the real binary, on port-0 loopback listeners.
pub struct SmNode {
    pub proc: Proc,
    pub id: String,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub gossip: SocketAddr,
    /// Where sessionmesh's own routes are: `""`, or `/_sessionmesh` in gateway
    /// mode (started with `--upstream`).
    pub api_prefix: &'static str,
}

/// How to start sessionmesh nodes.
#[derive(Clone)]
pub struct SmOptions {
    pub bin: PathBuf,
    pub secrets: Secrets,
    pub replication_factor: usize,
    /// `None`: the binary's default (500ms).
    pub gossip_interval: Option<String>,
    /// More flags and environment variables for every node (an application
    /// binary built on sessionmesh takes sessionmesh's flags, and its own).
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
}

impl SmNode {
    pub fn start(options: &SmOptions, id: &str, seeds: &[SocketAddr]) -> anyhow::Result<SmNode> {
        let mut command = Command::new(&options.bin);
        command
            .args([
                "--node-id",
                id,
                "--cluster-id",
                "bench",
                "--log-format",
                "json",
            ])
            .args(["--public-addr", "127.0.0.1:0"])
            .args(["--internal-addr", "127.0.0.1:0"])
            .args(["--gossip-addr", "127.0.0.1:0"])
            .args(["--workers", "1"])
            .args([
                "--replication-factor",
                &options.replication_factor.to_string(),
            ])
            .env("SESSIONMESH_COOKIE_SECRET", &options.secrets.cookie)
            .env("SESSIONMESH_CLUSTER_SECRET", &options.secrets.cluster)
            // Start-up and membership lines only: nothing is logged per request.
            .env("RUST_LOG", "info");
        if let Some(interval) = &options.gossip_interval {
            command.args(["--gossip-interval", interval]);
        }
        for seed in seeds {
            command.args(["--seed", &seed.to_string()]);
        }
        command.args(&options.extra_args);
        command.envs(options.extra_env.iter().map(|(k, v)| (k, v)));
        let (mut proc, lines) = spawn_reading(id, &mut command, false)?;
        let (public, internal, gossip) = wait_line(&mut proc, &lines, |line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            if !event["message"].as_str()?.starts_with("node ready") {
                return None;
            }
            let addr = |key: &str| event[key].as_str()?.parse::<SocketAddr>().ok();
            Some((addr("public")?, addr("internal")?, addr("gossip")?))
        })?;
        let gateway = options.extra_args.iter().any(|a| a == "--upstream");
        Ok(SmNode {
            proc,
            id: id.to_owned(),
            public,
            internal,
            gossip,
            api_prefix: if gateway { "/_sessionmesh" } else { "" },
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }
}

/// Starts `n` nodes `{prefix}1..{prefix}n`, each seeded with the first one's gossip
/// address, and waits until every node's ring holds all of them.
pub async fn start_cluster(
    options: &SmOptions,
    prefix: &str,
    n: usize,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<SmNode>> {
    let mut nodes: Vec<SmNode> = Vec::with_capacity(n);
    for i in 1..=n {
        let seeds: Vec<SocketAddr> = nodes.first().map(|f| vec![f.gossip]).unwrap_or_default();
        nodes.push(SmNode::start(options, &format!("{prefix}{i}"), &seeds)?);
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    wait_rings(http, &nodes, &ids, Duration::from_secs(60)).await?;
    Ok(nodes)
}

/// The member ids in a node's ring, from its `/api/cluster`.
pub async fn ring_of(http: &reqwest::Client, node: &SmNode) -> anyhow::Result<Vec<String>> {
    let view: serde_json::Value = http
        .get(node.url(&format!("{}/api/cluster", node.api_prefix)))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let nodes = view["ring"]["nodes"]
        .as_array()
        .context("/api/cluster without ring.nodes")?;
    Ok(nodes
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

/// Waits until the ring of every node in `nodes` is exactly `ids`.
pub async fn wait_rings(
    http: &reqwest::Client,
    nodes: &[SmNode],
    ids: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut want: Vec<String> = ids.to_vec();
    want.sort();
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for node in nodes {
            let mut ring = ring_of(http, node).await.unwrap_or_default();
            ring.sort();
            if ring != want {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("rings did not converge on {want:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client like a test's: no proxy, no redirects, no cookie jar.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds")
}

/// The `name=value` pair of the `Set-Cookie` for `name`, if any.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .find(|pair| pair.starts_with(&format!("{name}=")))
}

/// How to start the gateway benchmark's Flask application under gunicorn.
#[derive(Clone, Debug)]
pub struct FlaskOptions {
    /// The Python interpreter (`python3`).
    pub python: String,
    /// The directory of `app.py` (`bench/flask`).
    pub app_dir: PathBuf,
    /// gunicorn worker processes (`--workers`).
    pub workers: u32,
    /// Threads of each worker (`--worker-class gthread --threads`).
    pub threads: u32,
}

/// One gunicorn serving `bench/flask/app.py` in one session mode, on a port-0
/// loopback listener. gunicorn forks its workers: the whole process group
/// (master and workers) is killed on drop.
pub struct Flask {
    pub proc: Proc,
    /// The worker processes (they serve the requests; the master only watches).
    pub workers: Vec<u32>,
    pub addr: SocketAddr,
    pub id: String,
    pub mode: String,
}

impl Flask {
    /// `mode`: `redis` (with `redis`: the server's URL), `gateway` or `none`.
    /// Returns once the worker(s) answer `GET /`.
    pub async fn start(
        options: &FlaskOptions,
        id: &str,
        mode: &str,
        redis: Option<&str>,
        http: &reqwest::Client,
    ) -> anyhow::Result<Flask> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&options.python);
        command
            .args(["-m", "gunicorn", "--chdir"])
            .arg(&options.app_dir)
            .args(["--bind", "127.0.0.1:0"])
            .args(["--workers", &options.workers.to_string()])
            .args(["--worker-class", "gthread"])
            .args(["--threads", &options.threads.to_string()])
            // Longer than the gateway's pool idle timeout (30 s), as for any
            // proxy's upstream: gunicorn's default of 2 s would close pooled
            // connections under the proxy between two scenarios.
            .args(["--keep-alive", "60"])
            .args(["--no-control-socket", "--log-level", "info"])
            .arg("app:app")
            .env("BENCH_FLASK_MODE", mode)
            .env("BENCH_FLASK_ID", id)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // Its own process group: the drop kills the workers too.
            .process_group(0);
        if let Some(url) = redis {
            command.env("BENCH_REDIS_URL", url);
        }
        let (proc, lines) = spawn_reading(id, &mut command, false)?;
        let mut flask = Flask {
            proc,
            workers: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            id: id.to_owned(),
            mode: mode.to_owned(),
        };
        // "[...] [INFO] Listening at: http://127.0.0.1:41234 (1234)", then one
        // "[...] [INFO] Booting worker with pid: 1235" per worker.
        flask.addr = wait_line(&mut flask.proc, &lines, |line| {
            let rest = line.split("Listening at: http://").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })?;
        while flask.workers.len() < options.workers as usize {
            let pid = wait_line(&mut flask.proc, &lines, |line| {
                line.split("Booting worker with pid: ")
                    .nth(1)?
                    .trim()
                    .parse::<u32>()
                    .ok()
            })?;
            flask.workers.push(pid);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = http.get(flask.url("/")).send().await {
                if r.status().is_success() {
                    return Ok(flask);
                }
            }
            if let Some(status) = flask.proc.exited() {
                bail!("{id} exited ({status}):\n{}", flask.proc.tail());
            }
            if Instant::now() > deadline {
                bail!("{id} did not answer GET /:\n{}", flask.proc.tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The master and the workers.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.proc.pid())
            .chain(self.workers.iter().copied())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Flask {
    fn drop(&mut self) {
        // The group is the master's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.proc.pid())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
