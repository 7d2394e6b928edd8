//! `sessionmesh local-cluster --nodes N`: N real nodes on loopback in this one
//! process (each with its own listeners, gossip socket and store), for trying
//! sessionmesh out. Ctrl-C stops them all gracefully (a second Ctrl-C exits at
//! once). A node asked to leave with `sessionmesh leave` stops alone while the
//! others keep running.
//!
//! Each node's tasks run on a tokio runtime of its own, whose threads log in a
//! `node` span with the node's id (its HTTP workers enter the same span, see
//! [`crate::node::log_on_this_thread_in`]), so that every log line names its
//! node. Once every node's ring holds all of them, after their start-up lines,
//! a summary shows the URLs, the dashboard and commands to try, spelled so that
//! they work from another shell ([`self_command`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::future::{join_all, select_all};
use tokio::runtime::Handle;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, Secret};
use crate::web::ServedNode;

/// The application routes each node serves.
pub type Routes = fn(&mut actix_web::web::ServiceConfig);

#[derive(Args, Debug)]
pub struct LocalClusterArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// Public port of the first node; the others take the next ones. 0 picks free
    /// ports.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Copies of each session, owner included.
    #[arg(long, default_value_t = 2)]
    pub replication_factor: usize,
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,
    /// Log level of the nodes (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// A secret made of printable characters, so that it can travel in an
/// environment variable or a file.
fn printable_secret() -> Secret {
    let bytes = Secret::random();
    let text: String = bytes.expose().iter().map(|b| format!("{b:02x}")).collect();
    Secret::new(text)
}

/// Writes the cluster secret where `sessionmesh leave` can read it (mode 0600).
fn write_secret_file(secret: &Secret) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sessionmesh-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cluster_secret");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options.open(&path)?.write_all(secret.expose())?;
    Ok(path)
}

fn config(
    args: &LocalClusterArgs,
    i: u16,
    seeds: Vec<String>,
    cookie: &Secret,
    cluster: &Secret,
) -> Result<Config, String> {
    let port = if args.port == 0 {
        0
    } else {
        args.port.checked_add(i).ok_or_else(|| {
            format!(
                "--port {} leaves no room for {} nodes",
                args.port, args.nodes
            )
        })?
    };
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Ok(Config {
        node_id: node_id(i),
        cluster_id: "sessionmesh-local".to_owned(),
        public_addr: loopback(port),
        internal_addr: loopback(0),
        gossip_addr: loopback(0),
        advertise_host: None,
        seeds,
        replication_factor: std::num::NonZeroUsize::new(args.replication_factor)
            .ok_or("--replication-factor must be at least 1")?,
        cookie_secret: cookie.clone(),
        cluster_secret: cluster.clone(),
        gossip_interval: args.gossip_interval,
        dead_node_grace: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        workers: 1,
        generated_secrets: false,
        ..Config::default()
    })
}

fn node_id(i: u16) -> String {
    format!("node{}", u32::from(i) + 1)
}

/// A runtime for one node's tasks (gossip, handoff, purge, ...): its threads log
/// in the node's span, so that each line names the node (see [`super::logging`]).
fn node_runtime(id: &str) -> std::io::Result<tokio::runtime::Runtime> {
    // At level error, so that the span exists under any filter that logs anything.
    let span = tracing::error_span!(target: "sessionmesh", super::logging::NODE_SPAN, id);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(id)
        .enable_all()
        .on_thread_start(move || crate::node::log_on_this_thread_in(&span))
        .build()
}

