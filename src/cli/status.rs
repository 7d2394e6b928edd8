//! `sessionmesh status --node URL`: the cluster as one node sees it, as a table
//! (members, ring shares, session counts), from `GET /api/cluster/overview`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Base URL of a node's public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// Print the raw overview JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

pub fn run(args: StatusArgs) -> ExitCode {
    let base = super::base_url(&args.node, &args.tls);
    let url = format!("{base}/api/cluster/overview");
    let fetch = async {
        let client = super::client(args.timeout, &args.tls, &base)?;
        super::get_json(&client, &url).await
    };
    match super::block_on(fetch) {
        Ok(Ok(overview)) => {
            if args.json {
                println!("{overview:#}");
            } else {
                print!("{}", render(&overview));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("sessionmesh status: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sessionmesh status: {error}");
            ExitCode::FAILURE
        }
    }
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..8).unwrap_or(fingerprint)
}

/// The overview as text: a summary line, the members table, the down members.
pub fn render(overview: &Value) -> String {
    let viewer = overview["viewer"]["node_id"].as_str().unwrap_or("?");
    let nodes = overview["nodes"].as_array().cloned().unwrap_or_default();
    let part = |id: &str| nodes.iter().find(|n| n["node_id"] == id);
    let own = part(viewer)
        .map(|p| &p["cluster"])
        .cloned()
        .unwrap_or(Value::Null);
    let ring = &own["ring"];
    let fingerprint = ring["fingerprint"].as_str().unwrap_or("");
    let answered: Vec<&str> = nodes
        .iter()
        .filter(|n| n["ok"] == true)
        .filter_map(|n| n["cluster"]["ring"]["fingerprint"].as_str())
        .collect();
    let agree = answered.iter().all(|f| *f == fingerprint);
    let silent = nodes.iter().filter(|n| n["ok"] != true).count();

    let mut out = format!(
        "cluster as seen by {viewer}: ring of {} nodes, fingerprint {} ({}), replication factor {}, {} vnodes per node\n\n",
        ring["nodes"].as_array().map_or(0, Vec::len),
        short(fingerprint),
        match (agree, silent) {
            (true, 0) => "every node agrees".to_owned(),
            (true, n) => format!("every node that answered agrees; {n} did not answer"),
            (false, _) => "NODES DISAGREE: converging or partitioned".to_owned(),
        },
        ring["replication_factor"],
        ring["vnodes_per_node"],
    );
    let members = overview["members"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    let (mut owned_total, mut replica_total) = (0, 0);
    for m in members.iter().filter(|m| m["live"] == true) {
        let id = m["node_id"].as_str().unwrap_or("?");
        let share = ring["shares"][id].as_f64();
        let p = part(id);
        let (owned, replica, print) = match p {
            Some(p) if p["ok"] == true => {
                let c = &p["cluster"];
                let owned = c["sessions"]["owned"].as_u64().unwrap_or(0);
                let replica = c["sessions"]["replica"].as_u64().unwrap_or(0);
                owned_total += owned;
                replica_total += replica;
                let print = c["ring"]["fingerprint"].as_str().unwrap_or("");
                let mark = if print == fingerprint {
                    ""
                } else {
                    " (differs)"
                };
                (
                    owned.to_string(),
                    replica.to_string(),
                    format!("{}{mark}", short(print)),
                )
            }
            Some(p) => {
                let error = p["error"].as_str().unwrap_or("no answer");
                ("-".into(), "-".into(), format!("({error})"))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let name = if id == viewer {
            format!("{id} *")
        } else {
            id.to_owned()
        };
        rows.push(vec![
            name,
            m["status"].as_str().unwrap_or("?").to_owned(),
            share.map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0)),
            owned,
            replica,
            print,
            m["public_addr"].as_str().unwrap_or("").to_owned(),
            m["internal_addr"].as_str().unwrap_or("").to_owned(),
            m["gossip_addr"].as_str().unwrap_or("").to_owned(),
            m["generation"].to_string(),
        ]);
    }
    out.push_str(&super::table(
        &[
            "NODE",
            "STATUS",
            "SHARE",
            "OWNED",
            "REPLICAS",
            "RING",
            "PUBLIC",
            "INTERNAL",
            "GOSSIP",
            "GENERATION",
        ],
        &rows,
    ));
    out.push_str(&format!(
        "\n{} live members, {owned_total} sessions owned, {replica_total} replica copies (* = the node asked)\n",
        rows.len()
    ));
    let down: Vec<&str> = members
        .iter()
        .filter(|m| m["live"] != true)
        .filter_map(|m| m["node_id"].as_str())
        .collect();
    if !down.is_empty() {
        out.push_str(&format!(
            "down (still remembered by gossip): {}\n",
            down.join(", ")
        ));
    }
    for n in &nodes {
        for key in ["handoff", "repair"] {
            let activity = &n["cluster"][key];
            if !activity.is_null() {
                out.push_str(&format!(
                    "{key} on {}: {activity}\n",
                    n["node_id"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    out
}
