//! The HTTP side: public routes (pages, session API, cluster and health), the
//! internal listener, and the pieces they share (errors, body limits, routing to
//! the owner).
//!
//! The same session routes serve both listeners: on the public one they forward to
//! the session's owner when this node does not own it; on the internal one (under
//! [`FORWARD_PREFIX`], behind the cluster-secret check) they always serve locally.

mod admin;
mod api;
mod dashboard;
mod internal;
mod metrics;
mod operator;
mod pages;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::json;

use crate::node::Node;
use crate::peer_client::{PeerClient, FORWARD_PREFIX};
use crate::replication::OwnerError;
use crate::ring::NodeId;
use crate::routing::{self, Route};
use crate::session::{SessionId, WriteError};

pub use internal::Forwarded;
pub use operator::LEAVE_PATH;

/// Header naming the node that served a response.
pub const SERVED_BY: &str = "x-served-by";

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

    pub fn owner_unavailable(owner: &str) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
                format!("the node that owns this session ({owner}) cannot be reached"),
            )
        }
    }

    pub fn owner_failed(owner: &str, error: &dyn std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "owner_failed",
            format!("forwarding to the owner ({owner}) failed: {error}"),
        )
    }

    pub fn code(&self) -> &'static str {
        self.code
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

/// Everything a session handler needs.
pub(crate) struct Ctx {
    pub req: HttpRequest,
    pub node: web::Data<Node>,
    pub peers: web::Data<PeerClient>,
    /// The session id read from a validly signed cookie by [`Ctx::cookie_session`],
    /// passed on (signed) to the owner when the request is forwarded.
    verified: std::cell::Cell<Option<SessionId>>,
}

impl Ctx {
    /// Whether this request came from a peer (and so must be served here).
    pub fn forwarded(&self) -> bool {
        self.req.extensions().contains::<Forwarded>()
    }

    /// The session named by the request's cookie, if its signature is valid.
    ///
    /// On a forwarded request, the session id that the entry node verified
    /// (carried in a header covered by the internal signature) is taken as is:
    /// the cookie's HMAC is checked once per request, not on every hop. On the
    /// public listener that header is never read.
    pub fn cookie_session(&self) -> Option<SessionId> {
        let passed = self
            .req
            .extensions()
            .get::<Forwarded>()
            .and_then(|f| f.session);
        let id = passed.or_else(|| self.node.cookies().from_request(&self.req));
        self.verified.set(id);
        id
    }

    /// Serves `local` here when this node should serve `id`, else forwards the
    /// request (with `body`) to the owner and relays its answer (see
    /// [`Ctx::on_holder`]).
    pub async fn on_owner(
        &self,
        id: &SessionId,
        body: Bytes,
        local: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
    ) -> Result<HttpResponse, ApiError> {
        let session = self.verified.get();
        self.on_holder(id, local, |holder, addr| {
            let body = body.clone();
            async move {
                self.peers
                    .forward(&holder, &addr, &self.req, body, session.as_ref())
                    .await
            }
        })
        .await
    }

