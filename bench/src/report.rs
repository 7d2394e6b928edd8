//! The results as JSON and as a Markdown table, under `target/bench/`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::dynamics::Dynamics;
use crate::memory::Memory;
use crate::throughput::Throughput;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// The harness's nice value (its children inherit it).
    pub nice: i64,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            nice: nice(),
        }
    }
}

/// This process's nice value, from `/proc/self/stat`.
fn nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(16)?.parse().ok())
        .unwrap_or(0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One micro-benchmark read from criterion's output (`target/criterion`).
#[derive(Clone, Debug, Serialize)]
pub struct Micro {
    pub name: String,
    pub mean_ns: f64,
}

/// Every `.../new/estimates.json` under `dir`, named by its path.
pub fn read_criterion(dir: &Path) -> Vec<Micro> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Micro>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    let estimates = path.join("estimates.json");
                    let value: Option<serde_json::Value> = std::fs::read_to_string(&estimates)
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok());
                    if let Some(mean) = value.and_then(|v| v["mean"]["point_estimate"].as_f64()) {
                        let name = dir
                            .strip_prefix(root)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        out.push(Micro {
                            name,
                            mean_ns: mean,
                        });
                    }
                } else if path.file_name().is_some_and(|n| n != "report") {
                    walk(&path, root, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: Option<f64>,
    pub goal: String,
    pub holds: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub machine: Machine,
    pub tools: Vec<(String, String)>,
    /// Python and the Flask packages of the gateway part, when it ran.
    pub python: Option<String>,
    pub throughput: Option<Throughput>,
    /// The gateway part (issue 15): Flask with Redis, behind sessionmesh, alone.
    pub gateway: Option<Throughput>,
    pub memory: Option<Memory>,
    pub dynamics: Option<Dynamics>,
    pub ring_micro: Vec<Micro>,
    pub targets: Vec<Target>,
}

/// The reference a scenario's ratio is taken against.
pub fn reference(key: &str) -> Option<&'static str> {
    match key {
        "plain"
        | "sm_owner_read"
        | "sm_forwarded_read"
        | "peer_rr_read"
        | "app_owner_read"
        | "app_forwarded_read"
        | "store_owner_read"
        | "store_forwarded_read" => Some("peer_read"),
        "sm_rr_read" | "app_rr_read" | "store_rr_read" => Some("peer_rr_read"),
        "sm_login_rf2" | "app_login_rf2" | "store_login_rf2" => Some("peer_login"),
        "gw_rr_read" | "flask_none_rr_read" => Some("flask_redis_rr_read"),
        "gw_rr_login" | "flask_none_rr_login" => Some("flask_redis_rr_login"),
        _ => None,
    }
}

fn target(what: &str, measured: Option<f64>, goal: &str, holds: impl Fn(f64) -> bool) -> Target {
    Target {
        what: what.to_owned(),
        measured,
        goal: goal.to_owned(),
        holds: measured.map(holds),
    }
}

