//! `bench`: runs the benchmarks of issue 5 and writes `target/bench/results.{md,json}`.
//!
//! ```sh
//! scripts/bench.sh                 # builds everything in release, then runs this
//! target/release/bench --smoke     # seconds, not minutes: what the smoke test runs
//! target/release/bench --parts memory --sessions 100000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bench::report::{self, Machine, Report};
use bench::{dynamics, gateway, memory, procs, profile, throughput, tools};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Throughput,
    Memory,
    Dynamics,
    /// perf profiles of reads and logins, of the `sessionmesh` binary and of
    /// `bench-app` (not part of the default run; `--scenarios` picks cases).
    Profile,
    /// Flask + Flask-Session + Redis against the same Flask application behind
    /// sessionmesh's gateway mode, and alone without sessions (issue 15).
    Gateway,
}

/// Benchmarks sessionmesh against actix-web + actix-session + Redis (the peer) and
/// plain actix-web (the upper bound), all on loopback.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// A quick run with tiny durations and counts (the smoke test's).
    #[arg(long)]
    smoke: bool,
    /// Which parts to run (comma-separated); by default throughput, memory and
    /// dynamics (`profile` runs only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    parts: Vec<Part>,
    /// Interleaved rounds of every throughput scenario.
    #[arg(long)]
    rounds: Option<usize>,
    /// Measured seconds per scenario and round.
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Discarded warm-up per scenario and round.
    #[arg(long)]
    warmup: Option<humantime::Duration>,
    /// Connections per entry point (wrk -c).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Sessions for the memory comparison.
    #[arg(long)]
    sessions: Option<usize>,
    /// Cluster sizes for the join measurement (comma-separated).
    #[arg(long, value_delimiter = ',')]
    join_sizes: Vec<usize>,
    #[arg(long)]
    join_trials: Option<usize>,
    /// Cluster sizes for kill -9 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    kill_sizes: Vec<usize>,
    #[arg(long)]
    kill_trials: Option<usize>,
    /// How long to wait for a takeover after kill -9.
    #[arg(long)]
    takeover_timeout: Option<humantime::Duration>,
    /// Gossip interval of every sessionmesh node (the binary's default is 500ms).
    #[arg(long, default_value = "500ms")]
    gossip_interval: humantime::Duration,
    /// The sessionmesh binary (default: next to this one).
    #[arg(long)]
    sessionmesh_bin: Option<PathBuf>,
    /// The peer binary (default: `bench-peer` next to this one).
    #[arg(long)]
    peer_bin: Option<PathBuf>,
    /// The application on sessionmesh (default: `bench-app` next to this one).
    #[arg(long)]
    app_bin: Option<PathBuf>,
    /// Throughput scenarios to run, by key (comma-separated; default: all), e.g.
    /// `peer_read,peer_rr_read,peer_login,app_owner_read`; for `--parts
    /// profile`, the cases to profile (`sm_owner_read`, `sm_forwarded_read`,
    /// `sm_login_rf2`, `app_owner_read`, `app_login_rf2`).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The Python interpreter of the gateway part's Flask application (its
    /// packages, `bench/flask/requirements.txt`, are installed with its pip
    /// when missing).
    #[arg(long, default_value = "python3")]
    python: String,
    /// gunicorn worker processes of each Flask application process.
    #[arg(long, default_value_t = 1)]
    flask_workers: u32,
    /// Threads of each gunicorn worker (`--worker-class gthread`).
    #[arg(long, default_value_t = 4)]
    flask_threads: u32,
    /// Where results go (default: `target/bench` beside this binary's profile dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Criterion's output to include (default: `target/criterion`).
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