pub fn run(args: LocalClusterArgs, routes: Routes) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(super::logging::filter(&args.log))
        .with_ansi(super::logging::colour_on_stderr())
        .with_writer(std::io::stderr)
        .event_format(super::logging::NodeLineFormat)
        .finish()
        .with(super::logging::NodeTags)
        .try_init();
    let runtimes = (0..args.nodes)
        .map(|i| node_runtime(&node_id(i)))
        .collect::<Result<Vec<_>, _>>();
    let (runtime, runtimes) = match (tokio::runtime::Runtime::new(), runtimes) {
        (Ok(runtime), Ok(runtimes)) => (runtime, runtimes),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("sessionmesh local-cluster: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let handles = runtimes.iter().map(|r| r.handle().clone()).collect();
    let result = runtime.block_on(local_cluster(args, handles, routes));
    for node_runtime in runtimes {
        node_runtime.shutdown_timeout(Duration::from_secs(1));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sessionmesh local-cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A started node and the runtime its tasks run on.
struct Running {
    runtime: Handle,
    handle: ServedNode,
}

impl Running {
    fn id(&self) -> &str {
        self.handle.mesh().node_id()
    }

    /// The URL of `path` on the node's public listener.
    fn url(&self, path: &str) -> String {
        let addr = self.handle.public_addr().to_string();
        self.handle
            .mesh()
            .node()
            .config()
            .public_scheme()
            .url(&addr, path)
    }

    /// Leaves gracefully, on the node's own runtime.
    async fn stop(self) {
        let _ = self.runtime.spawn(self.handle.shutdown()).await;
    }
}

async fn local_cluster(
    args: LocalClusterArgs,
    runtimes: Vec<Handle>,
    routes: Routes,
) -> Result<(), String> {
    let cookie = printable_secret();
    let cluster = printable_secret();
    let secret_file =
        write_secret_file(&cluster).map_err(|e| format!("writing the secret file: {e}"))?;
    let result = serve(&args, runtimes, &cookie, &cluster, &secret_file, routes).await;
    if let Some(dir) = secret_file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// How to run this very program from another shell: `sessionmesh` when that
/// name on the PATH is this executable, else this executable's absolute path
/// (after `cargo run`, `target/<profile>/sessionmesh`: it works from any
/// directory and is the build that runs the cluster, where `cargo run --` would
/// work only in the repository and may build another one). The second value says
/// why the path was chosen, for a hint.
fn self_command() -> (String, Option<String>) {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return ("sessionmesh".to_owned(), None);
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("sessionmesh"))
            .find(|candidate| candidate.is_file())
    });
    let command = shell_word(&exe.to_string_lossy());
    match on_path {
        Some(found) if found.canonicalize().is_ok_and(|found| found == exe) => {
            ("sessionmesh".to_owned(), None)
        }
        Some(found) => (
            command,
            Some(format!(
                "the sessionmesh on your PATH ({}) is another build; these commands use the one running now",
                found.display()
            )),
        ),
        None => (
            command,
            Some(
                "sessionmesh is not on your PATH: `cargo install --path .` in the repository puts it there"
                    .to_owned(),
            ),
        ),
    }
}

/// `word` as one shell word: quoted when it holds anything but plain characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Waits until every node's ring holds all of them and they agree; false after
/// `bound`.
async fn converged(nodes: &[Option<Running>], n: usize, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let prints: Vec<String> = nodes
            .iter()
            .flatten()
            .map(|r| r.handle.mesh().node().view().ring.clone())
            .filter(|ring| ring.nodes().len() == n)
            .map(|ring| ring.fingerprint().to_owned())
            .collect();
        if prints.len() == n && prints.windows(2).all(|w| w[0] == w[1]) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // Paces the poll; the condition above decides when to stop.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve(
    args: &LocalClusterArgs,
    runtimes: Vec<Handle>,
    cookie: &Secret,
    cluster: &Secret,
    secret_file: &std::path::Path,
    routes: Routes,
) -> Result<(), String> {
    let n = args.nodes;
    println!("starting {n} sessionmesh nodes on 127.0.0.1 …");
    let started = Instant::now();
    let mut nodes: Vec<Option<Running>> = Vec::new();
    let mut seeds = Vec::new();
    for (i, runtime) in (0..n).zip(runtimes) {
        let config = config(args, i, seeds.clone(), cookie, cluster)?;
        let id = config.node_id.clone();
        match runtime.spawn(ServedNode::start(config, routes)).await {
            Ok(Ok(handle)) => {
                if seeds.is_empty() {
                    seeds.push(handle.mesh().gossip_addr().to_string());
                }
                nodes.push(Some(Running { runtime, handle }));
            }
            Ok(Err(error)) => {
                stop_all(nodes).await;
                return Err(format!("{id} did not start: {error:#}"));
            }
            Err(error) => {
                stop_all(nodes).await;
                return Err(format!("{id} did not start: {error}"));
            }
        }
    }
    // Every start-up line of the nodes comes before the summary: the last
    // ones are logged as the rings take in the last node.
    let agreed = converged(&nodes, usize::from(n), Duration::from_secs(30)).await;
    summary(&nodes, secret_file, agreed, started.elapsed());

    loop {
        enum Event {
            Stop,
            Leave(usize),
        }
        let event = {
            let leaves: Vec<_> = nodes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.as_ref().map(|r| {
                        Box::pin(async move {
                            r.handle.mesh().leave_requested().await;
                            i
                        })
                    })
                })
                .collect();
            if leaves.is_empty() {
                println!("every node has left; exiting");
                return Ok(());
            }
            tokio::select! {
                _ = stop_signal() => Event::Stop,
                (i, _, _) = select_all(leaves) => Event::Leave(i),
            }
        };
        match event {
            Event::Stop => break,
            Event::Leave(i) => {
                if let Some(running) = nodes.get_mut(i).and_then(Option::take) {
                    let id = running.id().to_owned();
                    println!("{id} was asked to leave: handing off and stopping …");
                    running.stop().await;
                    println!("{id} has left; the others keep running");
                }
            }
        }
    }

    println!("stopping {} nodes …", nodes.iter().flatten().count());
    tokio::spawn(async {
        stop_signal().await;
        eprintln!("second Ctrl-C: exiting without finishing the leave");
        std::process::exit(130);
    });
    stop_all(nodes).await;
    println!("all nodes stopped");
    Ok(())
}

