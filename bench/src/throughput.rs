//! Throughput and latency: the peer, the plain upper bound and sessionmesh, under
//! the same load (`wrk -t1 -c32` per entry point, one actix worker per server
//! process), in interleaved rounds.
//!
//! Every contender runs for the whole benchmark; each round runs every scenario
//! once (a short warm-up run, discarded, then the measured run), and round `r`
//! starts at scenario `r` of the list, so that drift of the machine (another
//! build, thermal state, a growing store) hits every contender alike. Ratios are
//! paired: a scenario's req/s divided by its reference's req/s in the same round,
//! then the median over rounds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::page::LOGIN_OK;
use crate::procs::{self, Peer, Redis, Secrets, SmNode, SmOptions};
use crate::stats::{median, Histogram, LatencySummary};
use crate::wrk::{self, Errors, WrkRun, WrkSpec};

/// The name every benchmark login uses, so that every read page is the same size.
pub const NAME: &str = "bench";

#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    /// Sessions used in turn by the round-robin scenarios.
    pub rr_sessions: usize,
    pub sessionmesh_bin: PathBuf,
    pub peer_bin: PathBuf,
    /// `bench-app`: the peer's pages as an application on sessionmesh.
    pub app_bin: PathBuf,
    /// Scenario keys to run (all when empty).
    pub only: Vec<String>,
    pub script_dir: PathBuf,
    pub gossip_interval: Option<String>,
}

/// What a scenario's responses must look like (checked before and after the runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// 200 and the page greets [`NAME`].
    Greets,
    /// 200, `Login successful.` and a `SESSION` cookie.
    LoginCookie,
    /// 200 and `Login successful.` (an application without sessions).
    LoginOk,
}

/// One measured scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub key: &'static str,
    pub label: &'static str,
    /// `wrk` processes run at once; their connections add up to `connections`.
    pub(crate) specs: Vec<WrkSpec>,
    pub(crate) expect: Expect,
    /// (header, value) that the first entry's answer must carry.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The server processes of this contender (Redis included for the peer):
    /// their CPU time per request is reported.
    pub(crate) pids: Vec<u32>,
    /// Named parts of `pids` whose CPU time per request is reported too
    /// (e.g. the sessionmesh nodes and the application of a gateway).
    pub(crate) cpu_groups: Vec<(&'static str, Vec<u32>)>,
}

/// The contenders, running.
pub struct Contenders {
    pub redis: Redis,
    /// `peer1..peer3`: actix-session + the shared Redis; `peer1` is the single-entry one.
    pub peers: Vec<Peer>,
    pub plain: Peer,
    /// `sm1..sm3`, replication factor 2.
    pub sm: Vec<SmNode>,
    /// `ap1..ap3`: `bench-app --app-mode extractor`, replication factor 2.
    pub app: Vec<SmNode>,
    /// `as1..as3`: `bench-app --app-mode store`, replication factor 2.
    pub app_store: Vec<SmNode>,
}

