//! Gateway mode (issue 15): a Flask application with its usual Redis-backed
//! sessions (Flask-Session and Redis) against the same application behind
//! sessionmesh nodes in gateway mode with no Redis, and the application alone
//! without sessions (the baseline of the proxy's own cost).
//!
//! One application, `bench/flask/app.py`, in three session modes, each on
//! three gunicorn processes (the same gunicorn settings in every mode):
//!
//! - `fr1..fr3`: mode `redis`, one shared redis-server;
//! - `fg1..fg3`: mode `gateway`, each the `--upstream` of one of three
//!   sessionmesh nodes `gw1..gw3` (replication factor 2), one cluster;
//! - `fn1..fn3`: mode `none`.
//!
//! Every scenario enters round robin (one wrk per entry point, the
//! connections split 11 + 11 + 10), measured as the throughput part measures
//! (interleaved rounds, paired ratios, CPU per request of the contender's
//! processes), with the CPU split between the named parts of each setup.

use anyhow::{bail, Context};

use crate::page::LOGIN_OK;
use crate::procs::{self, Flask, FlaskOptions, Redis, Secrets, SmNode, SmOptions};
use crate::throughput::{self, Expect, Options, Scenario, NAME};

/// The contenders, running.
pub struct Contenders {
    /// The application's nodes first: they are dropped before their upstreams.
    pub nodes: Vec<SmNode>,
    pub gateway_apps: Vec<Flask>,
    pub redis_apps: Vec<Flask>,
    pub redis: Redis,
    pub alone: Vec<Flask>,
}

impl Contenders {
    pub async fn start(
        options: &Options,
        flask: &FlaskOptions,
        http: &reqwest::Client,
    ) -> anyhow::Result<Contenders> {
        let redis = Redis::start()?;
        let mut redis_apps = Vec::new();
        let mut gateway_apps = Vec::new();
        let mut alone = Vec::new();
        for i in 1..=3 {
            redis_apps.push(
                Flask::start(
                    flask,
                    &format!("fr{i}"),
                    "redis",
                    Some(redis.url().as_str()),
                    http,
                )
                .await?,
            );
            gateway_apps.push(Flask::start(flask, &format!("fg{i}"), "gateway", None, http).await?);
            alone.push(Flask::start(flask, &format!("fn{i}"), "none", None, http).await?);
        }
        let base = SmOptions {
            bin: options.sessionmesh_bin.clone(),
            secrets: Secrets::random(),
            replication_factor: 2,
            gossip_interval: options.gossip_interval.clone(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        };
        let mut nodes: Vec<SmNode> = Vec::new();
        for (i, app) in gateway_apps.iter().enumerate() {
            let node_options = SmOptions {
                extra_args: vec!["--upstream".to_owned(), app.url("")],
                ..base.clone()
            };
            let seeds: Vec<_> = nodes.first().map(|f| vec![f.gossip]).unwrap_or_default();
            nodes.push(SmNode::start(
                &node_options,
                &format!("gw{}", i + 1),
                &seeds,
            )?);
        }
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        procs::wait_rings(http, &nodes, &ids, std::time::Duration::from_secs(60)).await?;
        Ok(Contenders {
            nodes,
            gateway_apps,
            redis_apps,
            redis,
            alone,
        })
    }
}

fn pids(apps: &[Flask]) -> Vec<u32> {
    apps.iter().flat_map(Flask::pids).collect()
}

/// The sessions the read scenarios use in turn, with the node each was
/// logged in at (which owns it).
pub struct Sessions {
    redis: Vec<String>,
    gateway: Vec<(String, usize)>,
}

/// Logs in the sessions of the read scenarios, round robin over the entry
/// points (a gateway node serves a guest's login itself and mints an id it
/// owns: the sessions are owned evenly by the three nodes).
pub async fn sessions(
    c: &Contenders,
    options: &Options,
    http: &reqwest::Client,
) -> anyhow::Result<Sessions> {
    let mut s = Sessions {
        redis: Vec::new(),
        gateway: Vec::new(),
    };
    for i in 0..options.rr_sessions.max(1) {
        let app = &c.redis_apps[i % c.redis_apps.len()];
        s.redis.push(throughput::login(http, &app.url("")).await?);
        let k = i % c.nodes.len();
        s.gateway
            .push((throughput::login(http, &c.nodes[k].url("")).await?, k));
    }
    Ok(s)
}

/// Builds the scenarios over running contenders.
pub fn scenarios(c: &Contenders, s: &Sessions, options: &Options) -> Vec<Scenario> {
    let spread = |bases: Vec<String>, path: &str, cookies: Vec<String>| {
        throughput::spread(bases, path, cookies, options)
    };
    let flask_bases = |apps: &[Flask]| apps.iter().map(|a| a.url("")).collect::<Vec<_>>();
    let node_bases: Vec<String> = c.nodes.iter().map(|n| n.url("")).collect();
    let login = format!("/login?name={NAME}");
    let gw_cookies: Vec<String> = s.gateway.iter().map(|(c, _)| c.clone()).collect();
    let redis_pids: Vec<u32> = pids(&c.redis_apps)
        .into_iter()
        .chain([c.redis.proc.pid()])
        .collect();
    let node_pids: Vec<u32> = c.nodes.iter().map(|n| n.proc.pid()).collect();
    let gw_pids: Vec<u32> = node_pids
        .iter()
        .copied()
        .chain(pids(&c.gateway_apps))
        .collect();
    let redis_groups = vec![
        ("gunicorn", pids(&c.redis_apps)),
        ("redis-server", vec![c.redis.proc.pid()]),
    ];
    let gw_groups = vec![
        ("sessionmesh nodes", node_pids),
        ("gunicorn", pids(&c.gateway_apps)),
    ];
    let alone_groups = vec![("gunicorn", pids(&c.alone))];
    let all = vec![
        Scenario {
            key: "flask_redis_rr_read",
            label: "Flask + Flask-Session + Redis: 3 gunicorn + 1 Redis, round robin, session read",
            specs: spread(flask_bases(&c.redis_apps), "/", s.redis.clone()),
            expect: Expect::Greets,
            headers: vec![],
            pids: redis_pids.clone(),
            cpu_groups: redis_groups.clone(),
        },
        Scenario {
            key: "flask_redis_rr_login",
            label: "Flask + Flask-Session + Redis: round robin, login (new session)",
            specs: spread(flask_bases(&c.redis_apps), &login, vec![]),
            expect: Expect::LoginCookie,
            headers: vec![],
            pids: redis_pids,
            cpu_groups: redis_groups,
        },
        Scenario {
            key: "gw_rr_read",
            label: "Flask behind 3 sessionmesh gateway nodes (rf 2, no Redis): round robin, session read",
            specs: spread(node_bases.clone(), "/", gw_cookies.clone()),
            expect: Expect::Greets,
            headers: vec![],
            pids: gw_pids.clone(),
            cpu_groups: gw_groups.clone(),
        },
        Scenario {
            key: "gw_rr_login",
            label: "Flask behind 3 sessionmesh gateway nodes: round robin, login (new session, rf 2)",
            specs: spread(node_bases, &login, vec![]),
            expect: Expect::LoginCookie,
            headers: vec![("x-served-by", c.nodes[0].id.clone())],
            pids: gw_pids,
            cpu_groups: gw_groups,
        },
        Scenario {
            key: "flask_none_rr_read",
            label: "Flask alone, no session (baseline): round robin, the same page and requests",
            // The gateway's requests, cookies included (ignored here).
            specs: spread(flask_bases(&c.alone), "/", gw_cookies),
            expect: Expect::Greets,
            headers: vec![],
            pids: pids(&c.alone),
            cpu_groups: alone_groups.clone(),
        },
        Scenario {
            key: "flask_none_rr_login",
            label: "Flask alone, no session (baseline): round robin, login (nothing stored)",
            specs: spread(flask_bases(&c.alone), &login, vec![]),
            expect: Expect::LoginOk,
            headers: vec![],
            pids: pids(&c.alone),
            cpu_groups: alone_groups,
        },
    ];
    all.into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|k| k == s.key))
        .collect()
}