/// The targets, from whatever parts ran.
pub fn targets(
    t: Option<&Throughput>,
    g: Option<&Throughput>,
    m: Option<&Memory>,
    d: Option<&Dynamics>,
) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(t) = t {
        let p99 = |k: &str| t.get(k).and_then(|s| s.latency.p99_us).map(|v| v as f64);
        out.push(target(
            "owner read / peer read (req/s)",
            t.paired_ratio("sm_owner_read", "peer_read"),
            ">= 2.5",
            |v| v >= 2.5,
        ));
        out.push(target(
            "owner read / plain actix-web (req/s)",
            t.paired_ratio("sm_owner_read", "plain"),
            ">= 0.8",
            |v| v >= 0.8,
        ));
        out.push(target(
            "forwarded read / peer read (req/s)",
            t.paired_ratio("sm_forwarded_read", "peer_read"),
            ">= 1.0",
            |v| v >= 1.0,
        ));
        out.push(target(
            "forwarded read p99 / peer read p99",
            p99("sm_forwarded_read")
                .zip(p99("peer_read"))
                .map(|(a, b)| a / b),
            "<= 1.5",
            |v| v <= 1.5,
        ));
        out.push(target(
            "login rf=2 / peer login (req/s)",
            t.paired_ratio("sm_login_rf2", "peer_login"),
            ">= 1.0",
            |v| v >= 1.0,
        ));
        // Issue 13: the same pages as an application on the cluster, through the
        // `sessionmesh::actix` extractor (`app_*`) and actix-session's middleware
        // with `MeshSessionStore` (`store_*`), against the Redis application.
        for (prefix, how) in [("app", "extractor"), ("store", "actix-session store")] {
            for (scenario, reference, what, goal) in [
                ("owner_read", "peer_read", "owner entry / peer read", 1.5),
                (
                    "forwarded_read",
                    "peer_read",
                    "non-owner entry / peer read",
                    1.1,
                ),
                (
                    "rr_read",
                    "peer_rr_read",
                    "round robin / peer round robin",
                    1.2,
                ),
                ("login_rf2", "peer_login", "login rf=2 / peer login", 1.0),
            ] {
                let key = format!("{prefix}_{scenario}");
                if t.get(&key).is_none() {
                    continue;
                }
                out.push(target(
                    &format!("app ({how}): {what} (req/s)"),
                    t.paired_ratio(&key, reference),
                    &format!(">= {goal:.1}"),
                    move |v| v >= goal,
                ));
            }
        }
    }
    if let Some(g) = g {
        // Issue 15: the Flask application behind the gateway (no Redis) against
        // the same application with Flask-Session and Redis.
        for (what, key, reference) in [
            (
                "Flask behind the gateway / Flask-Session + Redis, round-robin read (req/s)",
                "gw_rr_read",
                "flask_redis_rr_read",
            ),
            (
                "Flask behind the gateway / Flask-Session + Redis, round-robin login (req/s)",
                "gw_rr_login",
                "flask_redis_rr_login",
            ),
        ] {
            if g.get(key).is_some() {
                out.push(target(
                    what,
                    g.paired_ratio(key, reference),
                    ">= 1.0",
                    |v| v >= 1.0,
                ));
            }
        }
    }
    if let Some(m) = m {
        out.push(target(
            "sessionmesh RSS bytes/session / Redis used_memory bytes/session",
            Some(m.sessionmesh_rss.bytes_per_session / m.redis_used_memory.bytes_per_session),
            "<= 1.0",
            |v| v <= 1.0,
        ));
    }
    if let Some(d) = d {
        for (n, goal) in [(3, 2000.0), (50, 5000.0)] {
            if let Some(j) = d.join.iter().find(|j| j.nodes == n) {
                out.push(target(
                    &format!("join visible in every ring, {n} nodes, worst trial (ms)"),
                    Some(j.max_ms),
                    &format!("<= {goal}"),
                    move |v| v <= goal,
                ));
            }
        }
        for k in &d.kill {
            let worst: Option<f64> = k
                .trials
                .iter()
                .map(|t| t.takeover_ms)
                .collect::<Option<Vec<f64>>>()
                .map(|v| v.into_iter().fold(0.0, f64::max));
            out.push(Target {
                what: format!(
                    "takeover after kill -9, {} nodes, worst trial (ms)",
                    k.nodes
                ),
                measured: worst,
                goal: "<= 3000".to_owned(),
                holds: Some(worst.is_some_and(|v| v <= 3000.0)),
            });
        }
    }
    out
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".to_owned(), |v| format!("{:.2}", v as f64 / 1000.0))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// The table of a throughput part's scenarios.
fn table(md: &mut String, t: &Throughput) {
    let _ = writeln!(
        md,
        "| scenario | req/s | min–max | p50 ms | p99 ms | p99.9 ms | errors | bytes/resp | server CPU µs/req | ratio | vs |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for s in &t.scenarios {
        let (ratio, vs) = match reference(s.key) {
            Some(r) => (
                t.paired_ratio(s.key, r)
                    .map_or("-".to_owned(), |v| format!("{v:.2}×")),
                r,
            ),
            None => ("1.00×".to_owned(), s.key),
        };
        let _ = writeln!(
            md,
            "| `{}` {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {:.0} | {:.1} | {} | `{}` |",
            s.key,
            s.label,
            s.median_rps,
            s.min_rps,
            s.max_rps,
            ms(s.latency.p50_us),
            ms(s.latency.p99_us),
            ms(s.latency.p999_us),
            s.errors.total(),
            s.bytes_per_response,
            s.server_cpu_us_per_request,
            ratio,
            vs
        );
    }
}

/// CPU µs per request of the named part `what` of scenario `key`.
pub fn cpu_share(t: &Throughput, key: &str, what: &str) -> Option<f64> {
    t.get(key)?
        .cpu_split
        .iter()
        .find(|c| c.what == what)
        .map(|c| c.us_per_request)
}

