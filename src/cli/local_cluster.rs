//! `sessionmesh local-cluster --nodes N`: N real nodes on loopback in this one
//! process (each with its own listeners, gossip socket and store), for trying
//! sessionmesh out. Prints every node's URL and the dashboard's; Ctrl-C stops them
//! all gracefully (a second Ctrl-C exits at once). A node asked to leave with
//! `sessionmesh leave` stops alone while the others keep running.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::future::{join_all, select_all};
use tracing_subscriber::EnvFilter;

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
        node_id: format!("node{}", i + 1),
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

pub fn run(args: LocalClusterArgs, routes: Routes) -> ExitCode {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&args.log));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessionmesh local-cluster: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(local_cluster(args, routes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sessionmesh local-cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The URL of `path` on a node's public listener.
fn public_url(handle: &ServedNode, path: &str) -> String {
    let addr = handle.public_addr().to_string();
    handle
        .mesh()
        .node()
        .config()
        .public_scheme()
        .url(&addr, path)
}

async fn local_cluster(args: LocalClusterArgs, routes: Routes) -> Result<(), String> {
    let cookie = printable_secret();
    let cluster = printable_secret();
    let secret_file =
        write_secret_file(&cluster).map_err(|e| format!("writing the secret file: {e}"))?;
    let result = serve(&args, &cookie, &cluster, &secret_file, routes).await;
    if let Some(dir) = secret_file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn serve(
    args: &LocalClusterArgs,
    cookie: &Secret,
    cluster: &Secret,
    secret_file: &std::path::Path,
    routes: Routes,
) -> Result<(), String> {
    let n = args.nodes;
    println!("starting {n} sessionmesh nodes on 127.0.0.1 …");
    let mut handles: Vec<Option<ServedNode>> = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..n {
        let config = config(args, i, seeds.clone(), cookie, cluster)?;
        let id = config.node_id.clone();
        let started = Instant::now();
        match ServedNode::start(config, routes).await {
            Ok(handle) => {
                println!(
                    "  [{}/{n}] {id} ready on {} ({} ms)",
                    i + 1,
                    public_url(&handle, ""),
                    started.elapsed().as_millis()
                );
                if seeds.is_empty() {
                    seeds.push(handle.mesh().gossip_addr().to_string());
                }
                handles.push(Some(handle));
            }
            Err(error) => {
                stop_all(handles).await;
                return Err(format!("{id} did not start: {error:#}"));
            }
        }
    }

    // Wait until every node's ring holds all of them, showing progress.
    let started = Instant::now();
    let mut shown = usize::MAX;
    loop {
        let smallest = handles
            .iter()
            .flatten()
            .map(|h| h.mesh().node().view().ring.nodes().len())
            .min()
            .unwrap_or(0);
        if smallest != shown {
            println!("  ring: every node sees at least {smallest}/{n} members");
            shown = smallest;
        }
        if smallest >= usize::from(n) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            println!("  the ring has not converged after 30 s; carrying on (see the log)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let first = handles.iter().flatten().next().map(|h| public_url(h, ""));
    println!();
    println!("sessionmesh local cluster of {n} nodes is up:");
    for h in handles.iter().flatten() {
        println!("  {:<8} {}", h.mesh().node_id(), public_url(h, "/"));
    }
    if let Some(first) = first {
        println!();
        println!("  dashboard  {first}/dashboard");
        println!("  try        {first}/login?name=Ada  then / on any other node");
        println!("  status     sessionmesh status --node {first}");
        println!(
            "  leave      SESSIONMESH_CLUSTER_SECRET_FILE={} sessionmesh leave --node {first}",
            secret_file.display()
        );
    }
    println!();
    println!("Ctrl-C stops every node.");

    loop {
        enum Event {
            Stop,
            Leave(usize),
        }
        let event = {
            let leaves: Vec<_> = handles
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    h.as_ref().map(|h| {
                        Box::pin(async move {
                            h.mesh().leave_requested().await;
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
                if let Some(handle) = handles.get_mut(i).and_then(Option::take) {
                    let id = handle.mesh().node_id().to_owned();
                    println!("{id} was asked to leave: handing off and stopping …");
                    handle.shutdown().await;
                    println!("{id} has left; the others keep running");
                }
            }
        }
    }

    println!("stopping {} nodes …", handles.iter().flatten().count());
    tokio::spawn(async {
        stop_signal().await;
        eprintln!("second Ctrl-C: exiting without finishing the leave");
        std::process::exit(130);
    });
    stop_all(handles).await;
    println!("all nodes stopped");
    Ok(())
}

async fn stop_all(handles: Vec<Option<ServedNode>>) {
    join_all(handles.into_iter().flatten().map(|handle| async move {
        let id = handle.mesh().node_id().to_owned();
        handle.shutdown().await;
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
