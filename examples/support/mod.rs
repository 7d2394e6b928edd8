//! A node's life around an example application, shared by the examples: read
//! the configuration as the `sessionmesh` binary does, log, bind the public
//! listener, start the [`Mesh`], serve the application (whatever its web
//! framework), and on SIGTERM or Ctrl-C leave the cluster while still
//! serving, then stop the server, then the mesh.
//!
//! An example's `main` is one call:
//!
//! ```text
//! #[actix_web::main]
//! async fn main() -> ExitCode {
//!     support::main("cart", "A shopping cart ...", serve).await
//! }
//! ```
//!
//! where `serve` (async) starts the application's server on the [`Node`] it is
//! given and returns it as a [`Serving`] ([`serve_actix`] does that for an
//! actix-web `App`).
//!
//! This is what makes an example run under `scripts/run-example.sh` and
//! `tests/examples/harness.rs`: the flags of `sessionmesh`
//! ([`ServeArgs`]), JSON log lines on stderr with `--log-format json` (the
//! library's "node ready" line among them), the public listener bound before
//! that line, and a graceful leave on SIGTERM. The application serves
//! `sessionmesh::web::operator_routes` itself (`/readyz`, `/api/cluster`).

use std::future::Future;
use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer};
use anyhow::Context;
use clap::{Args as _, FromArgMatches as _};
use sessionmesh::config::{Config, LogFormat, ServeArgs};
use sessionmesh::Mesh;

/// What an application's server is given: the started mesh, the public
/// listener (bound, not yet serving) and the node's configuration (workers,
/// shutdown grace, public TLS, cookie settings, ...).
pub struct Node {
    pub mesh: Mesh,
    pub listener: TcpListener,
    pub config: Config,
}

impl Node {
    /// The shutdown grace in whole seconds (at least 1), as actix-web takes it.
    pub fn grace_secs(&self) -> u64 {
        self.config.shutdown_grace.as_secs().max(1)
    }
}

/// An application's server, running: a task that ends when the server stops
/// (by itself, or after [`Serving::stop`]), and how to ask it to stop.
pub struct Serving {
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Asks the server to stop accepting and to finish the requests in
    /// flight; the task ends once it has.
    pub stop: Box<dyn FnOnce() + Send>,
}

/// A login form or JSON body: `{"user": "ada", "password": "lovelace"}`.
#[derive(serde::Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// The examples' demo accounts: user and password. A real application checks
/// a password hash from its user database instead.
const USERS: &[(&str, &str)] = &[("ada", "lovelace"), ("grace", "hopper"), ("alan", "turing")];

impl Credentials {
    /// The user, if the password is theirs.
    pub fn check(&self) -> Option<&'static str> {
        USERS
            .iter()
            .find(|&&(user, password)| user == self.user && password == self.password)
            .map(|&(user, _)| user)
    }
}

/// Runs an example node until SIGTERM or Ctrl-C (or an operator's
/// `sessionmesh leave`) and returns its exit code: 2 for a configuration
/// error (with a message that names the key), 1 when it fails.
///
/// `name` and `about` are the program's name and `--help` text; `serve`
/// starts the application on the node.
pub async fn main<F, S>(name: &'static str, about: &'static str, serve: F) -> ExitCode
where
    F: FnOnce(Node) -> S,
    S: Future<Output = anyhow::Result<Serving>>,
{
    let command = ServeArgs::augment_args(clap::Command::new(name).about(about));
    let args = ServeArgs::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    // The configuration as the `sessionmesh` binary reads it: `--config FILE`,
    // then the `SESSIONMESH_*` environment, then the flags.
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    if config.generated_secrets {
        tracing::warn!(
            "no cookie_secret/cluster_secret configured: using throwaway secrets, fine for one node. \
             Nodes of a cluster must share SESSIONMESH_COOKIE_SECRET and SESSIONMESH_CLUSTER_SECRET"
        );
    }
    match run(name, config, serve).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{name} stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run<F, S>(name: &str, mut config: Config, serve: F) -> anyhow::Result<()>
where
    F: FnOnce(Node) -> S,
    S: Future<Output = anyhow::Result<Serving>>,
{
    // 1. Bind the public listener first: with port 0 the OS picks the port,
    //    and the mesh must advertise the port actually bound.
    let listener = TcpListener::bind(config.public_addr)
        .with_context(|| format!("binding the public listener on {}", config.public_addr))?;
    config.public_addr = listener.local_addr()?;
    let scheme = if config.public_tls.is_some() {
        "https"
    } else {
        "http"
    };

    // 2. Start the node: gossip, the ring, replication, peer links and the
    //    internal listener. It returns once the node is ready in its own ring
    //    (and logs "node ready" with its addresses).
    let mesh = Mesh::builder(config.clone())
        .public_addr(config.public_addr)
        .start()
        .await?;
    let public_addr = config.public_addr;
    let grace = config.shutdown_grace;

    // 3. Serve the application.
    let node = Node {
        mesh: mesh.clone(),
        listener,
        config,
    };
    let Serving {
        task: mut serving,
        stop,
    } = match serve(node).await {
        Ok(serving) => serving,
        Err(error) => {
            mesh.shutdown().await;
            return Err(error.context("starting the application"));
        }
    };
    tracing::info!(
        node = mesh.node_id(),
        "{name} ready: {scheme}://{public_addr}/"
    );

    // 4. Run until asked to stop (or the server fails).
    tokio::select! {
        _ = stop_signal() => tracing::info!("stopping: leaving the cluster first"),
        _ = mesh.leave_requested() => tracing::info!("asked to leave the cluster"),
        stopped = &mut serving => {
            mesh.shutdown().await;
            return match stopped {
                Ok(Ok(())) => Err(anyhow::anyhow!("the public server stopped by itself")),
                Ok(Err(error)) => Err(error).context("the public server failed"),
                Err(error) => Err(error).context("the public server panicked"),
            };
        }
    }
    // A second signal while leaving means: stop now.
    tokio::spawn(async {
        stop_signal().await;
        tracing::warn!("second signal: exiting without finishing the leave");
        std::process::exit(130);
    });

    // 5. Stop in order: leave while still serving (the node's sessions move to
    //    the other nodes, which then answer for them), stop the server letting
    //    requests in flight finish (for at most the shutdown grace, and a
    //    second for the server's own bound to act first), stop the mesh.
    mesh.leave().await;
    stop();
    if tokio::time::timeout(grace + Duration::from_secs(1), &mut serving)
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace: dropping them");
        serving.abort();
    }
    mesh.shutdown().await;
    Ok(())
}

/// Serves an actix-web application on the node: `factory` builds the `App`
/// of each worker. The server takes the node's workers, its public TLS (if
/// configured) and its shutdown grace, and leaves the signals to [`main`] (the
/// node must leave the cluster before the server stops).
pub fn serve_actix<F, T, B>(node: Node, factory: F) -> anyhow::Result<Serving>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let server = HttpServer::new(factory)
        .workers(node.config.workers)
        .disable_signals()
        .shutdown_timeout(node.grace_secs());
    let server = match &node.config.public_tls {
        Some(tls) => server.listen_rustls_0_23(node.listener, tls.server_config())?,
        None => server.listen(node.listener)?,
    };
    let server = server.run();
    let handle = server.handle();
    Ok(Serving {
        task: tokio::spawn(server),
        stop: Box::new(move || {
            // The command is sent at once; the task ends when it is done.
            drop(handle.stop(true));
        }),
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Logs to stderr: text, or one JSON object a line with `--log-format json`
/// (what the tests read the node's addresses from). `RUST_LOG` filters.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,actix_server=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.init(),
    }
}
