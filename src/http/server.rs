//! The public HTTP server of a node as the `sessionmesh` binary runs it: the
//! application's routes beside the JSON session API and the operator routes,
//! with the public listener's limits, request metrics and `x-served-by`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpServer};
use tokio::task::JoinHandle;

use super::{limit_headers, no_route, operator_routes, session_api, SERVED_BY};
use crate::mesh::Mesh;
use crate::metrics::Listener;

/// The fallback outside gateway mode (same signature as the gateway's).
async fn no_route_here(req: actix_web::HttpRequest, _: web::Payload) -> actix_web::HttpResponse {
    no_route(req).await
}

/// A running public HTTP server: an application's routes beside the JSON
/// session API and the operator routes, with the public listener's limits
/// (`max_header_bytes`, `request_timeout`, `max_connections`), request
/// metrics, `x-served-by` and, when configured, TLS.
///
/// ```no_run
/// # async fn example(mesh: sessionmesh::Mesh) -> std::io::Result<()> {
/// use actix_web::web;
/// let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
/// let server = sessionmesh::web::PublicServer::start(mesh, listener, |cfg: &mut web::ServiceConfig| {
///     cfg.route("/hello", web::get().to(|| async { "hello" }));
/// })?;
/// server.stop(true).await;
/// # Ok(()) }
/// ```
pub struct PublicServer {
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

type Routes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

impl PublicServer {
    /// Serves `listener` with `app`'s routes, the JSON session API and the
    /// operator routes, on `mesh`'s configuration (workers, TLS, limits).
    pub fn start(
        mesh: Mesh,
        listener: TcpListener,
        app: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> std::io::Result<PublicServer> {
        let addr = listener.local_addr()?;
        let config = mesh.node().config().clone();
        let app: Routes = Arc::new(app);
        // Each HTTP worker thread logs in the caller's span (local-cluster's
        // per-node span), if any.
        let span = tracing::Span::current();
        let factory = move || {
            crate::node::log_on_this_thread_in(&span);
            let node = mesh.node().clone();
            let served_by = DefaultHeaders::new().add((SERVED_BY, node.id().to_owned()));
            let max_header_bytes = node.config().max_header_bytes;
            let app = app.clone();
            // Gateway mode: sessionmesh's routes under a prefix, every other
            // path to the application (see `crate::gateway`).
            let gateway = crate::gateway::Slot::for_worker(&node);
            let gateway_mode = gateway.is_on();
            let fallback = match gateway_mode {
                true => web::to(crate::gateway::public),
                false => web::to(no_route_here),
            };
            actix_web::App::new()
                .app_data(mesh.clone())
                .app_data(gateway)
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    limit_headers(max_header_bytes, req, next)
                }))
                .wrap(served_by)
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    super::metrics::count(node.clone(), Listener::Public, req, next)
                }))
                .configure(move |cfg| app(cfg))
                .configure(move |cfg| match gateway_mode {
                    true => {
                        cfg.service(
                            web::scope(crate::gateway::PREFIX)
                                .configure(session_api)
                                .configure(operator_routes)
                                .default_service(web::to(no_route)),
                        );
                    }
                    false => {
                        cfg.configure(session_api).configure(operator_routes);
                    }
                })
                .default_service(fallback)
        };
        let server = HttpServer::new(factory)
            .workers(config.workers)
            .disable_signals()
            .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
            // Longer than common client pools keep idle connections (browsers,
            // load balancers), so that the server rarely closes one under a request.
            .keep_alive(Duration::from_secs(30))
            // A client must send its request head within this, and idle or
            // half-open connections are bounded in number.
            .client_request_timeout(config.request_timeout)
            .max_connections(config.max_connections)
            // Answers leave in one segment or more without waiting on Nagle.
            .tcp_nodelay(true);
        let server = match config.public_tls.as_ref().map(|tls| tls.server_config()) {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        }
        .run();
        let handle = server.handle();
        Ok(PublicServer {
            addr,
            handle,
            task: tokio::spawn(server),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; with `graceful`, lets in-flight requests finish (within
    /// `shutdown_grace`). Returns once the server has stopped.
    pub async fn stop(self, graceful: bool) {
        self.handle.stop(graceful).await;
        if let Err(error) = self.task.await.unwrap_or(Ok(())) {
            tracing::warn!(%error, "the public listener stopped with an error");
        }
    }
}
