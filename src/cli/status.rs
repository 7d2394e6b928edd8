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

/// Where a member stands, as the asked node sees it. Only `Live` members count
/// as live: a leaving member is on its way out, an unreachable one cannot serve.
#[derive(Clone, Debug, PartialEq)]
enum Standing {
    /// Gossips, is `ready` or `joining`, and answered the overview.
    Live,
    /// Gossips `leaving`.
    Leaving,
    /// Gossips, but did not answer the overview (the reason).
    Unreachable(String),
    /// No longer live in gossip (gossip remembers it for a while).
    Gone,
}

fn standing(member: &Value, part: Option<&Value>) -> Standing {
    if member["live"] != true {
        return Standing::Gone;
    }
    if member["status"] == "leaving" {
        return Standing::Leaving;
    }
    match part {
        Some(p) if p["ok"] == true => Standing::Live,
        Some(p) => Standing::Unreachable(p["error"].as_str().unwrap_or("no answer").to_owned()),
        None => Standing::Unreachable("not asked".to_owned()),
    }
}

/// How long ago a process started, from its generation (unix nanoseconds at
/// start) and the time of the overview: `45s`, `12m 5s`, `3h 4m`, `2d 3h`.
fn uptime(generation: &Value, now_ms: &Value) -> String {
    let (Some(generation), Some(now_ms)) = (generation.as_u64(), now_ms.as_u64()) else {
        return "-".to_owned();
    };
    let secs = (now_ms / 1000).saturating_sub(generation / 1_000_000_000);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// A node's handoff progress (`/api/cluster` → `handoff`) in words.
pub(crate) fn describe_handoff(handoff: &Value) -> String {
    let n = |key: &str| handoff[key].as_u64().unwrap_or(0);
    let copies = |count: u64| super::count(count, "copy", "copies");
    let (to_move, moved, failed) = (n("to_move"), n("moved"), n("failed"));
    let mut out = if handoff["running"] == true {
        format!("moving copies: {moved} of {} sent", copies(to_move))
    } else if to_move == 0 && n("moved_total") == 0 {
        "idle, nothing moved yet".to_owned()
    } else if to_move == 0 {
        "idle; the last pass had nothing to send".to_owned()
    } else {
        format!("idle; the last pass sent {moved} of {}", copies(to_move))
    };
    if failed > 0 {
        out.push_str(&format!(", {failed} failed (retried)"));
    }
    if handoff["running"] != true && moved > 0 {
        out.push_str(&match n("last_pass_ms") {
            0 => " in under 1 ms".to_owned(),
            ms @ 1..1000 => format!(" in {ms} ms"),
            ms => format!(
                " in {:.1} s ({} copies/s)",
                ms as f64 / 1000.0,
                n("last_rate")
            ),
        });
    }
    if n("moved_total") > moved {
        out.push_str(&format!("; {} sent in all", copies(n("moved_total"))));
    }
    if n("failed_total") > failed {
        out.push_str(&format!("; {} failed in all", n("failed_total")));
    }
    out
}

/// A node's repair backlog (`/api/cluster` → `repair`) in words.
pub(crate) fn describe_repair(repair: &Value) -> String {
    match repair["hints_pending"].as_u64().unwrap_or(0) {
        0 => "no repairs pending".to_owned(),
        n => format!(
            "{} waiting to be delivered again",
            super::count(n, "replica copy", "replica copies")
        ),
    }
}

/// The overview as text: a summary, the members table, the members gone, and
/// each node's handoff and repair.
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
    let answered: Vec<&Value> = nodes.iter().filter(|n| n["ok"] == true).collect();
    let agree = answered
        .iter()
        .all(|n| n["cluster"]["ring"]["fingerprint"].as_str() == Some(fingerprint));
    let silent = nodes.len() - answered.len();
    let members = overview["members"].as_array().cloned().unwrap_or_default();
    let standings: Vec<Standing> = members
        .iter()
        .map(|m| standing(m, m["node_id"].as_str().and_then(part)))
        .collect();
    let how_many = |wanted: fn(&Standing) -> bool| standings.iter().filter(|s| wanted(s)).count();

    // The summary.
    let ring_size = ring["nodes"].as_array().map_or(0, Vec::len);
    let agreement = match (agree, silent) {
        (true, 0) => "every node agrees".to_owned(),
        (true, n) => format!(
            "every node that answered agrees ({} did not answer)",
            super::count(n as u64, "node", "nodes")
        ),
        (false, _) => "NODES DISAGREE: converging or partitioned".to_owned(),
    };
    let mut standing_words = vec![format!("{} live", how_many(|s| *s == Standing::Live))];
    let joining = members
        .iter()
        .zip(&standings)
        .filter(|(m, s)| **s == Standing::Live && m["status"] == "joining")
        .count();
    if joining > 0 {
        standing_words[0].push_str(&format!(" ({joining} joining)"));
    }
    for (count, word) in [
        (how_many(|s| *s == Standing::Leaving), "leaving"),
        (
            how_many(|s| matches!(s, Standing::Unreachable(_))),
            "unreachable",
        ),
        (how_many(|s| *s == Standing::Gone), "gone"),
    ] {
        if count > 0 {
            standing_words.push(format!("{count} {word}"));
        }
    }
    let sum = |key: &str| -> u64 {
        answered
            .iter()
            .map(|n| n["cluster"]["sessions"][key].as_u64().unwrap_or(0))
            .sum()
    };
    let (owned_total, replica_total) = (sum("owned"), sum("replica"));
    let mut out = format!("cluster as seen by {viewer} (marked * below)\n");
    out.push_str(&format!(
        "  ring      {}, {} vnodes each, fingerprint {}: {agreement}\n",
        super::count(ring_size as u64, "node", "nodes"),
        ring["vnodes_per_node"],
        short(fingerprint),
    ));
    out.push_str(&format!("  members   {}\n", standing_words.join(", ")));
    out.push_str(&format!(
        "  sessions  {} owned, {}{}; replication factor {}\n\n",
        owned_total,
        super::count(replica_total, "replica copy", "replica copies"),
        if silent > 0 {
            " on the nodes that answered"
        } else {
            ""
        },
        ring["replication_factor"],
    ));

    // The members gossip holds live, one row each.
    let mut rows = Vec::new();
    for (m, standing) in members.iter().zip(&standings) {
        if *standing == Standing::Gone {
            continue;
        }
        let id = m["node_id"].as_str().unwrap_or("?");
        let mut status = m["status"].as_str().unwrap_or("?").to_owned();
        if m["admitted"] == false {
            status.push_str(", not admitted");
        }
        let (owned, replica, print) = match part(id) {
            Some(p) if p["ok"] == true => {
                let c = &p["cluster"];
                let print = c["ring"]["fingerprint"].as_str().unwrap_or("");
                let mark = if print == fingerprint {
                    ""
                } else {
                    " (differs)"
                };
                (
                    c["sessions"]["owned"].as_u64().unwrap_or(0).to_string(),
                    c["sessions"]["replica"].as_u64().unwrap_or(0).to_string(),
                    format!("{}{mark}", short(print)),
                )
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        if let Some(p) = part(id).filter(|p| p["ok"] != true) {
            let why = p["error"].as_str().unwrap_or("?");
            status.push_str(&format!(", no answer ({why})"));
        } else if let Standing::Unreachable(why) = standing {
            status.push_str(&format!(", no answer ({why})"));
        }
        let name = if id == viewer {
            format!("{id} *")
        } else {
            id.to_owned()
        };
        rows.push(vec![
            name,
            status,
            ring["shares"][id]
                .as_f64()
                .map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0)),
            owned,
            replica,
            print,
            uptime(&m["generation"], &overview["generated_at_ms"]),
            m["public_addr"].as_str().unwrap_or("").to_owned(),
            m["internal_addr"].as_str().unwrap_or("").to_owned(),
            m["gossip_addr"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    out.push_str(&super::table(
        &[
            "NODE", "STATUS", "SHARE", "OWNED", "REPLICAS", "RING", "UP", "PUBLIC", "INTERNAL",
            "GOSSIP",
        ],
        &rows,
    ));

    let gone: Vec<String> = members
        .iter()
        .zip(&standings)
        .filter(|(_, s)| **s == Standing::Gone)
        .map(|(m, _)| {
            let id = m["node_id"].as_str().unwrap_or("?");
            if m["status"] == "leaving" {
                format!("{id} (left)")
            } else {
                format!("{id} (stopped gossiping: crashed or cut off?)")
            }
        })
        .collect();
    if !gone.is_empty() {
        out.push_str(&format!(
            "\ngone, still remembered by gossip for a while: {}\n",
            gone.join(", ")
        ));
    }

    if !nodes.is_empty() {
        out.push_str("\nhandoff and repair\n");
        let width = nodes
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .map(|id| id.chars().count())
            .max()
            .unwrap_or(0);
        for n in &nodes {
            let id = n["node_id"].as_str().unwrap_or("?");
            let text = if n["ok"] == true {
                format!(
                    "{}; {}",
                    describe_handoff(&n["cluster"]["handoff"]),
                    describe_repair(&n["cluster"]["repair"])
                )
            } else {
                format!("no answer ({})", n["error"].as_str().unwrap_or("?"))
            };
            out.push_str(&format!("  {id:<width$}  {text}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(id: &str, status: &str, live: bool) -> Value {
        json!({
            "node_id": id, "generation": 1_000_000_000_000u64, "status": status, "live": live,
            "admitted": true, "public_addr": format!("{id}:8080"),
            "internal_addr": format!("{id}:8081"), "gossip_addr": "127.0.0.1:7280",
        })
    }

    fn answer(id: &str, owned: u64, replica: u64, handoff: Value, hints: u64) -> Value {
        json!({
            "node_id": id, "ok": true,
            "cluster": {
                "ring": {
                    "fingerprint": "0123456789abcdef", "nodes": ["a", "b"],
                    "shares": {"a": 0.5, "b": 0.5}, "replication_factor": 2, "vnodes_per_node": 128,
                },
                "sessions": {"owned": owned, "replica": replica},
                "handoff": handoff,
                "repair": {"hints_pending": hints},
            },
        })
    }

    fn idle() -> Value {
        json!({"running": false, "to_move": 0, "moved": 0, "failed": 0, "moved_total": 0, "failed_total": 0})
    }

    /// Live means gossiping, not leaving, and answering: a leaving, an
    /// unreachable and a gone member are each named for what they are.
    #[test]
    fn only_answering_members_that_stay_count_as_live() {
        let overview = json!({
            "viewer": {"node_id": "a"},
            "generated_at_ms": 1_000_000u64 + 3_725_000,
            "members": [
                member("a", "ready", true),
                member("b", "ready", true),
                member("c", "leaving", true),
                member("d", "ready", false),
                member("e", "ready", true),
                member("f", "joining", true),
                member("g", "leaving", false),
            ],
            "nodes": [
                answer("a", 1, 0, idle(), 0),
                answer("b", 0, 1, json!({"running": true, "to_move": 10, "moved": 4, "failed": 1,
                    "moved_total": 4, "failed_total": 1}), 1),
                {"node_id": "c", "ok": false, "error": "unreachable"},
                {"node_id": "e", "ok": false, "error": "timed out"},
                answer("f", 0, 0, idle(), 2),
            ],
        });
        let text = render(&overview);
        assert!(
            text.contains("members   3 live (1 joining), 1 leaving, 1 unreachable, 2 gone\n"),
            "{text}"
        );
        assert!(
            text.contains("sessions  1 owned, 1 replica copy on the nodes that answered;"),
            "{text}"
        );
        assert!(text.contains("2 nodes did not answer"), "{text}");
        let row = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap_or_else(|| panic!("a row for {id}: {text}"))
                .to_owned()
        };
        assert!(row("a").starts_with("a *"), "{text}");
        assert!(
            row("a").contains("1h 2m"),
            "uptime from the generation: {text}"
        );
        assert!(
            row("c").contains("leaving, no answer (unreachable)"),
            "{text}"
        );
        assert!(row("e").contains("ready, no answer (timed out)"), "{text}");
        assert!(text.contains("gone, still remembered by gossip for a while: d (stopped gossiping: crashed or cut off?), g (left)"), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("d ") || l.starts_with("g ")),
            "{text}"
        );
        assert!(
            text.contains("  a  idle, nothing moved yet; no repairs pending\n"),
            "{text}"
        );
        assert!(
            text.contains("  b  moving copies: 4 of 10 copies sent, 1 failed (retried); 1 replica copy waiting to be delivered again\n"),
            "{text}"
        );
        assert!(text.contains("  c  no answer (unreachable)\n"), "{text}");
        assert!(
            text.contains("  f  idle, nothing moved yet; 2 replica copies waiting"),
            "{text}"
        );
        assert!(!text.contains('{') && !text.contains('"'), "{text}");
    }

    #[test]
    fn handoff_in_words() {
        let done = json!({"running": false, "to_move": 1, "moved": 1, "failed": 0, "moved_total": 5,
            "failed_total": 0, "last_pass_ms": 2500, "last_rate": 400});
        assert_eq!(
            describe_handoff(&done),
            "idle; the last pass sent 1 of 1 copy in 2.5 s (400 copies/s); 5 copies sent in all"
        );
        let quiet = json!({"running": false, "to_move": 0, "moved": 0, "failed": 0, "moved_total": 1,
            "failed_total": 0});
        assert_eq!(
            describe_handoff(&quiet),
            "idle; the last pass had nothing to send; 1 copy sent in all"
        );
        assert_eq!(
            describe_repair(&json!({"hints_pending": 0})),
            "no repairs pending"
        );
    }
}
