//! An actix-session application moved from Redis to a sessionmesh cluster:
//! its `SessionMiddleware`, cookie key, `Session` extractor and every handler
//! are actix-session's own, and the only line that changed is the store's
//! (see [`serve`]):
//!
//! ```text
//! - let store = RedisSessionStore::new(redis_url).await?;
//! + let store = MeshSessionStore::new(node.mesh.clone());
//! ```
//!
//! Start three nodes of it on loopback (see `examples/README.md`):
//!
//! ```text
//! scripts/run-example.sh actix_session_from_redis
//! ```
//!
//! ROUTES (JSON in, JSON out):
//!
//! | route | what it does |
//! | --- | --- |
//! | `GET /` | who you are, your counter, which node served you |
//! | `POST /login` | `{"user": "ada", "password": "lovelace"}` (or `grace`/`hopper`, `alan`/`turing`): log in (actix-session's `renew`: a new session key, the data kept) |
//! | `POST /count` | add one to your counter (guests too; the first call starts the session) |
//! | `POST /logout` | `purge`: the session is deleted and the cookie expired |
//! | `/healthz`, `/readyz`, `/metrics`, `/dashboard`, `/api/cluster`, ... | sessionmesh's operator routes |
//!
//! actix-session loads the session from its store when a handler first reads
//! it and writes it back after the handler, whole: two requests of one
//! session at once are last writer wins, on sessionmesh as on Redis. (The
//! `cart` example's `sessionmesh::actix` extractor writes field by field with
//! versions instead, and refuses a lost update with a `409`.)
//!
//! The node's life (configuration, mesh, graceful leave) is the examples'
//! shared one, in `examples/support`.

mod support;

use std::process::ExitCode;

use actix_session::config::PersistentSession;
// use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpResponse};
use serde_json::json;
use sessionmesh::actix_session::MeshSessionStore;
use sessionmesh::Mesh;
use support::{Credentials, Node, Serving};

/// `GET /`: who you are and your counter. Reading the session does not start
/// one.
async fn home(session: Session, mesh: Mesh) -> actix_web::Result<HttpResponse> {
    let user: Option<String> = session.get("user")?;
    let count: u64 = session.get("count")?.unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({ "user": user, "count": count, "node": mesh.node_id() })))
}

/// `POST /count`: adds one to the counter.
async fn count(session: Session, mesh: Mesh) -> actix_web::Result<HttpResponse> {
    let count: u64 = session.get("count")?.unwrap_or(0) + 1;
    session.insert("count", count)?;
    Ok(HttpResponse::Ok().json(json!({ "count": count, "node": mesh.node_id() })))
}

/// `POST /login`: checks the password, renews the session key (against
/// session fixation) and keeps the counter.
async fn login(
    session: Session,
    mesh: Mesh,
    credentials: web::Json<Credentials>,
) -> actix_web::Result<HttpResponse> {
    let Some(user) = credentials.check() else {
        return Ok(HttpResponse::Unauthorized().json(json!({
            "error": "bad_credentials",
            "message": "unknown user or wrong password",
        })));
    };
    session.renew();
    session.insert("user", user)?;
    Ok(HttpResponse::Ok().json(json!({ "user": user, "node": mesh.node_id() })))
}

/// `POST /logout`: deletes the session from the store and expires the cookie.
async fn logout(session: Session, mesh: Mesh) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "user": null, "node": mesh.node_id() }))
}

/// Serves the application on the node, as it was served on Redis but for the
/// store line.
async fn serve(node: Node) -> anyhow::Result<Serving> {
    // The cookie key, the same on every node: derived from the cluster's
    // cookie secret here, from the application's own secret store in yours.
    let secret = node.config.cookie_secret.expose();
    anyhow::ensure!(
        secret.len() >= 32,
        "this example derives actix-session's cookie key from cookie_secret, \
         which needs at least 32 bytes (it has {})",
        secret.len()
    );
    let key = Key::derive_from(secret);
    let ttl = actix_web::cookie::time::Duration::try_from(node.config.session_ttl)?;
    let secure = node.config.public_tls.is_some();

    // let store = RedisSessionStore::new(redis_url).await?;
    let store = MeshSessionStore::new(node.mesh.clone());

    let mesh = node.mesh.clone();
    support::serve_actix(node, move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(secure)
                    .session_lifecycle(PersistentSession::default().session_ttl(ttl))
                    .build(),
            )
            .wrap(
                DefaultHeaders::new().add((sessionmesh::web::SERVED_BY, mesh.node_id().to_owned())),
            )
            // For the handlers that say which node served them, and for the
            // operator routes.
            .app_data(mesh.clone())
            .route("/", web::get().to(home))
            .route("/count", web::post().to(count))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            // /healthz, /readyz, /metrics, /dashboard, /api/cluster, ...
            .configure(sessionmesh::web::operator_routes)
    })
}

#[actix_web::main]
async fn main() -> ExitCode {
    support::main(
        "actix_session_from_redis",
        "An actix-session application whose sessions live in a sessionmesh cluster instead of \
         Redis. Takes the flags and SESSIONMESH_* variables of sessionmesh.",
        serve,
    )
    .await
}