    /// Serves `local` here when this node should serve `id`, else asks the
    /// owner with `remote(owner, its internal address)`. When the owner cannot
    /// be reached, the next holder of the session is tried (a replica takes
    /// over at once, without waiting for the failure detector); when that is
    /// this node, it serves locally. A request that came from a peer is served
    /// here.
    pub async fn on_holder<R, Fut>(
        &self,
        id: &SessionId,
        local: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
        mut remote: R,
    ) -> Result<HttpResponse, ApiError>
    where
        R: FnMut(NodeId, String) -> Fut,
        Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
    {
        if self.forwarded() {
            return local.await;
        }
        // Held across the forwards below: a snapshot, not a lock.
        let view = self.node.view();
        if routing::route(&view.ring, id.as_bytes(), self.node.id(), false) == Route::Local {
            return local.await;
        }
        let copies = self.node.config().replication_factor.get();
        // A request that never reached the owner can go to the next holder; a
        // read can go there whatever happened to it.
        let idempotent = matches!(
            *self.req.method(),
            actix_web::http::Method::GET | actix_web::http::Method::HEAD
        );
        let mut unreachable = None;
        for holder in view.ring.preference_list(id.as_bytes(), copies) {
            if unreachable.is_some() {
                // The owner (or an earlier holder) is down: a replica takes over.
                let stats = self.node.replication().stats();
                stats
                    .takeovers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if **holder == *self.node.id() {
                return local.await;
            }
            let Some(member) = view.member(holder) else {
                continue;
            };
            let started = std::time::Instant::now();
            let result = remote(holder.clone(), member.internal_addr.clone()).await;
            metrics::observe_forward(&self.node, started, &result);
            match result {
                Err(e)
                    if e.code() == "owner_unavailable"
                        || (idempotent && e.code() == "owner_failed") =>
                {
                    unreachable = Some(e)
                }
                answer => return answer,
            }
        }
        match unreachable {
            Some(e) => Err(e),
            None => local.await,
        }
    }

    /// Creates a session on this node when it can own one, else forwards the
    /// request to the owner of a random id, which mints one of its own.
    pub async fn create<F, Fut>(&self, body: Bytes, local: F) -> Result<HttpResponse, ApiError>
    where
        F: FnOnce(SessionId) -> Fut,
        Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
    {
        match self.node.mint_owned_id() {
            Some(id) => local(id).await,
            None if self.forwarded() || self.node.view().ring.is_empty() => {
                local(SessionId::random()).await
            }
            None => {
                let any = SessionId::random();
                self.on_owner(&any, body, local(any)).await
            }
        }
    }
}

/// The answer to an owner-side failure.
impl From<OwnerError> for ApiError {
    fn from(e: OwnerError) -> ApiError {
        match e {
            OwnerError::Write(WriteError::NotFound) => ApiError::not_found(
                "no_session",
                "no such session (unknown, expired or deleted)",
            ),
            OwnerError::Write(WriteError::VersionMismatch { current, expected }) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!(
                    "If-Match names version {expected} but the session is at version {current}"
                ),
            ),
            OwnerError::Full { max } => ApiError::limit(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_full",
                format!("this node holds max_sessions ({max}) sessions; retry later or add nodes"),
                Some(5),
            ),
            e @ OwnerError::Write(WriteError::TooLarge { .. }) => ApiError::limit(
                StatusCode::PAYLOAD_TOO_LARGE,
                "session_too_large",
                e.to_string(),
                None,
            ),
            OwnerError::Write(WriteError::IdTaken) => ApiError::new(
                StatusCode::CONFLICT,
                "id_collision",
                "session id already in use; retry",
            ),
            e @ OwnerError::Stale { .. } => ApiError {
                retry_after: Some(0),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stale_copy", e.to_string())
            },
            e @ OwnerError::Replication { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "replication_failed",
                    e.to_string(),
                )
            },
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
        .app_data::<web::Data<Node>>()
        .map_or(std::time::Duration::from_secs(10), |n| {
            n.config().request_timeout
        });
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
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path)
        .app_data(Allow(allow))
        .default_service(web::to(wrong_method))
}

/// A route for `GET` and `HEAD`: a HEAD gets the GET answer's status and
/// headers without its body (load balancers probe health with HEAD).
fn get_or_head() -> actix_web::Route {
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

/// Routes that name a session: served on the public listener, and forwarded
/// to the internal one under [`FORWARD_PREFIX`].
fn session_routes(cfg: &mut web::ServiceConfig) {
    pages::routes(cfg);
    api::routes(cfg);
}

/// The public application (browsers, back-end services, operators).
pub fn public_app(
    node: web::Data<Node>,
    peers: web::Data<PeerClient>,
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
    let counted = node.clone();
    let max_header_bytes = node.config().max_header_bytes;
    actix_web::App::new()
        .app_data(node)
        .app_data(peers)
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            limit_headers(max_header_bytes, req, next)
        }))
        .wrap(served_by)
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            metrics::count(counted.clone(), crate::metrics::Listener::Public, req, next)
        }))
        .configure(session_routes)
        .configure(admin::routes)
        .configure(dashboard::routes)
        .configure(metrics::routes)
        .configure(operator::routes)
        .default_service(web::to(no_route))
}

/// The internal application (peers only, every request signed).
pub fn internal_app(
    node: web::Data<Node>,
    peers: web::Data<PeerClient>,
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
    let signer = Arc::new(node.signer().clone());
    let counted = node.clone();
    actix_web::App::new()
        .app_data(node)
        .app_data(peers)
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            internal::authenticate(signer.clone(), req, next)
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
        .service(web::scope(FORWARD_PREFIX).configure(session_routes))
        .configure(internal::routes)
        .configure(dashboard::internal_routes)
        .default_service(web::to(no_route))
}

impl actix_web::FromRequest for Ctx {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Ctx, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let node = req.app_data::<web::Data<Node>>().cloned();
        let peers = req.app_data::<web::Data<PeerClient>>().cloned();
        std::future::ready(match (node, peers) {
            (Some(node), Some(peers)) => Ok(Ctx {
                req: req.clone(),
                node,
                peers,
                verified: std::cell::Cell::new(None),
            }),
            _ => Err(actix_web::error::ErrorInternalServerError(
                "application state missing",
            )),
        })
    }
}
