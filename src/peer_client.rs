//! The typed client for peers' internal listeners: forwarding public requests to a
//! session's owner over pooled keep-alive connections.
//!
//! One client per actix worker thread: each worker runs its own single-threaded
//! runtime, and a connection pool must live on the runtime that drives it.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::auth::{self, Signer};
use crate::http::ApiError;
use crate::link::{Answer, LinkError, Links};
use crate::ring::NodeId;
use crate::session::SessionId;
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
            | auth::SESSION_HEADER
            | ENTRY_NODE
    )
}

/// Largest owner answer read whole before it is relayed (one write to the
/// client); larger answers, or answers of unknown length, stream.
const INLINE_ANSWER_BYTES: u64 = 256 * 1024;

/// What a holder answered to a read over a link.
pub enum HolderRead {
    /// The session's data (compact JSON object).
    Data(Bytes),
    /// The holder has no such session.
    NoSession,
    /// The peer does not serve links (an older version): forward over HTTP.
    NoLink,
}

pub struct PeerClient {
    http: reqwest::Client,
    /// Session reads ask the holder over a link (see [`crate::link`]).
    links: Links,
    transport: PeerTransport,
    signer: Signer,
    self_id: NodeId,
    /// Bounds the forwards in flight from this worker; past it, fail fast.
    inflight: tokio::sync::Semaphore,
    /// `<scheme>://<internal addr>/` per peer address, parsed once: a forward only
    /// sets the path and query (no host parsing per request).
    bases: parking_lot::Mutex<HashMap<String, reqwest::Url>>,
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
            links: Links::new(self_id.clone(), signer.clone(), timeout, transport)?,
            transport: transport.clone(),
            signer,
            self_id,
            inflight: tokio::sync::Semaphore::new(max_inflight),
            bases: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The URL of `path` and `query` on the peer at `internal_addr`.
    fn url(&self, internal_addr: &str, path: &str, query: Option<&str>) -> Option<reqwest::Url> {
        let mut url = {
            let mut bases = self.bases.lock();
            match bases.get(internal_addr) {
                Some(base) => base.clone(),
                None => {
                    let base = reqwest::Url::parse(&self.transport.url(internal_addr, "/")).ok()?;
                    // Peers come and go; the map stays bounded by the peers seen
                    // recently.
                    if bases.len() >= 1024 {
                        bases.clear();
                    }
                    bases.insert(internal_addr.to_owned(), base.clone());
                    base
                }
            }
        };
        url.set_path(path);
        url.set_query(query);
        Some(url)
    }

    /// Reads session `id` from `holder` (at `internal_addr`) over a link, as
    /// the holder serves a forwarded read.
    pub async fn read_session(
        &self,
        holder: &str,
        internal_addr: &str,
        id: &SessionId,
    ) -> Result<HolderRead, ApiError> {
        let _permit = self.permit()?;
        match self.links.read(internal_addr, id).await {
            Ok(Answer::Found(data)) => Ok(HolderRead::Data(data)),
            Ok(Answer::Missing) => Ok(HolderRead::NoSession),
            Err(LinkError::Unsupported) => Ok(HolderRead::NoLink),
            Err(LinkError::Connect(error)) => {
                tracing::debug!(%holder, %error, "link failed");
                Err(ApiError::owner_unavailable(holder))
            }
            Err(error) => {
                tracing::debug!(%holder, %error, "link read failed");
                Err(ApiError::owner_failed(holder, &error))
            }
        }
    }

    /// A slot among the requests in flight to other nodes from this worker.
    fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.inflight.try_acquire().map_err(|_| {
            ApiError::limit(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight to other nodes (max_forwards); retry shortly",
                Some(1),
            )
        })
    }

    /// Sends `req` (with `body`) to the internal listener at `internal_addr` and
    /// relays the owner's answer, marked with `x-entry-node`. `session` is the
    /// session id this node read from the request's validly signed cookie, if
    /// any: it travels in a signed header so that the owner need not check the
    /// cookie again.
    pub async fn forward(
        &self,
        owner: &str,
        internal_addr: &str,
        req: &HttpRequest,
        body: Bytes,
        session: Option<&SessionId>,
    ) -> Result<HttpResponse, ApiError> {
        // Held until the owner's answer is read (or, when it streams, starts).
        let _permit = self.permit()?;
        let mut path = String::with_capacity(FORWARD_PREFIX.len() + req.path().len());
        path.push_str(FORWARD_PREFIX);
        path.push_str(req.path());
        let query = Some(req.query_string()).filter(|q| !q.is_empty());
        let url = self
            .url(internal_addr, &path, query)
            .ok_or_else(|| ApiError::owner_failed(owner, &"bad internal address"))?;
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .map_err(|_| ApiError::bad_request("bad_method", "unsupported HTTP method"))?;
        let session_text = session.map(SessionId::as_str);
        let signature = self.signer.sign_with_session(
            &self.self_id,
            method.as_str(),
            &path,
            &body,
            session_text,
        );
        let mut request = reqwest::Request::new(method, url);
        {
            use reqwest::header::{HeaderName, HeaderValue};
            let headers = request.headers_mut();
            headers.reserve(req.headers().len() + 3);
            for (name, value) in req.headers() {
                if is_hop_by_hop(name.as_str()) {
                    continue;
                }
                // Valid in actix's header map, so valid here; skipped otherwise.
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_str().as_bytes()),
                    HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    headers.append(name, value);
                }
            }
            let signed = |text: &str| {
                HeaderValue::from_str(text)
                    .map_err(|_| ApiError::bad_request("bad_node_id", "unusable node id"))
            };
            headers.insert(auth::HEADER, signed(&signature)?);
            headers.insert(ENTRY_NODE, signed(&self.self_id)?);
            if let Some(text) = session_text {
                headers.insert(auth::SESSION_HEADER, signed(text)?);
            }
        }
        *request.body_mut() = Some(body.into());
        let response = self.http.execute(request).await.map_err(|error| {
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
        match response.content_length() {
            // A page or a session document: read it whole, answer in one piece.
            Some(len) if len <= INLINE_ANSWER_BYTES => {
                let body = response.bytes().await.map_err(|error| {
                    tracing::debug!(%owner, %error, "forwarded answer broke off");
                    ApiError::owner_failed(owner, &error)
                })?;
                Ok(builder.body(body))
            }
            len => {
                if let Some(len) = len {
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
    }
}