/// What to open and what to run, printed once every node is ready.
fn summary(nodes: &[Option<Running>], secret_file: &std::path::Path, agreed: bool, took: Duration) {
    let running: Vec<&Running> = nodes.iter().flatten().collect();
    let (Some(first), Some(last)) = (running.first(), running.last()) else {
        return;
    };
    let n = running.len();
    let (command, hint) = self_command();
    let base = first.url("");
    let others: Vec<&str> = running.iter().skip(1).map(|r| r.id()).collect();
    println!();
    if agreed {
        println!(
            "sessionmesh local cluster: {n} {} ready in {:.1} s, every ring holds all of them",
            if n == 1 { "node" } else { "nodes" },
            took.as_secs_f64()
        );
    } else {
        println!(
            "sessionmesh local cluster: {n} {} started, but their rings do not agree after 30 s (see the log)",
            if n == 1 { "node" } else { "nodes" },
        );
    }
    println!();
    for r in &running {
        println!("  {:<10} {}", r.id(), r.url("/"));
    }
    println!("  {:<10} {base}/dashboard", "dashboard");
    println!();
    if others.is_empty() {
        println!("  {:<10} {base}/login?name=Ada  then {base}/", "try");
    } else {
        println!(
            "  {:<10} {base}/login?name=Ada  then / on {}",
            "try",
            others.join(" or ")
        );
    }
    println!("  {:<10} {command} status --node {base}", "status");
    println!(
        "  {:<10} SESSIONMESH_CLUSTER_SECRET_FILE={} {command} leave --node {}",
        "leave",
        shell_word(&secret_file.display().to_string()),
        last.url("")
    );
    println!(
        "  {:<10} {} (the cluster secret, removed at exit)",
        "secret",
        secret_file.display()
    );
    if let Some(hint) = hint {
        println!();
        println!("  ({hint})");
    }
    println!();
    println!("Ctrl-C stops every node.");
}

async fn stop_all(nodes: Vec<Option<Running>>) {
    join_all(nodes.into_iter().flatten().map(|running| async move {
        let id = running.id().to_owned();
        running.stop().await;
        println!("  {id} stopped");
    }))
    .await;
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_word("/work/target/release/sessionmesh"),
            "/work/target/release/sessionmesh"
        );
        assert_eq!(
            shell_word("/home/a b/sessionmesh"),
            "'/home/a b/sessionmesh'"
        );
        assert_eq!(shell_word("/it's"), r"'/it'\''s'");
        assert_eq!(node_id(0), "node1");
    }
}