/// `target/` when this binary is `target/<profile>/bench`.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the bench binary has no target directory")
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn commit() -> String {
    let head = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // On a signal the run is dropped, and with it every child process (each is
    // killed when its handle drops): nothing is left running.
    tokio::select! {
        result = run(args) => result,
        signal = interrupted() => anyhow::bail!("stopped by {signal}"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let smoke = args.smoke;
    let parts = if args.parts.is_empty() {
        vec![
            Part::Throughput,
            Part::Memory,
            Part::Dynamics,
            Part::Gateway,
        ]
    } else {
        args.parts.clone()
    };
    let pick = |given: Option<humantime::Duration>, full: u64, quick: u64| -> Duration {
        given
            .map(Into::into)
            .unwrap_or(Duration::from_millis(if smoke { quick } else { full }))
    };
    let sessionmesh_bin = match &args.sessionmesh_bin {
        Some(p) => p.clone(),
        None => sibling("sessionmesh")?,
    };
    let peer_bin = match &args.peer_bin {
        Some(p) => p.clone(),
        None => sibling("bench-peer")?,
    };
    let app_bin = match &args.app_bin {
        Some(p) => p.clone(),
        None => sibling("bench-app")?,
    };
    for bin in [&sessionmesh_bin, &peer_bin, &app_bin] {
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build it first (scripts/bench.sh does), or pass its path",
            bin.display()
        );
    }
    let target = target_dir()?;
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    tools::ensure()?;

    let http = procs::http_client();
    let mut machine = Machine::read();
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let gossip: Duration = args.gossip_interval.into();

    let throughput_options = throughput::Options {
        rounds: args.rounds.unwrap_or(if smoke { 1 } else { 5 }),
        duration: pick(args.duration, 10_000, 1_000),
        warmup: pick(args.warmup, 2_000, 1_000),
        connections: args.connections,
        rr_sessions: 30,
        sessionmesh_bin: sessionmesh_bin.clone(),
        peer_bin: peer_bin.clone(),
        app_bin: app_bin.clone(),
        only: args.scenarios.clone(),
        script_dir: out.join("lua"),
        gossip_interval: Some(format!("{}ms", gossip.as_millis())),
    };
    let throughput = if parts.contains(&Part::Throughput) {
        let options = throughput_options.clone();
        let contenders = throughput::Contenders::start(&options, &http).await?;
        let scenarios = throughput::scenarios(&contenders, &options, &http).await?;
        let result = throughput::run(&options, &scenarios, &http).await?;
        drop(contenders);
        Some(result)
    } else {
        None
    };

    let gateway = if parts.contains(&Part::Gateway) {
        let flask = procs::FlaskOptions {
            python: args.python.clone(),
            app_dir: tools::flask_dir(),
            workers: args.flask_workers,
            threads: args.flask_threads,
        };
        tools::ensure_python_packages(&flask.python, &flask.app_dir.join("requirements.txt"))?;
        Some(gateway::run(&throughput_options, &flask, &http).await?)
    } else {
        None
    };

    let memory = if parts.contains(&Part::Memory) {
        let options = memory::Options {
            sessions: args
                .sessions
                .unwrap_or(if smoke { 2_000 } else { 1_000_000 }),
            concurrency: 32,
            sessionmesh_bin: sessionmesh_bin.clone(),
            peer_bin: peer_bin.clone(),
        };
        Some(memory::run(&options, &http).await?)
    } else {
        None
    };

    let dynamics = if parts.contains(&Part::Dynamics) {
        let sizes = |given: &Vec<usize>, full: &[usize], quick: &[usize]| {
            if !given.is_empty() {
                given.clone()
            } else if smoke {
                quick.to_vec()
            } else {
                full.to_vec()
            }
        };
        let options = dynamics::Options {
            join_sizes: sizes(&args.join_sizes, &[3, 10, 50], &[3]),
            join_trials: args.join_trials.unwrap_or(if smoke { 1 } else { 5 }),
            kill_sizes: sizes(&args.kill_sizes, &[3, 10], &[3]),
            kill_trials: args.kill_trials.unwrap_or(if smoke { 1 } else { 3 }),
            takeover_sessions: if smoke { 5 } else { 50 },
            takeover_timeout: pick(args.takeover_timeout, 15_000, 3_000),
            gossip_interval: gossip,
            sessionmesh_bin: sessionmesh_bin.clone(),
        };
        Some(dynamics::run(&options, &http).await?)
    } else {
        None
    };

    if parts.contains(&Part::Profile) {
        let options = profile::Options {
            duration: pick(args.duration, 10_000, 2_000),
            connections: args.connections,
            sessionmesh_bin: sessionmesh_bin.clone(),
            app_bin: app_bin.clone(),
            only: args.scenarios.clone(),
            out: out.clone(),
        };
        for path in profile::run(&options, &http).await? {
            eprintln!("bench: wrote {}", path.display());
        }
    }

    machine.loadavg_end = report::loadavg();
    let criterion_dir = args
        .criterion_dir
        .clone()
        .unwrap_or_else(|| target.join("criterion"));
    let targets = report::targets(
        throughput.as_ref(),
        gateway.as_ref(),
        memory.as_ref(),
        dynamics.as_ref(),
    );
    let report = Report {
        date,
        commit: commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        tools: vec![
            ("wrk".to_owned(), tools::version("wrk", "--version")),
            (
                "redis-server".to_owned(),
                tools::version("redis-server", "--version"),
            ),
        ],
        python: parts.contains(&Part::Gateway).then(|| {
            format!(
                "{}; per application process gunicorn --workers {} --worker-class gthread \
                 --threads {} --keep-alive 60",
                tools::python_versions(&args.python),
                args.flask_workers,
                args.flask_threads
            )
        }),
        throughput,
        gateway,
        memory,
        dynamics,
        ring_micro: report::read_criterion(&criterion_dir),
        targets,
    };
    report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("bench: wrote {}", out.join("results.md").display());
    Ok(())
}
