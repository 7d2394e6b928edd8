//! The `sessionmesh` binary: command line → config → a running node serving
//! the demo application, built on the library's public API only.

mod demo;
#[cfg(test)]
mod demo_tests;

use std::process::ExitCode;

use clap::Parser;
use sessionmesh::cli::{logging, Command};
use sessionmesh::config::{Config, LogFormat, ServeArgs};
use sessionmesh::web::ServedNode;

/// A session cluster: nodes gossip membership, a consistent-hash ring gives every
/// session an owner, and any node forwards a request to its session's owner.
#[derive(Parser, Debug)]
#[command(
    name = "sessionmesh",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: serve a node.
    #[command(flatten)]
    serve: ServeArgs,
}

fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(logging::filter("info"))
        .with_ansi(logging::colour_on_stderr())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are installed: a
/// signal sent as soon as the node logs that it is ready must start the leave,
/// not kill the process (the default action, before a handler exists).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (within a runtime).
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return command.run(demo::routes);
    }
    let config = match Config::load(&cli.serve) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sessionmesh: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    if config.generated_secrets {
        tracing::warn!(
            "no cookie_secret/cluster_secret configured: using throwaway secrets; sessions will not survive a restart. \
             Set SESSIONMESH_COOKIE_SECRET and SESSIONMESH_CLUSTER_SECRET for anything but a single dev node"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessionmesh: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Gateway mode: every path but /_sessionmesh/ is the application's.
        let routes: fn(&mut actix_web::web::ServiceConfig) = match config.upstream {
            Some(_) => |_| {},
            None => demo::routes,
        };
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGINT and SIGTERM");
                return Ok(ExitCode::FAILURE);
            }
        };
        let node = ServedNode::start(config, routes).await?;
        tokio::select! {
            _ = signals.next() => {}
            _ = node.mesh().leave_requested() => {}
        }
        // A second signal while leaving means: stop now.
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("second signal: exiting without finishing the leave");
            std::process::exit(130);
        });
        node.shutdown().await;
        Ok::<ExitCode, sessionmesh::StartError>(ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("sessionmesh stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}