/// The proxy's own cost per request, in CPU µs: (the sessionmesh nodes' CPU,
/// the whole gateway setup's CPU minus the application alone's) for the read
/// (`rr_read`) or the login (`rr_login`).
pub fn proxy_cost(t: &Throughput, kind: &str) -> (Option<f64>, Option<f64>) {
    let gw = format!("gw_{kind}");
    let alone = format!("flask_none_{kind}");
    let nodes = cpu_share(t, &gw, "sessionmesh nodes");
    let whole = t
        .get(&gw)
        .zip(t.get(&alone))
        .map(|(g, a)| g.server_cpu_us_per_request - a.server_cpu_us_per_request);
    (nodes, whole)
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

/// Issue 15's section: the table, the CPU split and the proxy's own cost.
fn gateway_section(md: &mut String, g: &Throughput, python: Option<&str>) {
    let _ = writeln!(md, "\n## Gateway mode (issue 15)\n");
    let _ = writeln!(
        md,
        "`bench/flask/app.py` under gunicorn (gthread) in three session modes, 3 processes \
         each: Flask-Session + one redis-server (`flask_redis_*`), behind 3 sessionmesh \
         nodes in gateway mode, one application process per node, replication factor 2, no \
         Redis (`gw_*`), and without sessions (`flask_none_*`, the baseline). Every scenario \
         enters round robin: one wrk per entry point, {} connections in all, {} s measured \
         after {} s of warm-up, {} interleaved rounds. {}\n",
        g.connections,
        g.duration_s,
        g.warmup_s,
        g.rounds,
        python.map_or(String::new(), |p| format!("({p})"))
    );
    table(md, g);
    let _ = writeln!(md, "\nServer CPU per request, by process:\n");
    let _ = writeln!(md, "| scenario | part | CPU µs/req |");
    let _ = writeln!(md, "| --- | --- | ---: |");
    for s in &g.scenarios {
        for c in &s.cpu_split {
            let _ = writeln!(md, "| `{}` | {} | {:.1} |", s.key, c.what, c.us_per_request);
        }
    }
    let _ = writeln!(
        md,
        "\nThe gateway's own cost per request (CPU µs): the sessionmesh nodes' CPU in the \
         gateway setup, and the whole gateway setup's CPU minus the application's alone \
         (which also counts the application's decoding of the session headers).\n"
    );
    let _ = writeln!(
        md,
        "| request | sessionmesh nodes | gateway setup − application alone |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: |");
    for (what, kind) in [("read", "rr_read"), ("login", "rr_login")] {
        let (nodes, whole) = proxy_cost(g, kind);
        let _ = writeln!(md, "| {what} | {} | {} |", us(nodes), us(whole));
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# sessionmesh benchmark results\n");
        let _ = writeln!(md, "- date: {}", self.date);
        let _ = writeln!(md, "- commit: {}", self.commit);
        let _ = writeln!(
            md,
            "- machine: {}, {} cores, {:.1} GiB, Linux {}; load average at start {} / end {}; \
             harness and children at nice {}",
            m.cpu, m.cores, m.memory_gib, m.kernel, m.loadavg_start, m.loadavg_end, m.nice
        );
        let tools: Vec<String> = self
            .tools
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(md, "- tools: {}", tools.join("; "));
        let _ = writeln!(md, "- command: `{}`", self.command);

        if let Some(t) = &self.throughput {
            let _ = writeln!(md, "\n## Throughput and latency\n");
            let _ = writeln!(
                md,
                "wrk, 1 thread and {} connections per entry point (round robin: one wrk per \
                 node, the {} connections split between them), {} s measured after {} s of \
                 warm-up, {} interleaved rounds; one actix worker per server process. req/s: \
                 median over rounds (min–max); latency percentiles over every request of every \
                 round; errors: socket errors, timeouts and statuses >= 400; ratio: paired by \
                 round, median; server CPU µs/req: user + system CPU time of the contender's \
                 server processes (the peer's include redis-server) per request.\n",
                t.connections, t.connections, t.duration_s, t.warmup_s, t.rounds
            );
            table(&mut md, t);
        }

        if let Some(g) = &self.gateway {
            gateway_section(&mut md, g, self.python.as_deref());
        }

        if let Some(mem) = &self.memory {
            let _ = writeln!(md, "\n## Memory per session\n");
            let _ = writeln!(
                md,
                "{} sessions of {:.0} bytes of JSON each (after {} warm-up sessions on each \
                 side). sessionmesh: one node, replication factor 1 (one copy), growth of the \
                 process's VmRSS. Redis: the same data through actix-session (key {} bytes, \
                 stored value {} bytes for a sample session).\n",
                mem.sessions,
                mem.payload_bytes_avg,
                mem.warmup_sessions,
                mem.redis_sample_key_bytes,
                mem.redis_sample_value_bytes
            );
            let _ = writeln!(
                md,
                "| measure | before | after | bytes/session | load time |"
            );
            let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: |");
            for (name, s) in [
                ("sessionmesh node VmRSS", &mem.sessionmesh_rss),
                ("Redis used_memory", &mem.redis_used_memory),
                ("Redis used_memory_rss", &mem.redis_rss),
            ] {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {:.0} | {:.1} s |",
                    mib(s.before_bytes),
                    mib(s.after_bytes),
                    s.bytes_per_session,
                    s.load_seconds
                );
            }
        }

        if let Some(d) = &self.dynamics {
            let _ = writeln!(md, "\n## Cluster dynamics\n");
            let _ = writeln!(md, "Gossip interval {:.0} ms.\n", d.gossip_interval_ms);
            if !d.join.is_empty() {
                let _ = writeln!(
                    md,
                    "Join: from `sessionmesh::start` of the newcomer until every node's ring \
                     (the newcomer's too) holds all nodes; in-process nodes.\n"
                );
                let _ = writeln!(md, "| nodes | trials (ms) | median ms | worst ms |");
                let _ = writeln!(md, "| ---: | --- | ---: | ---: |");
                for j in &d.join {
                    let trials: Vec<String> =
                        j.trials_ms.iter().map(|t| format!("{t:.0}")).collect();
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.0} | {:.0} |",
                        j.nodes,
                        trials.join(", "),
                        j.median_ms,
                        j.max_ms
                    );
                }
            }
            if !d.kill.is_empty() {
                let _ = writeln!(
                    md,
                    "\nkill -9 of one `sessionmesh` process (replication factor 2): detection = \
                     until every survivor's ring dropped it; takeover = until every session it \
                     owned is readable (200) through the survivors.\n"
                );
                let _ = writeln!(
                    md,
                    "| nodes | detection per trial (ms) | detection median ms | takeover |"
                );
                let _ = writeln!(md, "| ---: | --- | ---: | --- |");
                for k in &d.kill {
                    let trials: Vec<String> = k
                        .trials
                        .iter()
                        .map(|t| format!("{:.0}", t.detection_ms))
                        .collect();
                    let takeover: Vec<String> = k
                        .trials
                        .iter()
                        .map(|t| match t.takeover_ms {
                            Some(ms) => format!("{ms:.0} ms"),
                            None => format!(
                                "not within {:.0} s ({}/{} readable)",
                                k.takeover_timeout_s, t.takeover_readable, t.takeover_sessions
                            ),
                        })
                        .collect();
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.0} | {} |",
                        k.nodes,
                        trials.join(", "),
                        k.detection_median_ms,
                        takeover.join("; ")
                    );
                }
            }
        }

        if !self.ring_micro.is_empty() {
            let _ = writeln!(
                md,
                "\n## Micro-benchmarks (criterion, `cargo bench -p bench --bench ring` and `--bench lease`)\n"
            );
            let _ = writeln!(md, "| benchmark | mean |");
            let _ = writeln!(md, "| --- | ---: |");
            for micro in &self.ring_micro {
                let mean = if micro.mean_ns >= 1e6 {
                    format!("{:.2} ms", micro.mean_ns / 1e6)
                } else if micro.mean_ns >= 1e3 {
                    format!("{:.2} µs", micro.mean_ns / 1e3)
                } else {
                    format!("{:.1} ns", micro.mean_ns)
                };
                let _ = writeln!(md, "| `{}` | {mean} |", micro.name);
            }
        }

        if !self.targets.is_empty() {
            let _ = writeln!(md, "\n## Targets (issues 5, 13 and 15)\n");
            let _ = writeln!(md, "| target | measured | goal | holds |");
            let _ = writeln!(md, "| --- | ---: | --- | --- |");
            for t in &self.targets {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.measured
                        .map_or("not reached".to_owned(), |v| format!("{v:.2}")),
                    t.goal,
                    match t.holds {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "-",
                    }
                );
            }
        }
        md
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        Ok(())
    }
}
