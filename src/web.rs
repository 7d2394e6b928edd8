//! actix-web adapters: the routes sessionmesh serves beside an application's
//! own, and the public server the `sessionmesh` binary runs.
//!
//! An application that runs its own `HttpServer` adds what it wants of these
//! to its `App`, with the [`Mesh`](crate::Mesh) in the app data:
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer, Responder};
//!
//! async fn hello() -> impl Responder {
//!     "hello"
//! }
//!
//! # async fn example(mesh: sessionmesh::Mesh) -> std::io::Result<()> {
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(mesh.clone())
//!         .route("/hello", web::get().to(hello))
//!         // /healthz, /readyz, /metrics, /dashboard, /api/cluster, ...
//!         .configure(sessionmesh::web::operator_routes)
//!         // /api/session and /api/sessions/{id}
//!         .configure(sessionmesh::web::session_api)
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```

use actix_web::web::ServiceConfig;

pub use crate::http::server::PublicServer;
pub use crate::http::SERVED_BY;

/// A resource at `path` that answers the methods `allow` lists (its routes
/// are added by the caller) and any other method with a JSON 405 and an
/// `Allow` header, as sessionmesh's own routes do.
///
/// ```
/// use actix_web::web;
/// let cart = sessionmesh::web::resource("/cart", "GET, POST")
///     .route(web::get().to(|| async { "the cart" }))
///     .route(web::post().to(|| async { "added" }));
/// ```
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    crate::http::resource(path, allow)
}

/// A route answering `GET` and `HEAD` (the GET answer without its body).
pub fn get_or_head() -> actix_web::Route {
    crate::http::get_or_head()
}

/// Header naming the node a request entered, on answers another node served.
pub const ENTRY_NODE: &str = crate::mesh::ENTRY_NODE;

/// The JSON session API: `/api/session` (addressed by the session cookie, for
/// browser JavaScript) and `/api/sessions[/{id}]` (addressed by id, for
/// back-end services; behind `api_token` when configured). See
/// `docs/api.md` for the routes, the document and the errors.
pub fn session_api(cfg: &mut ServiceConfig) {
    crate::http::session_api(cfg)
}

/// The operator routes: `GET /api/cluster` (this node's view), `/healthz`,
/// `/readyz`, `/metrics` (OpenMetrics), `/dashboard`, `/api/cluster/overview`,
/// `/api/cluster/whereis/{id}` and the signed `POST /api/admin/leave`.
pub fn operator_routes(cfg: &mut ServiceConfig) {
    crate::http::operator_routes(cfg)
}

/// A node as the `sessionmesh` binary runs one: a [`Mesh`](crate::Mesh) and
/// its [`PublicServer`] serving an application's routes beside sessionmesh's.
/// The binary's demo pages, `sessionmesh local-cluster` and the tests run
/// nodes this way; an application with its own server needs only the mesh.
///
/// ```no_run
/// # async fn example(config: sessionmesh::Config) -> Result<(), Box<dyn std::error::Error>> {
/// use actix_web::web;
///
/// fn routes(cfg: &mut web::ServiceConfig) {
///     cfg.route("/hello", web::get().to(|| async { "hello" }));
/// }
///
/// let node = sessionmesh::web::ServedNode::start(config, routes).await?;
/// println!("serving on {}", node.public_addr());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct ServedNode {
    mesh: crate::Mesh,
    public: PublicServer,
}

impl ServedNode {
    /// Binds `config.public_addr`, starts the mesh (advertising the bound
    /// address), then serves `app` with the session API and operator routes.
    /// Peers of older versions that forward whole requests get `app` too.
    pub async fn start(
        config: crate::Config,
        app: impl Fn(&mut ServiceConfig) + Clone + Send + Sync + 'static,
    ) -> Result<ServedNode, crate::StartError> {
        let listener = std::net::TcpListener::bind(config.public_addr).map_err(|e| {
            crate::StartError::new(format!(
                "binding the public listener on {}: {e}",
                config.public_addr
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::StartError::new(e.to_string()))?;
        let mesh = crate::Mesh::builder(config)
            .public_addr(addr)
            .forwarded_routes(app.clone())
            .start()
            .await?;
        match PublicServer::start(mesh.clone(), listener, app) {
            Ok(public) => Ok(ServedNode { mesh, public }),
            Err(e) => {
                mesh.shutdown().await;
                Err(crate::StartError::new(format!(
                    "serving the public listener: {e}"
                )))
            }
        }
    }

    /// The node's mesh.
    pub fn mesh(&self) -> &crate::Mesh {
        &self.mesh
    }

    /// The address the public listener is bound to.
    pub fn public_addr(&self) -> std::net::SocketAddr {
        self.public.addr()
    }

    /// Leaves gracefully: [`Mesh::leave`](crate::Mesh::leave) (handoff while
    /// serving), stops the public listener letting in-flight requests finish,
    /// then [`Mesh::shutdown`](crate::Mesh::shutdown).
    pub async fn shutdown(self) {
        self.mesh.leave().await;
        self.public.stop(true).await;
        self.mesh.shutdown().await;
    }
}
