//! The HTTP adapters: the JSON session API, the operator routes (cluster,
//! health, metrics, dashboard), the internal listener peers talk to, and what
//! they share (JSON errors, body and header limits, request counting).
//!
//! Session routes answer through [`Mesh`] operations: wherever the session
//! lives, the handler runs once, on the node the request entered. Peers of
//! versions before operation frames forward whole requests to the internal
//! listener under [`FORWARD_PREFIX`]; those are served there without a hop.

mod admin;
mod api;
mod dashboard;
mod internal;
mod metrics;
mod operator;
pub(crate) mod server;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::json;

use crate::mesh::{Error, Mesh, FORWARD_PREFIX};
use crate::node::Node;

pub(crate) use api::{document_json, routes as session_api};
pub(crate) use operator::LEAVE_PATH;

/// The routes sessionmesh serves beside an application: cluster view, health,
/// readiness, metrics, dashboard, placement and the signed leave request.
pub(crate) fn operator_routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(admin::routes)
        .configure(dashboard::routes)
        .configure(metrics::routes)
        .configure(operator::routes);
}

/// Header naming the node that served a response.
pub const SERVED_BY: &str = "x-served-by";

/// The node behind a handler: the [`Mesh`] in the application's app data, or
/// the node itself on the internal listener.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Node>);

impl std::ops::Deref for Shared {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl actix_web::FromRequest for Shared {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Shared, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let node = crate::mesh::from_app_data(req)
            .map(|mesh| mesh.node().clone())
            .or_else(|| {
                req.app_data::<web::Data<Node>>()
                    .map(|d| d.clone().into_inner())
            });
        std::future::ready(node.map(Shared).ok_or_else(|| {
            actix_web::error::ErrorInternalServerError(
                "no sessionmesh::Mesh in the app data: add .app_data(mesh.clone()) to the App",
            )
        }))
    }
}

/// An error answer: `{"error": code, "message": text}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
    /// Set when a limit refused the request; counted by the metrics.
    limit: bool,
}

/// Marks a response refused by a limit (its error code names the limit).
#[derive(Clone, Copy, Debug)]
pub struct LimitHit(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            limit: false,
        }
    }

    /// A refusal by a limit: counted in `sessionmesh_limit_hits_total{limit=code}`.
    pub fn limit(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        retry_after: Option<u32>,
    ) -> ApiError {
        ApiError {
            retry_after,
            limit: true,
            ..ApiError::new(status, code, message)
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        let mut response = response.json(json!({"error": self.code, "message": self.message}));
        if self.limit {
            response.extensions_mut().insert(LimitHit(self.code));
        }
        response
    }
}

/// The answer to a failed session operation.
impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let message = error.to_string();
        let retry_after = error
            .retry_after()
            .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32);
        let (status, limit) = match &error {
            Error::NotFound => (StatusCode::NOT_FOUND, false),
            Error::PreconditionFailed { .. } => (StatusCode::PRECONDITION_FAILED, false),
            Error::Conflict { .. } => (StatusCode::CONFLICT, false),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, true),
            Error::InvalidData(_) => (StatusCode::BAD_REQUEST, false),
            Error::Unavailable { code, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                matches!(*code, "overloaded" | "node_full"),
            ),
            Error::Failed(_) => (StatusCode::BAD_GATEWAY, false),
        };
        ApiError {
            status,
            code: error.code(),
            message,
            retry_after,
            limit,
        }
    }
}

/// Reads a request body of at most `limit` bytes (413 past that) within the
/// node's `request_timeout` (408 past that).
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds max_session_bytes ({limit} bytes)"),
            None,
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let timeout = req
        .app_data::<Mesh>()
        .map(|mesh| mesh.node().config().request_timeout)
        .or_else(|| {
            req.app_data::<web::Data<Mesh>>()
                .map(|mesh| mesh.node().config().request_timeout)
        })
        .or_else(|| {
            req.app_data::<web::Data<Node>>()
                .map(|n| n.config().request_timeout)
        })
        .unwrap_or(std::time::Duration::from_secs(10));
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("bad_body", format!("could not read the request body: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::limit(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within request_timeout ({timeout:?})"),
                None,
            ))
        })
}

/// Refuses requests whose headers exceed `max_header_bytes` with 431.
async fn limit_headers(
    max: usize,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > max {
        let refusal = ApiError::limit(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            format!("request headers of {size} bytes exceed max_header_bytes ({max})"),
            None,
        );
        return Ok(req
            .into_response(refusal.error_response())
            .map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// JSON 404 for any unknown route.
async fn no_route(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(
        "no_route",
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// The methods a resource answers: the `Allow` header of its 405 answers.
#[derive(Clone, Copy, Debug)]
struct Allow(&'static str);

/// A resource at `path` answering the methods listed in `allow` (its routes
/// are added by the caller); any other method gets a JSON 405 with `Allow`.
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path)
        .app_data(Allow(allow))
        .default_service(web::to(wrong_method))
}

/// A route for `GET` and `HEAD`: a HEAD gets the GET answer's status and
/// headers without its body (load balancers probe health with HEAD).
pub(crate) fn get_or_head() -> actix_web::Route {
    use actix_web::guard;
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// JSON 405 for a known path with another method, with `Allow`.
async fn wrong_method(req: HttpRequest) -> HttpResponse {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
    .error_response();
    if let Some(Allow(allow)) = req.app_data::<Allow>() {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    }
    response
}

/// The internal application (peers only, every request signed).
pub(crate) fn internal_app(
    node: web::Data<Node>,
    forwarded_routes: Option<crate::mesh::ForwardedRoutes>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let served_by = DefaultHeaders::new().add((SERVED_BY, node.id().to_owned()));
    let gate = node.clone().into_inner();
    let counted = node.clone().into_inner();
    // Forwarded public requests: served here, with the application's routes
    // when it gave them (a `Mesh` in the app data, as on the public listener).
    let mesh = Mesh::detached(node.clone().into_inner());
    let forwarded = web::scope(FORWARD_PREFIX)
        .app_data(mesh)
        .wrap(actix_web::middleware::from_fn(internal::served_here))
        .configure(api::routes)
        .configure(move |cfg| {
            if let Some(routes) = &forwarded_routes {
                routes(cfg);
            }
        });
    // Gateway mode: requests a peer routed to this node's application.
    let gateway = crate::gateway::Slot::for_worker(&node);
    let gateway_mode = gateway.is_on();
    actix_web::App::new()
        .app_data(node)
        .app_data(gateway)
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            internal::authenticate(gate.clone(), req, next)
        }))
        .wrap(served_by)
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            metrics::count(
                counted.clone(),
                crate::metrics::Listener::Internal,
                req,
                next,
            )
        }))
        .app_data(web::PayloadConfig::new(internal::MAX_BATCH_BYTES))
        .service(forwarded)
        .configure(move |cfg| {
            if gateway_mode {
                cfg.service(
                    web::scope(crate::gateway::HOP_PREFIX)
                        .default_service(web::to(crate::gateway::hop)),
                );
            }
        })
        .configure(internal::routes)
        .configure(dashboard::internal_routes)
        .default_service(web::to(no_route))
}

/// Session errors answer as the JSON API does, so that handlers can use `?`
/// on [`crate::actix::Session`] and [`Mesh`] calls.
impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        ApiError::from(self.clone()).status
    }

    fn error_response(&self) -> HttpResponse {
        ApiError::from(self.clone()).error_response()
    }
}
