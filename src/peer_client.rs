//! The typed client for peers' internal listeners: forwarding public requests to a
//! session's owner over pooled keep-alive connections.
//!
//! One client per actix worker thread: each worker runs its own single-threaded
//! runtime, and a connection pool must live on the runtime that drives it.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::auth::{self, Signer};
use crate::http::ApiError;
use crate::ring::NodeId;
use crate::tls::PeerTransport;

/// Header naming the entry node on forwarded requests and their responses.
pub const ENTRY_NODE: &str = "x-entry-node";
/// Prefix under which the internal listener serves forwarded public routes.
pub const FORWARD_PREFIX: &str = "/fwd";

/// Headers that describe one connection, not the request, plus our own
/// headers that a client must not be able to inject.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | auth::HEADER
            | ENTRY_NODE
    )
}

pub struct PeerClient {
    http: reqwest::Client,
    transport: PeerTransport,
    signer: Signer,
    self_id: NodeId,
    /// Bounds the forwards in flight from this worker; past it, fail fast.
    inflight: tokio::sync::Semaphore,
}

impl PeerClient {
    pub fn new(
        self_id: NodeId,
        signer: Signer,
        timeout: Duration,
        max_inflight: usize,
        transport: &PeerTransport,
    ) -> anyhow::Result<PeerClient> {
        let http = transport
            .client_builder()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PeerClient {
            http,
            transport: transport.clone(),
            signer,
            self_id,
            inflight: tokio::sync::Semaphore::new(max_inflight),
        })
    }

    /// Sends `req` (with `body`) to the internal listener at `internal_addr` and
    /// streams the owner's answer back, marked with `x-entry-node`.
    pub async fn forward(
        &self,
        owner: &str,
        internal_addr: &str,
        req: &HttpRequest,
        body: Bytes,
    ) -> Result<HttpResponse, ApiError> {
        // Held until the owner's answer starts; then the body streams back.
        let _permit = self.inflight.try_acquire().map_err(|_| {
            ApiError::limit(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight to other nodes (max_forwards); retry shortly",
                Some(1),
            )
        })?;
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or(req.path(), |pq| pq.as_str());
        let path = format!("{FORWARD_PREFIX}{path_and_query}");
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .map_err(|_| ApiError::bad_request("bad_method", "unsupported HTTP method"))?;
        let mut request = self
            .http
            .request(method.clone(), self.transport.url(internal_addr, &path))
            .header(
                auth::HEADER,
                self.signer
                    .sign(&self.self_id, method.as_str(), &path, &body),
            )
            .header(ENTRY_NODE, &*self.self_id);
        for (name, value) in req.headers() {
            if !is_hop_by_hop(name.as_str()) {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        let response = request.body(body).send().await.map_err(|error| {
            tracing::debug!(%owner, %error, "forward failed");
            if error.is_connect() {
                ApiError::owner_unavailable(owner)
            } else {
                ApiError::owner_failed(owner, &error)
            }
        })?;

        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut builder = HttpResponse::build(status);
        for (name, value) in response.headers() {
            if !is_hop_by_hop(name.as_str()) {
                builder.append_header((name.as_str(), value.as_bytes()));
            }
        }
        builder.insert_header((ENTRY_NODE, &*self.self_id));
        if let Some(len) = response.content_length() {
            builder.no_chunking(len);
        }
        let owner: NodeId = owner.into();
        Ok(
            builder.streaming(response.bytes_stream().map_err(move |error| {
                tracing::warn!(%owner, %error, "forwarded response broke off");
                error
            })),
        )
    }
}
