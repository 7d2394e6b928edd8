//! Subcommands of the `sessionmesh` binary besides serving a node.
//!
//! Each subcommand lives in its own file and exposes `run(args) -> ExitCode`.

mod healthcheck;

use std::process::ExitCode;

use clap::Subcommand;

pub use healthcheck::HealthcheckArgs;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Exits 0 when the node answers /healthz (or /readyz with --ready); for
    /// container health checks, needs nothing but this binary.
    Healthcheck(HealthcheckArgs),
}

impl Command {
    pub fn run(self) -> ExitCode {
        match self {
            Command::Healthcheck(args) => healthcheck::run(args),
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
