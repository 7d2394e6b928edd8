//! `sessionmesh whereis SESSION_ID --node URL`: the owner and replicas of a
//! session in that node's ring (`GET /api/cluster/whereis/{id}`): the node
//! computes it with the very ring it routes with.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct WhereisArgs {
    /// The session id (or a whole `SESSION` cookie value).
    pub session_id: String,
    /// Base URL of a node's public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

pub fn run(args: WhereisArgs) -> ExitCode {
    let base = super::base_url(&args.node, &args.tls);
    let url = match reqwest::Url::parse(&format!("{base}/api/cluster/whereis/")) {
        Ok(mut url) => {
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push(args.session_id.trim());
            }
            url
        }
        Err(error) => {
            eprintln!("sessionmesh whereis: bad --node {base}: {error}");
            return ExitCode::from(2);
        }
    };
    let fetch = async {
        let client = super::client(args.timeout, &args.tls, &base)?;
        super::get_json(&client, url.as_str()).await
    };
    match super::block_on(fetch) {
        Ok(Ok(answer)) => {
            if args.json {
                println!("{answer:#}");
            } else {
                print!("{}", render(&answer));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("sessionmesh whereis: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sessionmesh whereis: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The answer as text: the owner, then each replica, with their addresses.
pub fn render(answer: &Value) -> String {
    let mut out = format!(
        "session {} (ring {}, as seen by {})\n",
        answer["id"].as_str().unwrap_or("?"),
        answer["ring"]["fingerprint"]
            .as_str()
            .and_then(|f| f.get(..8))
            .unwrap_or("?"),
        answer["answered_by"].as_str().unwrap_or("?"),
    );
    let line = |role: &str, node: &Value| {
        format!(
            "  {role:<8} {:<16} {:<8} public {}  internal {}\n",
            node["node_id"].as_str().unwrap_or("?"),
            node["status"].as_str().unwrap_or("?"),
            node["public_addr"].as_str().unwrap_or("?"),
            node["internal_addr"].as_str().unwrap_or("?"),
        )
    };
    if answer["owner"].is_null() {
        out.push_str("  no owner: the ring is empty\n");
        return out;
    }
    out.push_str(&line("owner", &answer["owner"]));
    for replica in answer["replicas"].as_array().into_iter().flatten() {
        out.push_str(&line("replica", replica));
    }
    let copies = answer["replication_factor"].as_u64().unwrap_or(0);
    let have = 1 + answer["replicas"].as_array().map_or(0, Vec::len) as u64;
    if have < copies {
        out.push_str(&format!(
            "  ({have} of {copies} copies: the ring has fewer nodes than the replication factor)\n"
        ));
    }
    out
}
