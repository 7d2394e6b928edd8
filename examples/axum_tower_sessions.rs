//! An axum application with tower-sessions whose sessions live in a
//! sessionmesh cluster: tower-sessions' `SessionManagerLayer` and `Session`
//! extractor over sessionmesh's store, where an application on one server
//! would use the memory store and one on several would use Redis:
//!
//! ```text
//! let store = sessionmesh::tower_sessions::MeshSessionStore::new(mesh.clone());
//! let sessions = SessionManagerLayer::new(store).with_expiry(Expiry::OnInactivity(ttl));
//! ```
//!
//! Start three nodes of it on loopback (see `examples/README.md`):
//!
//! ```text
//! scripts/run-example.sh axum_tower_sessions
//! ```
//!
//! ROUTES (JSON in, JSON out):
//!
//! | route | what it does |
//! | --- | --- |
//! | `GET /` | who you are, your counter, which node served you |
//! | `POST /login` | `{"user": "ada", "password": "lovelace"}` (or `grace`/`hopper`, `alan`/`turing`): log in (tower-sessions' `cycle_id`: a new session id, the data kept) |
//! | `POST /count` | add one to your counter (guests too; the first call starts the session) |
//! | `POST /logout` | `flush`: the session is deleted and the cookie expired |
//! | `/healthz`, `/readyz`, `/metrics`, `/dashboard`, `/api/cluster`, ... | sessionmesh's operator routes |
//!
//! tower-sessions loads the session when a handler first reads it and saves
//! the record after the response, whole: two requests of one session at once
//! are last writer wins, as with tower-sessions' other stores.
//!
//! sessionmesh's operator routes are actix-web routes: each node serves them
//! on a loopback port of its own, and the axum router forwards the paths it
//! has no route for there ([`operator`]), so that a load balancer's `/readyz`
//! and an operator's `/dashboard` are on the application's port as usual.
//!
//! The node's life (configuration, mesh, graceful leave) is the examples'
//! shared one, in `examples/support`.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sessionmesh::tower_sessions::MeshSessionStore;
use support::{Credentials, Node, Serving};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// Most bytes of a request body the operator routes take (a leave request has
/// none).
const OPERATOR_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
struct App {
    /// This node, as the answers name it.
    node: Arc<str>,
    /// The node's operator server, `http://127.0.0.1:<port>`, and a client
    /// for it.
    operator: Arc<str>,
    http: reqwest::Client,
}

