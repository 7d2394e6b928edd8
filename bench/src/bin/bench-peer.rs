//! The peer: what a user runs today instead of sessionmesh. actix-web with
//! `actix-session` keeping sessions in Redis (`RedisSessionStore`), serving the same
//! pages as sessionmesh (`GET /`, `GET /login?name=`), plus `POST /api/sessions`
//! (the body's top-level fields become session entries) for the memory benchmark.
//!
//! `--mode plain` is the upper bound: the same actix-web, the same bytes, no session.
//!
//! Everything is left at actix-session's defaults except what a plain-HTTP demo
//! needs (`cookie_secure(false)`), the cookie name and the state TTL (30 minutes,
//! sessionmesh's default `session_ttl`). The default TTL extension policy
//! (`OnStateChanges`) means a read costs one Redis `GET` and no write.
//!
//! Prints `listening <addr>` on stdout once bound.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time, Key};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse, HttpServer};
use bench::page::{page, LOGIN_OK};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// Longest accepted request body, as sessionmesh's default `max_session_bytes`.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// actix-session with RedisSessionStore.
    Session,
    /// No session at all: the upper bound.
    Plain,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Redis URL, e.g. redis://127.0.0.1:6379 (session mode).
    #[arg(long)]
    redis: Option<String>,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Shown on the page as "Served by" and in `x-served-by`.
    #[arg(long, default_value = "peer")]
    id: String,
    /// The name the plain mode greets (it has no session to read it from).
    #[arg(long, default_value = "bench")]
    plain_name: String,
}

struct Id(String);
struct PlainName(String);

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

async fn home(session: Session, id: web::Data<Id>) -> HttpResponse {
    // As sessionmesh: a broken or unknown session is a Guest, never an error.
    let name = session.get::<String>("name").ok().flatten();
    html(page(&id.0, name.as_deref()))
}

async fn login(session: Session, form: web::Query<LoginForm>) -> HttpResponse {
    let name = form.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return HttpResponse::BadRequest().body("give a name: /login?name=<name>");
    }
    // A new session key on login, against session fixation (as sessionmesh).
    session.renew();
    match session.insert("name", name) {
        Ok(()) => text(LOGIN_OK),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// `POST /api/sessions`: a new session holding the body's top-level fields.
async fn create(session: Session, body: web::Bytes) -> HttpResponse {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return HttpResponse::BadRequest().body("the body must be a JSON object");
    };
    session.renew();
    for (key, value) in map {
        if let Err(e) = session.insert(key, value) {
            return HttpResponse::InternalServerError().body(e.to_string());
        }
    }
    HttpResponse::Created().json(serde_json::json!({"created": true}))
}

async fn plain_home(id: web::Data<Id>, name: web::Data<PlainName>) -> HttpResponse {
    html(page(&id.0, Some(&name.0)))
}

async fn plain_login() -> HttpResponse {
    text(LOGIN_OK)
}

/// The cookie key: shared by the peer processes of one benchmark (so that a
/// session made through one is readable through the others), from
/// `BENCH_PEER_COOKIE_KEY` (128 hex digits), else random.
fn cookie_key() -> anyhow::Result<Key> {
    match std::env::var("BENCH_PEER_COOKIE_KEY") {
        Ok(hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(bytes.len() >= 64, "BENCH_PEER_COOKIE_KEY needs 64 bytes");
            Ok(Key::from(&bytes))
        }
        Err(_) => Ok(Key::generate()),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    let id = web::Data::new(Id(args.id.clone()));
    let served_by = args.id.clone();
    let server = match args.mode {
        Mode::Plain => {
            let name = web::Data::new(PlainName(args.plain_name.clone()));
            HttpServer::new(move || {
                App::new()
                    .app_data(id.clone())
                    .app_data(name.clone())
                    .wrap(DefaultHeaders::new().add(("x-served-by", served_by.clone())))
                    .route("/", web::get().to(plain_home))
                    .route("/login", web::get().to(plain_login))
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
        Mode::Session => {
            let url = args
                .redis
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--mode session needs --redis"))?;
            let store = RedisSessionStore::new(url).await?;
            let key = cookie_key()?;
            HttpServer::new(move || {
                let sessions = SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_name("SESSION".to_owned())
                    .cookie_secure(false)
                    .cookie_content_security(CookieContentSecurity::Private)
                    .session_lifecycle(
                        BrowserSession::default().state_ttl(time::Duration::minutes(30)),
                    )
                    .build();
                App::new()
                    .app_data(id.clone())
                    .app_data(web::PayloadConfig::new(MAX_BODY))
                    .wrap(sessions)
                    .wrap(DefaultHeaders::new().add(("x-served-by", served_by.clone())))
                    .route("/", web::get().to(home))
                    .route("/login", web::get().to(login))
                    .route("/api/sessions", web::post().to(create))
            })
            .workers(args.workers)
            .listen(listener)?
            .run()
        }
    };
    let mut out = std::io::stdout();
    writeln!(out, "listening {addr}")?;
    out.flush()?;
    server.await?;
    Ok(())
}
