//! Where a sessionmesh read spends its time: `perf record` (software `cpu-clock`
//! sampling with DWARF call graphs: this machine's perf has no hardware counters)
//! on the node processes while wrk drives the same load as the benchmark.
//!
//! - owner read: wrk → node A (owns the session); A is sampled.
//! - forwarded read: wrk → node B → node A; B (entry) and A (owner) are sampled.
//! - login (replication factor 2): wrk → node A, which copies every new session
//!   to node B; both are sampled.
//!
//! Each profile is written as perf's text report (self time per symbol, and
//! inclusive time with callers) under `<out>/profile/`.

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

pub async fn run(options: &Options, http: &reqwest::Client) -> anyhow::Result<Vec<PathBuf>> {
    let dir = options.out.join("profile");
    std::fs::create_dir_all(&dir)?;
    let sm = SmOptions {
        bin: options.sessionmesh_bin.clone(),
        secrets: Secrets::random(),
        replication_factor: 2,
        gossip_interval: None,
        extra_args: Vec::new(),
        extra_env: Vec::new(),
    };
    let nodes: Vec<SmNode> = procs::start_cluster(&sm, "p", 2, http).await?;
    let (owner, entry) = (&nodes[0], &nodes[1]);
    let response = http
        .get(owner.url(&format!("/login?name={NAME}")))
        .send()
        .await?;
    let cookie = procs::set_cookie(&response, "SESSION").context("login set no cookie")?;
    let seconds = options.duration.as_secs().max(1);
    let mut written = Vec::new();
    let login = format!("/login?name={NAME}");
    for (case, target, path, sampled) in [
        ("owner", owner, "/", vec![("owner", owner)]),
        (
            "forwarded",
            entry,
            "/",
            vec![("entry", entry), ("owner", owner)],
        ),
        (
            "login",
            owner,
            login.as_str(),
            vec![("owner", owner), ("replica", entry)],
        ),
    ] {
        let spec = WrkSpec {
            url: target.url(path),
            connections: options.connections,
            // Longer than the sampling, which starts after a second of load.
            duration: Duration::from_secs(seconds + 2),
            cookies: vec![cookie.clone()],
        };
        let load = wrk::run(&spec, &dir);
        let record = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut datas = Vec::new();
            let records = sampled.iter().map(|(role, node)| {
                let data = dir.join(format!("{case}-{role}.perf.data"));
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
            "bench: profiled {case}: {:.0} req/s, {} errors",
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
