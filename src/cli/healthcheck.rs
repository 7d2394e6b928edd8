//! `sessionmesh healthcheck`: probes a node's `/healthz` (or `/readyz`); in
//! gateway mode (`SESSIONMESH_UPSTREAM` set, as in a gateway container) under
//! `/_sessionmesh/`.

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
    /// Prefix of sessionmesh's routes [default: /_sessionmesh when SESSIONMESH_UPSTREAM is set (gateway mode), else none]
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

pub fn run(args: HealthcheckArgs) -> ExitCode {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let gateway = std::env::var_os("SESSIONMESH_UPSTREAM").is_some_and(|v| !v.is_empty());
        match gateway {
            true => crate::gateway::PREFIX.to_owned(),
            false => String::new(),
        }
    });
    let base = super::base_url(&args.node, &args.tls);
    let url = format!("{base}{}{path}", prefix.trim_end_matches('/'));
    let probe = async {
        let client = super::client(args.timeout, &args.tls, &base)?;
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", super::describe(&e)))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("{url}: {status}")),
        }
    };
    match super::block_on(probe) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("sessionmesh healthcheck: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sessionmesh healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
