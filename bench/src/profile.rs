//! Where a request spends its time: `perf record` (software `cpu-clock`
//! sampling with DWARF call graphs: this machine's perf has no hardware counters)
//! on the node processes while wrk drives the same load as the benchmark.
//!
//! Two 3-node clusters, replication factor 2, as in the throughput part: the
//! `sessionmesh` binary (`sm_*`) and `bench-app --app-mode extractor` (`app_*`,
//! the peer's pages on the `sessionmesh::actix` extractor). The cases carry the
//! keys of the throughput scenarios they profile:
//!
//! - `sm_owner_read`, `app_owner_read`: wrk → node 1 (owns the session); node 1
//!   is sampled.
//! - `sm_forwarded_read`: wrk → node 2 → node 1; both are sampled.
//! - `sm_login_rf2`, `app_login_rf2`: `GET /login?name=bench` without a cookie
//!   on node 1, which mints ids it owns and copies every new session to one of
//!   the two others; all three are sampled (`owner`, `replica2`, `replica3`).
//!
//! Each profile is written as perf's text report (self time per symbol,
//! inclusive time with callers, and samples per thread) under
//! `<out>/profile/<case>-<role>.txt`, with its `perf.data` beside it.
//! `--scenarios` picks cases by key, e.g. `--scenarios app_login_rf2`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::procs::{self, Secrets, SmNode, SmOptions};
use crate::throughput::NAME;
use crate::wrk::{self, WrkSpec};

#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub connections: u32,
    pub sessionmesh_bin: PathBuf,
    /// `bench-app`, run as `--app-mode extractor`.
    pub app_bin: PathBuf,
    /// Cases to profile, by key (empty: all).
    pub only: Vec<String>,
    pub out: PathBuf,
}

async fn perf_record(pid: u32, seconds: u64, data: &Path) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "999"])
        .args(["--call-graph", "dwarf,32768", "-p", &pid.to_string(), "-o"])
        .arg(data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running perf record (Debian package linux-perf)")?;
    if !status.success() {
        bail!("perf record failed: {status}");
    }
    Ok(())
}

/// perf's text reports of `data`: flat (self) and inclusive (children).
async fn perf_report(data: &Path, text: &Path) -> anyhow::Result<()> {
    let mut all = String::new();
    for (title, args) in [
        (
            "self time per symbol",
            vec!["--no-children", "--sort", "dso,symbol", "-g", "none"],
        ),
        (
            "inclusive time per symbol (children included)",
            vec!["--children", "--sort", "symbol", "-g", "none"],
        ),
        (
            "samples per thread",
            vec!["--no-children", "--sort", "pid", "-g", "none"],
        ),
    ] {
        let output = tokio::process::Command::new("perf")
            .args(["report", "--stdio", "--percent-limit", "0.7", "-i"])
            .arg(data)
            .args(&args)
            .output()
            .await?;
        all.push_str(&format!("##### {title}\n"));
        all.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    std::fs::write(text, all)?;
    Ok(())
}

/// One profiled case: wrk on `target` at `path` (with `cookie`, if any), the
/// processes of `sampled` recorded.
struct Case<'a> {
    key: &'static str,
    target: &'a SmNode,
    path: String,
    cookie: Option<String>,
    sampled: Vec<(&'static str, &'a SmNode)>,
}

async fn login(http: &reqwest::Client, node: &SmNode) -> anyhow::Result<String> {
    let response = http
        .get(node.url(&format!("/login?name={NAME}")))
        .send()
        .await?;
    procs::set_cookie(&response, "SESSION").context("login set no cookie")
}

pub async fn run(options: &Options, http: &reqwest::Client) -> anyhow::Result<Vec<PathBuf>> {
    let dir = options.out.join("profile");
    std::fs::create_dir_all(&dir)?;
    let wanted = |key: &str| options.only.is_empty() || options.only.iter().any(|k| k == key);
    let sm_options = SmOptions {
        bin: options.sessionmesh_bin.clone(),
        secrets: Secrets::random(),
        replication_factor: 2,
        gossip_interval: None,
        extra_args: Vec::new(),
        extra_env: Vec::new(),
    };
    let app_options = SmOptions {
        bin: options.app_bin.clone(),
        secrets: Secrets::random(),
        extra_args: vec!["--app-mode".to_owned(), "extractor".to_owned()],
        ..sm_options.clone()
    };
    let sm_keys = ["sm_owner_read", "sm_forwarded_read", "sm_login_rf2"];
    let app_keys = ["app_owner_read", "app_login_rf2"];
    let sm: Vec<SmNode> = match sm_keys.iter().any(|k| wanted(k)) {
        true => procs::start_cluster(&sm_options, "p", 3, http).await?,
        false => Vec::new(),
    };
    let app: Vec<SmNode> = match app_keys.iter().any(|k| wanted(k)) {
        true => procs::start_cluster(&app_options, "q", 3, http).await?,
        false => Vec::new(),
    };
    let login_path = format!("/login?name={NAME}");
    let mut cases = Vec::new();
    if let [owner, second, third] = &sm[..] {
        let cookie = login(http, owner).await?;
        cases.extend([
            Case {
                key: "sm_owner_read",
                target: owner,
                path: "/".into(),
                cookie: Some(cookie.clone()),
                sampled: vec![("owner", owner)],
            },
            Case {
                key: "sm_forwarded_read",
                target: second,
                path: "/".into(),
                cookie: Some(cookie),
                sampled: vec![("entry", second), ("owner", owner)],
            },
            Case {
                key: "sm_login_rf2",
                target: owner,
                path: login_path.clone(),
                cookie: None,
                sampled: vec![("owner", owner), ("replica2", second), ("replica3", third)],
            },
        ]);
    }
    if let [owner, second, third] = &app[..] {
        let cookie = login(http, owner).await?;
        cases.extend([
            Case {
                key: "app_owner_read",
                target: owner,
                path: "/".into(),
                cookie: Some(cookie),
                sampled: vec![("owner", owner)],
            },
            Case {
                key: "app_login_rf2",
                target: owner,
                path: login_path.clone(),
                cookie: None,
                sampled: vec![("owner", owner), ("replica2", second), ("replica3", third)],
            },
        ]);
    }
    let seconds = options.duration.as_secs().max(1);
    let mut written = Vec::new();
    for case in cases.iter().filter(|c| wanted(c.key)) {
        let spec = WrkSpec {
            url: case.target.url(&case.path),
            connections: options.connections,
            // Longer than the sampling, which starts after a second of load.
            duration: Duration::from_secs(seconds + 2),
            cookies: case.cookie.iter().cloned().collect(),
        };
        let load = wrk::run(&spec, &dir);
        let record = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut datas = Vec::new();
            let records = case.sampled.iter().map(|(role, node)| {
                let data = dir.join(format!("{}-{role}.perf.data", case.key));
                datas.push(data.clone());
                let pid = node.proc.pid();
                async move { perf_record(pid, seconds, &data).await }
            });
            for r in futures_util::future::join_all(records).await {
                r?;
            }
            anyhow::Ok(datas)
        };
        let (run, datas) = tokio::join!(load, record);
        let run = run?;
        eprintln!(
            "bench: profiled {}: {:.0} req/s, {} errors",
            case.key,
            run.rps(),
            run.errors.total()
        );
        for data in datas? {
            let text = data.with_extension("txt");
            perf_report(&data, &text).await?;
            written.push(text);
        }
    }
    Ok(written)
}