/// Every gateway session through every node: the page greets [`NAME`], the
/// node that owns it served it (`x-served-by`) with its own application (the
/// page's footer names `fg<k>`), and a login through each node answers
/// [`LOGIN_OK`] with a cookie. Run before and after the measurements.
pub async fn check_routing(
    c: &Contenders,
    s: &Sessions,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    for (cookie, owner) in &s.gateway {
        let owner_id = &c.nodes[*owner].id;
        let app_id = &c.gateway_apps[*owner].id;
        for (entry, node) in c.nodes.iter().enumerate() {
            let response = http
                .get(node.url("/"))
                .header("cookie", cookie)
                .send()
                .await?;
            let status = response.status();
            let served_by = response
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let entry_node = response
                .headers()
                .get("x-entry-node")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await?;
            let footer = format!("<code id=\"served-by\">{app_id}</code>");
            if !status.is_success()
                || !body.contains(&format!(">Hello, {NAME}<"))
                || !body.contains(&footer)
                || served_by.as_deref() != Some(owner_id.as_str())
            {
                bail!(
                    "gateway read through {} of a session owned by {owner_id}: {status}, \
                     x-served-by {served_by:?}, body {body}",
                    node.id
                );
            }
            let want_entry = (entry != *owner).then_some(node.id.as_str());
            if entry_node.as_deref() != want_entry {
                bail!(
                    "gateway read through {}: x-entry-node {entry_node:?}, expected {want_entry:?}",
                    node.id
                );
            }
        }
    }
    for node in &c.nodes {
        let response = http
            .get(node.url(&format!("/login?name={NAME}")))
            .send()
            .await?;
        let status = response.status();
        let cookie = procs::set_cookie(&response, "SESSION");
        let body = response.text().await?;
        if !status.is_success() || body != LOGIN_OK || cookie.is_none() {
            bail!("gateway login through {}: {status} {body}", node.id);
        }
    }
    Ok(())
}

/// The whole gateway part: start, check, measure, check again.
pub async fn run(
    options: &Options,
    flask: &FlaskOptions,
    http: &reqwest::Client,
) -> anyhow::Result<throughput::Throughput> {
    let contenders = Contenders::start(options, flask, http).await?;
    let sessions = sessions(&contenders, options, http).await?;
    check_routing(&contenders, &sessions, http)
        .await
        .context("before the runs")?;
    let scenarios = scenarios(&contenders, &sessions, options);
    let result = throughput::run(options, &scenarios, http).await?;
    check_routing(&contenders, &sessions, http)
        .await
        .context("after the runs")?;
    Ok(result)
}
