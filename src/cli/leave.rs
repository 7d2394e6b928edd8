//! `sessionmesh leave --node URL`: asks a node to leave the cluster gracefully
//! (the same leave as on SIGTERM: announce `leaving`, hand off, stop), then
//! follows it until the process stops answering.
//!
//! The request is `POST /api/admin/leave?node=<id>`, signed with the cluster
//! secret (see [`crate::http`]'s operator routes), which this command reads from
//! `--cluster-secret-file`, `SESSIONMESH_CLUSTER_SECRET` or
//! `SESSIONMESH_CLUSTER_SECRET_FILE`: the node's own configuration keys.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::auth::{self, Signer};
use crate::config::Secret;

/// Who signs the request, as the signature header names it.
const SIGNER_ID: &str = "sessionmesh-cli";
const MIN_SECRET_BYTES: usize = 16;

#[derive(Args, Debug)]
pub struct LeaveArgs {
    /// Base URL of the public listener of the node that is to leave (its own
    /// address, not a load balancer's).
    #[arg(long)]
    pub node: String,
    /// File holding the cluster secret [default: SESSIONMESH_CLUSTER_SECRET, then
    /// SESSIONMESH_CLUSTER_SECRET_FILE]
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// How long to follow the leave before giving up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Send the request and return without following the leave.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

fn trim_newlines(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The cluster secret, read as the node reads it.
fn cluster_secret(args: &LeaveArgs) -> Result<Secret, String> {
    let from_file = |path: &PathBuf, source: &str| {
        std::fs::read(path)
            .map(|bytes| trim_newlines(&bytes).to_vec())
            .map_err(|e| {
                format!(
                    "reading the cluster secret from {} ({source}): {e}",
                    path.display()
                )
            })
    };
    let bytes = if let Some(path) = &args.cluster_secret_file {
        from_file(path, "--cluster-secret-file")?
    } else if let Some(secret) = std::env::var_os("SESSIONMESH_CLUSTER_SECRET") {
        secret.into_encoded_bytes()
    } else if let Some(path) = std::env::var_os("SESSIONMESH_CLUSTER_SECRET_FILE") {
        from_file(&PathBuf::from(path), "SESSIONMESH_CLUSTER_SECRET_FILE")?
    } else {
        return Err(
            "the cluster secret is needed: set SESSIONMESH_CLUSTER_SECRET or \
                    SESSIONMESH_CLUSTER_SECRET_FILE, or pass --cluster-secret-file"
                .to_owned(),
        );
    };
    let bytes = trim_newlines(&bytes).to_vec();
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the cluster secret has {} bytes; a node accepts at least {MIN_SECRET_BYTES}",
            bytes.len()
        ));
    }
    Ok(Secret::new(bytes))
}

pub fn run(args: LeaveArgs) -> ExitCode {
    let secret = match cluster_secret(&args) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("sessionmesh leave: {error}");
            return ExitCode::from(2);
        }
    };
    match super::block_on(leave(&args, Signer::new(secret))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("sessionmesh leave: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sessionmesh leave: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn leave(args: &LeaveArgs, signer: Signer) -> Result<(), String> {
    let base = super::base_url(&args.node, &args.tls);
    let client = super::client(Duration::from_secs(5), &args.tls, &base)?;
    let cluster = super::get_json(&client, &format!("{base}/api/cluster")).await?;
    let node_id = cluster["node_id"]
        .as_str()
        .ok_or_else(|| format!("{base}/api/cluster does not name its node"))?
        .to_owned();

    let mut url = reqwest::Url::parse(&format!("{base}{}", crate::http::LEAVE_PATH))
        .map_err(|e| format!("bad --node {base}: {e}"))?;
    url.query_pairs_mut().append_pair("node", &node_id);
    // Sign exactly the path and query that go on the wire.
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let signature = signer.sign(SIGNER_ID, "POST", &path_and_query, b"");
    println!("asking {node_id} ({base}) to leave the cluster…");
    let response = client
        .post(url)
        .header(auth::HEADER, signature)
        .send()
        .await
        .map_err(|e| format!("{base}: {}", super::describe(&e)))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        return Err(format!("{node_id} refused: {status}: {message}"));
    }
    println!("  accepted: {node_id} is leaving");
    if args.no_wait {
        return Ok(());
    }
    follow(&client, &base, &node_id, args.timeout).await
}

/// Prints a line whenever what the node reports changes, until it stops answering.
async fn follow(
    client: &reqwest::Client,
    base: &str,
    node_id: &str,
    timeout: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        if started.elapsed() > timeout {
            return Err(format!(
                "{node_id} still answers after {timeout:?}; its leave is bounded by its shutdown_grace, see its log"
            ));
        }
        let cluster = match client.get(format!("{base}/api/cluster")).send().await {
            Ok(response) => response.json::<Value>().await.ok(),
            Err(error) if error.is_connect() => {
                println!("  [{elapsed:5.1}s] {node_id} no longer answers: it has left");
                return Ok(());
            }
            Err(_) => None,
        };
        let Some(cluster) = cluster else { continue };
        let sessions = |key: &str| cluster["sessions"][key].as_u64().unwrap_or(0);
        let line = format!(
            "{}: {} owned, {}; handoff {}; {}",
            cluster["status"].as_str().unwrap_or("?"),
            super::count(sessions("owned"), "session", "sessions"),
            super::count(sessions("replica"), "replica copy", "replica copies"),
            super::status::describe_handoff(&cluster["handoff"]),
            super::status::describe_repair(&cluster["repair"]),
        );
        if line != last {
            println!("  [{elapsed:5.1}s] {line}");
            last = line;
        }
    }
}