impl Contenders {
    pub async fn start(options: &Options, http: &reqwest::Client) -> anyhow::Result<Contenders> {
        let redis = Redis::start()?;
        let key = procs::random_hex(64);
        let peers = (1..=3)
            .map(|i| {
                Peer::start(
                    &options.peer_bin,
                    &format!("pr{i}"),
                    Some(&redis.url()),
                    &key,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plain = Peer::start(&options.peer_bin, "pl1", None, &key)?;
        let sm_options = SmOptions {
            bin: options.sessionmesh_bin.clone(),
            secrets: Secrets::random(),
            replication_factor: 2,
            gossip_interval: options.gossip_interval.clone(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        };
        let sm = procs::start_cluster(&sm_options, "sm", 3, http).await?;
        // The applications: the same node settings, each cluster its own secrets;
        // the store mode's nodes share a cookie key, as the peer processes do.
        let app_options = |mode: &str| SmOptions {
            bin: options.app_bin.clone(),
            secrets: Secrets::random(),
            extra_args: vec!["--app-mode".to_owned(), mode.to_owned()],
            extra_env: vec![("BENCH_PEER_COOKIE_KEY".to_owned(), key.clone())],
            ..sm_options.clone()
        };
        let app = procs::start_cluster(&app_options("extractor"), "ap", 3, http).await?;
        let app_store = procs::start_cluster(&app_options("store"), "as", 3, http).await?;
        Ok(Contenders {
            redis,
            peers,
            plain,
            sm,
            app,
            app_store,
        })
    }
}

/// Logs in as [`NAME`] at `url` and returns the `SESSION=...` cookie pair.
pub(crate) async fn login(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{url}/login?name={NAME}")).send().await?;
    let status = response.status();
    let cookie = procs::set_cookie(&response, "SESSION");
    let body = response.text().await?;
    if !status.is_success() || body != LOGIN_OK {
        bail!("login at {url}: {status} {body}");
    }
    cookie.with_context(|| format!("login at {url} set no SESSION cookie"))
}

/// Builds the scenarios over running contenders (logs in the sessions they read).
pub async fn scenarios(
    c: &Contenders,
    options: &Options,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Scenario>> {
    let conns = options.connections;
    let base = |p: &Peer| format!("http://{}", p.addr);
    let sm_base = |n: &SmNode| format!("http://{}", n.public);
    let one = |url: String, cookies: Vec<String>| {
        vec![WrkSpec {
            url,
            connections: conns,
            duration: options.duration,
            cookies,
        }]
    };
    let spread = |bases: Vec<String>, cookies: Vec<String>| spread(bases, "/", cookies, options);

    let peer_cookie = login(http, &base(&c.peers[0])).await?;
    let sm_cookie = login(http, &sm_base(&c.sm[0])).await?;
    let mut peer_rr = Vec::new();
    let mut sm_rr = Vec::new();
    for i in 0..options.rr_sessions.max(1) {
        peer_rr.push(login(http, &base(&c.peers[i % c.peers.len()])).await?);
        // A node mints ids it owns: sessions are spread evenly over the owners.
        sm_rr.push(login(http, &sm_base(&c.sm[i % c.sm.len()])).await?);
    }
    let login_path = format!("/login?name={NAME}");
    let peer_pids: Vec<u32> = c
        .peers
        .iter()
        .map(|p| p.proc.pid())
        .chain([c.redis.proc.pid()])
        .collect();
    let sm_pids: Vec<u32> = c.sm.iter().map(|n| n.proc.pid()).collect();
    let (sm1, sm2) = (&c.sm[0].id, &c.sm[1].id);
    let mut apps = Vec::new();
    for (nodes, prefix) in [(&c.app, "app"), (&c.app_store, "store")] {
        apps.extend(app_scenarios(nodes, prefix, options, http).await?);
    }
    let all = vec![
        Scenario {
            key: "plain",
            label: "plain actix-web, same page, no session (upper bound)",
            specs: one(format!("{}/", base(&c.plain)), vec![]),
            expect: Expect::Greets,
            headers: vec![],
            pids: vec![c.plain.proc.pid()],
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "peer_read",
            label: "peer: actix-session + Redis, session read (GET /)",
            specs: one(format!("{}/", base(&c.peers[0])), vec![peer_cookie.clone()]),
            expect: Expect::Greets,
            headers: vec![],
            pids: vec![c.peers[0].proc.pid(), c.redis.proc.pid()],
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "peer_rr_read",
            label: "peer: 3 app processes + 1 Redis, round-robin entry, session read",
            specs: spread(c.peers.iter().map(base).collect(), peer_rr),
            expect: Expect::Greets,
            headers: vec![],
            pids: peer_pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "peer_login",
            label: "peer: login write (GET /login?name=)",
            specs: one(format!("{}{login_path}", base(&c.peers[0])), vec![]),
            expect: Expect::LoginCookie,
            headers: vec![],
            pids: vec![c.peers[0].proc.pid(), c.redis.proc.pid()],
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "sm_owner_read",
            label: "sessionmesh: session read served by its owner",
            specs: one(format!("{}/", sm_base(&c.sm[0])), vec![sm_cookie.clone()]),
            expect: Expect::Greets,
            headers: vec![("x-served-by", sm1.clone())],
            pids: sm_pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "sm_forwarded_read",
            label: "sessionmesh: session read entering a non-owner (forwarded)",
            specs: one(format!("{}/", sm_base(&c.sm[1])), vec![sm_cookie]),
            expect: Expect::Greets,
            headers: vec![("x-served-by", sm1.clone()), ("x-entry-node", sm2.clone())],
            pids: sm_pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "sm_rr_read",
            label: "sessionmesh: 3 nodes, round-robin entry, session read",
            specs: spread(c.sm.iter().map(sm_base).collect(), sm_rr),
            expect: Expect::Greets,
            headers: vec![],
            pids: sm_pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: "sm_login_rf2",
            label: "sessionmesh: login write, replication factor 2",
            specs: one(format!("{}{login_path}", sm_base(&c.sm[0])), vec![]),
            expect: Expect::LoginCookie,
            headers: vec![("x-served-by", sm1.clone())],
            pids: sm_pids.clone(),
            cpu_groups: Vec::new(),
        },
    ];
    Ok(all
        .into_iter()
        .chain(apps)
        .filter(|s| options.only.is_empty() || options.only.iter().any(|k| k == s.key))
        .collect())
}

/// The scenarios of an application on sessionmesh (issue 13), as the `sm_*` ones:
/// `prefix` is `app` (the `sessionmesh::actix` extractor, whose answers also name
/// the node the session was read from in `x-session-node`) or `store`
/// (actix-session with `MeshSessionStore`). A login mints an id its entry node
/// owns, so the session logged in at node 1 is read from memory there and over
/// a peer link through node 2.
async fn app_scenarios(
    nodes: &[SmNode],
    prefix: &'static str,
    options: &Options,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Scenario>> {
    let conns = options.connections;
    let base = |n: &SmNode| format!("http://{}", n.public);
    let one = |url: String, cookies: Vec<String>| {
        vec![WrkSpec {
            url,
            connections: conns,
            duration: options.duration,
            cookies,
        }]
    };
    let cookie = login(http, &base(&nodes[0])).await?;
    let mut rr = Vec::new();
    for i in 0..options.rr_sessions.max(1) {
        rr.push(login(http, &base(&nodes[i % nodes.len()])).await?);
    }
    let n = nodes.len() as u32;
    let spread = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| WrkSpec {
            url: format!("{}/", base(node)),
            connections: conns / n + u32::from((i as u32) < conns % n),
            duration: options.duration,
            cookies: rr.clone(),
        })
        .collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.proc.pid()).collect();
    let (n1, n2) = (nodes[0].id.clone(), nodes[1].id.clone());
    let session_node = |id: &String| match prefix {
        "app" => vec![("x-session-node", id.clone())],
        _ => vec![],
    };
    let (keys, labels): ([&'static str; 4], [&'static str; 4]) = match prefix {
        "app" => (
            ["app_owner_read", "app_forwarded_read", "app_rr_read", "app_login_rf2"],
            [
                "app on sessionmesh (extractor): session read, owner entry",
                "app on sessionmesh (extractor): session read, non-owner entry",
                "app on sessionmesh (extractor): 3 nodes, round-robin entry, session read",
                "app on sessionmesh (extractor): login write, replication factor 2",
            ],
        ),
        _ => (
            ["store_owner_read", "store_forwarded_read", "store_rr_read", "store_login_rf2"],
            [
                "app on sessionmesh (actix-session store): session read, owner entry",
                "app on sessionmesh (actix-session store): session read, non-owner entry",
                "app on sessionmesh (actix-session store): 3 nodes, round-robin entry, session read",
                "app on sessionmesh (actix-session store): login write, replication factor 2",
            ],
        ),
    };
    let with = |mut a: Vec<(&'static str, String)>, b: Vec<(&'static str, String)>| {
        a.extend(b);
        a
    };
    Ok(vec![
        Scenario {
            key: keys[0],
            label: labels[0],
            specs: one(format!("{}/", base(&nodes[0])), vec![cookie.clone()]),
            expect: Expect::Greets,
            headers: with(vec![("x-served-by", n1.clone())], session_node(&n1)),
            pids: pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: keys[1],
            label: labels[1],
            specs: one(format!("{}/", base(&nodes[1])), vec![cookie]),
            expect: Expect::Greets,
            headers: with(vec![("x-served-by", n2)], session_node(&n1)),
            pids: pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: keys[2],
            label: labels[2],
            specs: spread,
            expect: Expect::Greets,
            headers: vec![],
            pids: pids.clone(),
            cpu_groups: Vec::new(),
        },
        Scenario {
            key: keys[3],
            label: labels[3],
            specs: one(format!("{}/login?name={NAME}", base(&nodes[0])), vec![]),
            expect: Expect::LoginCookie,
            headers: vec![("x-served-by", n1)],
            pids,
            cpu_groups: Vec::new(),
        },
    ])
}

/// Sends one request as each wrk process of `s` would, and checks the answer.
async fn check(http: &reqwest::Client, s: &Scenario) -> anyhow::Result<()> {
    for (i, spec) in s.specs.iter().enumerate() {
        for cookie in spec.cookies.iter().take(3).map(Some).chain(
            // A scenario without cookies is checked once, cookie-less.
            spec.cookies.is_empty().then_some(None),
        ) {
            let mut request = http.get(&spec.url);
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let has_cookie = procs::set_cookie(&response, "SESSION").is_some();
            let body = response.text().await?;
            let ok = status.is_success()
                && match s.expect {
                    Expect::Greets => body.contains(&format!(">Hello, {NAME}<")),
                    Expect::LoginCookie => body == LOGIN_OK && has_cookie,
                    Expect::LoginOk => body == LOGIN_OK,
                };
            if !ok {
                bail!("{}: {} answered {status}: {body}", s.key, spec.url);
            }
            if i == 0 {
                for (name, want) in &s.headers {
                    let got = headers.get(*name).and_then(|v| v.to_str().ok());
                    if got != Some(want.as_str()) {
                        bail!("{}: {name} is {got:?}, expected {want}", s.key);
                    }
                }
            }
        }
    }
    Ok(())
}

/// One scenario in one round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundResult {
    pub round: usize,
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
}

/// A scenario over all rounds.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub key: &'static str,
    pub label: &'static str,
    pub wrk_processes: usize,
    pub connections: u32,
    pub rounds: Vec<RoundResult>,
    pub median_rps: f64,
    pub min_rps: f64,
    pub max_rps: f64,
    /// Percentiles over every measured request of every round.
    pub latency: LatencySummary,
    pub errors: Errors,
    /// Response bytes (headers and body) per request, as wrk counted them.
    pub bytes_per_response: f64,
    /// CPU time (user + system) of the contender's server processes per request,
    /// in microseconds: what a request costs, whatever else runs on the machine.
    pub server_cpu_us_per_request: f64,
    /// The same for named parts of those processes, when the scenario names
    /// them (e.g. `sessionmesh nodes` and `gunicorn` of a gateway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_split: Vec<CpuShare>,
}

/// CPU time per request of a named part of a contender's server processes.
#[derive(Clone, Debug, Serialize)]
pub struct CpuShare {
    pub what: &'static str,
    pub us_per_request: f64,
}

/// Everything the throughput part measured.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: u32,
    pub scenarios: Vec<ScenarioResult>,
}

impl Throughput {
    pub fn get(&self, key: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.key == key)
    }

