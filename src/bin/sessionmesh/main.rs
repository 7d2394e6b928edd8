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

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
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
        let node = ServedNode::start(config, routes).await?;
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = node.mesh().leave_requested() => {}
        }
        // A second signal while leaving means: stop now.
        tokio::spawn(async {
            shutdown_signal().await;
            tracing::warn!("second signal: exiting without finishing the leave");
            std::process::exit(130);
        });
        node.shutdown().await;
        Ok::<(), sessionmesh::StartError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("sessionmesh stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}
