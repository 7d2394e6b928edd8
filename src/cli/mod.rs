//! Subcommands of the `sessionmesh` binary besides serving a node.
//!
//! Each subcommand lives in its own file and exposes `run(args) -> ExitCode`.
//! The operator commands (`status`, `whereis`, `leave`) talk to a node's public
//! listener only, so they work wherever an operator can reach one node. A node
//! whose public listener serves TLS is named `https://...`, with `--ca-file`
//! naming the CA certificates to trust for it (no system roots are used).

mod healthcheck;
mod leave;
mod local_cluster;
pub mod logging;
mod status;
mod whereis;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

pub use healthcheck::HealthcheckArgs;
pub use leave::LeaveArgs;
pub use local_cluster::LocalClusterArgs;
pub use status::StatusArgs;
pub use whereis::WhereisArgs;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Exits 0 when the node answers /healthz (or /readyz with --ready); for
    /// container health checks, needs nothing but this binary.
    Healthcheck(HealthcheckArgs),
    /// Shows the cluster as one node sees it: members, ring shares, sessions.
    Status(StatusArgs),
    /// Shows which nodes own and replicate a session.
    Whereis(WhereisArgs),
    /// Makes a node leave the cluster gracefully (hand off, then exit), as on
    /// SIGTERM. Needs the cluster secret.
    Leave(LeaveArgs),
    /// Starts a cluster of N nodes on loopback in this process, for trying
    /// sessionmesh out; Ctrl-C stops them all.
    LocalCluster(LocalClusterArgs),
}

impl Command {
    /// Runs the subcommand; `local-cluster` nodes serve `routes`.
    pub fn run(self, routes: local_cluster::Routes) -> ExitCode {
        match self {
            Command::Healthcheck(args) => healthcheck::run(args),
            Command::Status(args) => status::run(args),
            Command::Whereis(args) => whereis::run(args),
            Command::Leave(args) => leave::run(args),
            Command::LocalCluster(args) => local_cluster::run(args, routes),
        }
    }
}

/// A current-thread runtime for a short command-line operation.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, std::io::Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

/// How a command verifies a node that serves HTTPS.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM bundle of the CA certificates that issued the node's public certificate,
    /// for an https --node (then a --node without scheme means https)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The base URL of a node, no trailing slash; without a scheme, `https://` when a
/// CA is given, else `http://`.
pub(crate) fn base_url(node: &str, tls: &TlsArgs) -> String {
    let node = node.trim().trim_end_matches('/');
    if node.contains("://") {
        node.to_owned()
    } else if tls.ca_file.is_some() {
        format!("https://{node}")
    } else {
        format!("http://{node}")
    }
}

/// An HTTP client for talking to the public listener at `base`: over HTTPS it
/// trusts only the CA certificates of `--ca-file`.
pub(crate) fn client(
    timeout: Duration,
    tls: &TlsArgs,
    base: &str,
) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    let builder = match &tls.ca_file {
        Some(path) => {
            let config = crate::tls::client_config_trusting(path)
                .map_err(|e| format!("--ca-file {}: {}", path.display(), e.problem))?;
            builder.use_preconfigured_tls(config)
        }
        None if base.starts_with("https://") => {
            return Err(format!(
                "{base} is https: pass --ca-file with the CA certificate(s) that issued its certificate"
            ))
        }
        None => builder,
    };
    builder.build().map_err(|e| e.to_string())
}

/// GETs `url` and parses a JSON answer; the error says what went wrong in words.
pub(crate) async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> Result<serde_json::Value, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", describe(&e)))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("{url}: not a JSON answer ({status}): {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        let message = body["message"].as_str().unwrap_or("no message");
        Err(format!("{url}: {status}: {message}"))
    }
}

pub(crate) fn describe(error: &reqwest::Error) -> String {
    if crate::tls::is_tls_error(error) {
        format!("TLS failed (is --ca-file the CA that issued the node's certificate, and the host a name in it?): {}", crate::tls::error_chain(error))
    } else if error.is_connect() {
        "cannot connect (is the node running, and is this its public address?)".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    }
}

/// `n` and the noun that fits it: `1 session`, `2 sessions`, `0 sessions`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Renders rows as a left-aligned table with two spaces between columns.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_tables() {
        let plain = TlsArgs::default();
        assert_eq!(base_url("127.0.0.1:8080/", &plain), "http://127.0.0.1:8080");
        assert_eq!(base_url("https://a.example", &plain), "https://a.example");
        let tls = TlsArgs {
            ca_file: Some("ca.pem".into()),
        };
        assert_eq!(base_url("a.example:8080", &tls), "https://a.example:8080");
        assert_eq!(base_url("http://a.example", &tls), "http://a.example");
        let error = client(Duration::from_secs(1), &plain, "https://a.example").unwrap_err();
        assert!(error.contains("--ca-file"), "{error}");
        assert_eq!(count(1, "session", "sessions"), "1 session");
        assert_eq!(count(0, "session", "sessions"), "0 sessions");
        assert_eq!(
            count(2, "replica copy", "replica copies"),
            "2 replica copies"
        );
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