/// An error answered as JSON `{"error": code, "message": text}`.
struct AppError(StatusCode, &'static str, String);

impl From<tower_sessions::session::Error> for AppError {
    /// The session could not be read or written (its nodes are unreachable
    /// for now, say).
    fn from(error: tower_sessions::session::Error) -> AppError {
        AppError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session",
            error.to_string(),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let AppError(status, code, message) = self;
        (status, Json(json!({ "error": code, "message": message }))).into_response()
    }
}

/// `GET /`: who you are and your counter. Reading the session does not start
/// one.
async fn home(State(app): State<App>, session: Session) -> Result<Json<Value>, AppError> {
    let user: Option<String> = session.get("user").await?;
    let count: u64 = session.get("count").await?.unwrap_or(0);
    Ok(Json(
        json!({ "user": user, "count": count, "node": &*app.node }),
    ))
}

/// `POST /count`: adds one to the counter.
async fn count(State(app): State<App>, session: Session) -> Result<Json<Value>, AppError> {
    let count = session.get::<u64>("count").await?.unwrap_or(0) + 1;
    session.insert("count", count).await?;
    Ok(Json(json!({ "count": count, "node": &*app.node })))
}

/// `POST /login`: checks the password, moves the session to a new id
/// (against session fixation) and keeps the counter.
async fn login(
    State(app): State<App>,
    session: Session,
    Json(credentials): Json<Credentials>,
) -> Result<Json<Value>, AppError> {
    let Some(user) = credentials.check() else {
        return Err(AppError(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown user or wrong password".into(),
        ));
    };
    session.cycle_id().await?;
    session.insert("user", user).await?;
    Ok(Json(json!({ "user": user, "node": &*app.node })))
}

/// `POST /logout`: deletes the session and expires the cookie.
async fn logout(State(app): State<App>, session: Session) -> Result<Json<Value>, AppError> {
    session.flush().await?;
    Ok(Json(json!({ "user": null, "node": &*app.node })))
}

/// Any path the router has no route for: forwarded to the node's operator
/// server (sessionmesh's operator routes; it answers 404 for the rest), with
/// its method, path, query, headers and body, and its answer returned as is.
async fn operator(State(app): State<App>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, OPERATOR_BODY).await else {
        return AppError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {OPERATOR_BODY} bytes"),
        )
        .into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    for hop in HOP_BY_HOP.iter().chain([&header::HOST]) {
        headers.remove(hop);
    }
    let forwarded = app
        .http
        .request(parts.method, format!("{}{path}", app.operator))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match forwarded {
        Ok(answer) => answer,
        Err(error) => {
            return AppError(StatusCode::BAD_GATEWAY, "operator", error.to_string()).into_response()
        }
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for hop in HOP_BY_HOP.iter().chain([&header::CONTENT_LENGTH]) {
        headers.remove(hop);
    }
    match answer.bytes().await {
        Ok(body) => (status, headers, body).into_response(),
        Err(error) => {
            AppError(StatusCode::BAD_GATEWAY, "operator", error.to_string()).into_response()
        }
    }
}

/// Headers of one connection, not to be forwarded.
const HOP_BY_HOP: [HeaderName; 3] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Names the node on every answer, as sessionmesh's own routes do.
async fn served_by(State(app): State<App>, mut response: Response) -> Response {
    if let Ok(node) = HeaderValue::from_str(&app.node) {
        response
            .headers_mut()
            .insert(sessionmesh::web::SERVED_BY, node);
    }
    response
}

/// Serves the application on the node: the axum router on the public
/// listener, and sessionmesh's operator routes (actix-web) on a loopback port
/// the router forwards to.
async fn serve(node: Node) -> anyhow::Result<Serving> {
    anyhow::ensure!(
        node.config.public_tls.is_none(),
        "this example serves plain HTTP: terminate TLS in front of it"
    );
    let ttl = time::Duration::try_from(node.config.session_ttl)?;
    let secure = node.config.cookie_secure;
    let mesh = node.mesh.clone();

    // sessionmesh's operator routes, on a loopback port of their own.
    let operator_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("binding the operator listener")?;
    let operator_addr = operator_listener.local_addr()?;
    let operator_node = Node {
        mesh: mesh.clone(),
        listener: operator_listener,
        config: node.config.clone(),
    };
    let operator_mesh = mesh.clone();
    let operator_server = support::serve_actix(operator_node, move || {
        actix_web::App::new()
            .app_data(operator_mesh.clone())
            .configure(sessionmesh::web::operator_routes)
    })?;

    // The application.
    let store = MeshSessionStore::new(mesh.clone());
    let sessions = SessionManagerLayer::new(store)
        .with_secure(secure)
        .with_expiry(Expiry::OnInactivity(ttl));
    let app = App {
        node: mesh.node_id().into(),
        operator: format!("http://{operator_addr}").into(),
        http: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
    };
    let router = Router::new()
        .route("/", get(home))
        .route("/count", post(count))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(sessions)
        .fallback(operator)
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            served_by,
        ))
        .with_state(app);

    node.listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(node.listener)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let public = axum::serve(listener, router).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let Serving {
        task: operator_task,
        stop: stop_operator,
    } = operator_server;
    let task = tokio::spawn(async move {
        let served = public.await;
        // The operator routes stop after the application (a load balancer
        // polls /readyz until the end).
        stop_operator();
        let _ = operator_task.await;
        served
    });
    Ok(Serving {
        task,
        stop: Box::new(move || {
            let _ = stop_tx.send(());
        }),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    support::main(
        "axum_tower_sessions",
        "An axum application with tower-sessions whose sessions live in a sessionmesh cluster. \
         Takes the flags and SESSIONMESH_* variables of sessionmesh.",
        serve,
    )
    .await
}
