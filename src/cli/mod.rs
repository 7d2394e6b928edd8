//! Subcommands of the `sessionmesh` binary besides serving a node.
//!
//! Each subcommand lives in its own file and exposes `run(args) -> ExitCode`.
//! The operator commands (`status`, `whereis`, `leave`) talk to a node's public
//! listener only, so they work wherever an operator can reach one node.

mod healthcheck;
mod leave;
mod local_cluster;
mod status;
mod whereis;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

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
    pub fn run(self) -> ExitCode {
        match self {
            Command::Healthcheck(args) => healthcheck::run(args),
            Command::Status(args) => status::run(args),
            Command::Whereis(args) => whereis::run(args),
            Command::Leave(args) => leave::run(args),
            Command::LocalCluster(args) => local_cluster::run(args),
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

/// The base URL of a node: `http://` added when no scheme is given, no trailing slash.
pub(crate) fn base_url(node: &str) -> String {
    let node = node.trim().trim_end_matches('/');
    if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    }
}

/// An HTTP client for talking to a node's public listener.
pub(crate) fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
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
    if error.is_connect() {
        "cannot connect (is the node running, and is this its public address?)".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    }
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
        assert_eq!(base_url("127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(base_url("https://a.example"), "https://a.example");
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }
}