    /// Median over rounds of `a`'s req/s over `b`'s req/s in the same round.
    pub fn paired_ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        let ratios: Vec<f64> = a
            .rounds
            .iter()
            .filter_map(|ra| {
                let rb = b.rounds.iter().find(|rb| rb.round == ra.round)?;
                (rb.rps > 0.0).then(|| ra.rps / rb.rps)
            })
            .collect();
        median(&ratios)
    }
}

/// User + system CPU time of `pids` so far, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
        total += field(11) + field(12);
    }
    Ok(total)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn merge(runs: &[WrkRun]) -> (f64, u64, u64, Errors, Histogram) {
    let mut errors = Errors::default();
    let mut hist = Histogram::default();
    let (mut rps, mut requests, mut bytes) = (0.0, 0, 0);
    for run in runs {
        rps += run.rps();
        requests += run.requests;
        bytes += run.bytes;
        errors.add(&run.errors);
        hist.merge(&run.latency);
    }
    (rps, requests, bytes, errors, hist)
}

/// Runs every scenario `options.rounds` times, interleaved.
pub async fn run(
    options: &Options,
    scenarios: &[Scenario],
    http: &reqwest::Client,
) -> anyhow::Result<Throughput> {
    for s in scenarios {
        check(http, s).await?;
    }
    struct Acc {
        rounds: Vec<RoundResult>,
        hist: Histogram,
        errors: Errors,
        requests: u64,
        bytes: u64,
        cpu_ticks: u64,
        group_ticks: Vec<u64>,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    let n = scenarios.len();
    for round in 0..options.rounds {
        for k in 0..n {
            let s = &scenarios[(round + k) % n];
            if !options.warmup.is_zero() {
                let warm: Vec<WrkSpec> = s
                    .specs
                    .iter()
                    .map(|spec| WrkSpec {
                        duration: options.warmup,
                        ..spec.clone()
                    })
                    .collect();
                wrk::run_all(&warm, &options.script_dir).await?;
            }
            let cpu_before = cpu_ticks(&s.pids)?;
            let groups_before = s
                .cpu_groups
                .iter()
                .map(|(_, pids)| cpu_ticks(pids))
                .collect::<anyhow::Result<Vec<u64>>>()?;
            let runs = wrk::run_all(&s.specs, &options.script_dir).await?;
            let cpu = cpu_ticks(&s.pids)?.saturating_sub(cpu_before);
            let mut groups = Vec::with_capacity(groups_before.len());
            for ((_, pids), before) in s.cpu_groups.iter().zip(&groups_before) {
                groups.push(cpu_ticks(pids)?.saturating_sub(*before));
            }
            let (rps, requests, bytes, errors, hist) = merge(&runs);
            let p99 = hist.percentile(99.0).unwrap_or(0);
            eprintln!(
                "bench: round {}/{} {:<18} {:>9.0} req/s  p99 {:>6} us  errors {}",
                round + 1,
                options.rounds,
                s.key,
                rps,
                p99,
                errors.total()
            );
            let entry = acc.entry(s.key).or_insert_with(|| Acc {
                rounds: Vec::new(),
                hist: Histogram::default(),
                errors: Errors::default(),
                requests: 0,
                bytes: 0,
                cpu_ticks: 0,
                group_ticks: vec![0; s.cpu_groups.len()],
            });
            entry.rounds.push(RoundResult {
                round,
                rps,
                requests,
                errors: errors.total(),
            });
            entry.hist.merge(&hist);
            entry.errors.add(&errors);
            entry.requests += requests;
            entry.bytes += bytes;
            entry.cpu_ticks += cpu;
            for (total, ticks) in entry.group_ticks.iter_mut().zip(&groups) {
                *total += ticks;
            }
        }
    }
    // The sessions read must still be there after the load.
    for s in scenarios {
        check(http, s)
            .await
            .with_context(|| format!("after the runs, {}", s.key))?;
    }
    let ticks_per_second = clock_ticks_per_second();
    let results = scenarios
        .iter()
        .filter_map(|s| {
            let a = acc.remove(s.key)?;
            let per_request =
                |ticks: u64| ticks as f64 * 1e6 / ticks_per_second / a.requests.max(1) as f64;
            let mut rps: Vec<f64> = a.rounds.iter().map(|r| r.rps).collect();
            rps.sort_by(|x, y| x.total_cmp(y));
            Some(ScenarioResult {
                key: s.key,
                label: s.label,
                wrk_processes: s.specs.len(),
                connections: s.specs.iter().map(|w| w.connections).sum(),
                median_rps: median(&rps).unwrap_or(0.0),
                min_rps: rps.first().copied().unwrap_or(0.0),
                max_rps: rps.last().copied().unwrap_or(0.0),
                latency: a.hist.summary(),
                errors: a.errors,
                bytes_per_response: a.bytes as f64 / a.requests.max(1) as f64,
                server_cpu_us_per_request: per_request(a.cpu_ticks),
                cpu_split: s
                    .cpu_groups
                    .iter()
                    .zip(&a.group_ticks)
                    .map(|((what, _), ticks)| CpuShare {
                        what,
                        us_per_request: per_request(*ticks),
                    })
                    .collect(),
                rounds: a.rounds,
            })
        })
        .collect();
    Ok(Throughput {
        rounds: options.rounds,
        duration_s: options.duration.as_secs_f64(),
        warmup_s: options.warmup.as_secs_f64(),
        connections: options.connections,
        scenarios: results,
    })
}

/// Round robin over `bases`: one wrk process per entry point for `path`, the
/// connections split as evenly as possible (11 + 11 + 10 for 32), every
/// process using the same sessions (`cookies`) in turn.
pub fn spread(
    bases: Vec<String>,
    path: &str,
    cookies: Vec<String>,
    options: &Options,
) -> Vec<WrkSpec> {
    let (conns, n) = (options.connections, bases.len() as u32);
    bases
        .into_iter()
        .enumerate()
        .map(|(i, b)| WrkSpec {
            url: format!("{b}{path}"),
            connections: conns / n + u32::from((i as u32) < conns % n),
            duration: options.duration,
            cookies: cookies.clone(),
        })
        .collect()
}
