//! `sessionmesh healthcheck`: probes a node's `/healthz` (or `/readyz`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// Base URL of the node's public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// Probe /readyz instead of /healthz.
    #[arg(long)]
    pub ready: bool,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: HealthcheckArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = format!("{}{path}", args.node.trim_end_matches('/'));
    let probe = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(args.timeout)
            .build()?;
        client.get(&url).send().await?.error_for_status()
    };
    match super::block_on(probe) {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("sessionmesh healthcheck: {url}: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sessionmesh healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
