//! An application on a sessionmesh cluster, as issue 13 means one: the peer's
//! pages (`GET /` reads the session's `name` and renders the page,
//! `GET /login?name=` stores it) in an actix-web program of its own that keeps
//! its sessions in the cluster instead of Redis. Each process is a node: it
//! takes the `sessionmesh` binary's flags and `SESSIONMESH_*` variables
//! ([`ServeArgs`]), starts its [`Mesh`] and serves the application.
//!
//! Two modes:
//! - `--app-mode extractor`: `sessionmesh::actix::SessionMiddleware` and the
//!   `Session` extractor (the handler runs on the entry node; the session is
//!   read from memory on its owner, over a peer link elsewhere).
//! - `--app-mode store`: the peer's actix-session program, every setting
//!   unchanged, with `MeshSessionStore` in place of `RedisSessionStore` (the
//!   cookie key from `BENCH_PEER_COOKIE_KEY`, shared by the nodes).
//!
//! Answers carry `x-served-by` (the entry node); in extractor mode also
//! `x-session-node` (the node the session was read from), so that the harness
//! can check which path a scenario measures. Logs as sessionmesh does (the
//! harness reads the addresses from the JSON `node ready` line).

use std::net::TcpListener;
use std::process::ExitCode;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_web::cookie::{time, Key};
use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use bench::page::{page, LOGIN_OK};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use sessionmesh::actix_session::MeshSessionStore;
use sessionmesh::config::{Config, LogFormat, ServeArgs};
use sessionmesh::Mesh;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AppMode {
    /// `sessionmesh::actix` middleware and `Session` extractor.
    Extractor,
    /// actix-session's middleware with `MeshSessionStore`.
    Store,
}

#[derive(Parser)]
#[command(name = "bench-app")]
struct Args {
    #[arg(long, value_enum, default_value = "extractor")]
    app_mode: AppMode,
    #[command(flatten)]
    node: ServeArgs,
}

/// The header naming the node the session was read from (extractor mode).
const SESSION_NODE: &str = "x-session-node";

#[derive(Deserialize)]
struct LoginForm {
    name: Option<String>,
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn text(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

fn login_name(form: &LoginForm) -> Option<&str> {
    form.name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

const GIVE_A_NAME: &str = "give a name: /login?name=<name>";

/// The handlers on `sessionmesh::actix`.
mod extractor {
    use super::*;
    use sessionmesh::actix::Session;

    pub async fn home(session: Session, mesh: Mesh) -> HttpResponse {
        // As the peer: a broken or unknown session is a Guest, never an error.
        let name = session.get::<String>("name").ok().flatten();
        let mut response = html(page(mesh.node_id(), name.as_deref()));
        if let Ok(node) = session.served_by().parse() {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static(SESSION_NODE),
                node,
            );
        }
        response
    }

    pub async fn login(session: Session, form: web::Query<LoginForm>) -> HttpResponse {
        let Some(name) = login_name(&form) else {
            return HttpResponse::BadRequest().body(GIVE_A_NAME);
        };
        session.clear();
        if let Err(error) = session.insert("name", name) {
            return HttpResponse::InternalServerError().body(error.to_string());
        }
        // A new id on login, against session fixation (as the peer); a guest's
        // first session is new anyway.
        if session.exists() {
            session.renew();
        }
        text(LOGIN_OK)
    }
}

/// The peer's handlers, on actix-session (its `Session`).
mod store {
    use super::*;
    use actix_session::Session;

    pub async fn home(session: Session, mesh: Mesh) -> HttpResponse {
        let name = session.get::<String>("name").ok().flatten();
        html(page(mesh.node_id(), name.as_deref()))
    }

    pub async fn login(session: Session, form: web::Query<LoginForm>) -> HttpResponse {
        let Some(name) = login_name(&form) else {
            return HttpResponse::BadRequest().body(GIVE_A_NAME);
        };
        session.renew();
        match session.insert("name", name) {
            Ok(()) => text(LOGIN_OK),
            Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
        }
    }
}

/// The cookie key of store mode, as the peer reads it (`BENCH_PEER_COOKIE_KEY`,
/// 128 hex digits); every node of a cluster needs the same one.
fn cookie_key() -> anyhow::Result<Key> {
    let hex = std::env::var("BENCH_PEER_COOKIE_KEY")
        .context("--app-mode store needs BENCH_PEER_COOKIE_KEY (the nodes share the key)")?;
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<Result<_, _>>()
        .context("BENCH_PEER_COOKIE_KEY is not hex")?;
    anyhow::ensure!(bytes.len() >= 64, "BENCH_PEER_COOKIE_KEY needs 64 bytes");
    Ok(Key::from(&bytes))
}

fn served_by(mesh: &Mesh) -> DefaultHeaders {
    DefaultHeaders::new().add(("x-served-by", mesh.node_id().to_owned()))
}

/// The application on `sessionmesh::actix`.
fn serve_extractor(mesh: Mesh, listener: TcpListener, workers: usize) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(mesh.clone())
            .wrap(sessionmesh::actix::SessionMiddleware::new(mesh.clone()))
            .wrap(served_by(&mesh))
            .route("/", web::get().to(extractor::home))
            .route("/login", web::get().to(extractor::login))
            .configure(sessionmesh::web::operator_routes)
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// The peer's application (bench-peer.rs, every setting as there) with the
/// store switched from Redis to the cluster.
fn serve_store(
    mesh: Mesh,
    key: Key,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<Server> {
    let store = MeshSessionStore::new(mesh.clone());
    Ok(HttpServer::new(move || {
        let sessions = actix_session::SessionMiddleware::builder(store.clone(), key.clone())
            .cookie_name("SESSION".to_owned())
            .cookie_secure(false)
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(BrowserSession::default().state_ttl(time::Duration::minutes(30)))
            .build();
        App::new()
            .app_data(mesh.clone())
            .wrap(sessions)
            .wrap(served_by(&mesh))
            .route("/", web::get().to(store::home))
            .route("/login", web::get().to(store::login))
            .configure(sessionmesh::web::operator_routes)
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn run(mode: AppMode, config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.public_addr)
        .with_context(|| format!("binding the public listener on {}", config.public_addr))?;
    let public_addr = listener.local_addr()?;
    let workers = config.workers;
    let key = match mode {
        AppMode::Store => Some(cookie_key()?),
        AppMode::Extractor => None,
    };
    let mesh = Mesh::builder(config)
        .public_addr(public_addr)
        .start()
        .await?;
    let server = match key {
        None => serve_extractor(mesh.clone(), listener, workers),
        Some(key) => serve_store(mesh.clone(), key, listener, workers),
    };
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            mesh.shutdown().await;
            return Err(error).context("serving the public listener");
        }
    };
    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    tracing::info!(node = mesh.node_id(), mode = ?mode, "bench-app ready on {public_addr}");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = mesh.leave_requested() => {}
        stopped = serving => {
            mesh.shutdown().await;
            return match stopped {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error).context("the public server failed"),
                Err(error) => Err(error).context("the public server panicked"),
            };
        }
    }
    handle.stop(true).await;
    mesh.shutdown().await;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,actix_server=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.init(),
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.node) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("bench-app: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(args.app_mode, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("bench-app stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}
