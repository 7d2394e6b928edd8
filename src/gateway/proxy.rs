//! The proxy's I/O: a request body streamed from actix-web into reqwest, an answer streamed back, and the JSON errors of a failed hop.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::task::JoinHandle;

use super::headers;
use crate::http::ApiError;

/// Chunks of a request body buffered between the client and the next hop.
const PUMP_CHUNKS: usize = 8;

/// Aborts a request-scoped task when the request's answer is dropped.
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the request has a body to pass on.
pub(crate) fn has_body(req: &HttpRequest) -> bool {
    let h = req.headers();
    if h.contains_key(actix_web::http::header::TRANSFER_ENCODING) {
        return true;
    }
    match h
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        Some(len) => len.trim() != "0",
        // HTTP/2 frames a body without either header.
        None => req.version() == actix_web::http::Version::HTTP_2,
    }
}

/// Bodies up to this size (by `Content-Length`) are read before the hop to
/// the owner, so that they can be sent again, to this node's application,
/// when the owner cannot be reached (form posts: logins, logouts).
pub(crate) const REPLAYABLE: usize = 64 * 1024;

/// A request's body, as the gateway passes it on.
pub(crate) enum Body {
    /// None; the payload is kept when it is a WebSocket upgrade's connection.
    Empty(Option<web::Payload>),
    /// A small body, read already (it can be sent twice).
    Small(Bytes),
    /// Streamed as it arrives.
    Stream(web::Payload),
}

impl Body {
    /// How `req`'s body is passed on; small bodies are read here (bounded
    /// by `request_timeout`).
    pub(crate) async fn of(req: &HttpRequest, payload: web::Payload) -> Result<Body, ApiError> {
        if is_websocket(req) {
            return Ok(Body::Empty(Some(payload)));
        }
        if !has_body(req) {
            return Ok(Body::Empty(None));
        }
        let length = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        match length {
            Some(length) if length <= REPLAYABLE => Ok(Body::Small(
                crate::http::read_body(req, payload, REPLAYABLE).await?,
            )),
            _ => Ok(Body::Stream(payload)),
        }
    }

    /// A copy to send again if the first try reached no one, when there can be one.
    pub(crate) fn replay(&self) -> Option<Body> {
        match self {
            Body::Empty(None) => Some(Body::Empty(None)),
            Body::Small(bytes) => Some(Body::Small(bytes.clone())),
            Body::Empty(Some(_)) | Body::Stream(_) => None,
        }
    }

    /// Puts the body on `request`: the pump's guard of a streamed body, and
    /// the upgrade's payload, come back.
    pub(crate) fn attach(
        self,
        request: reqwest::RequestBuilder,
    ) -> (
        reqwest::RequestBuilder,
        Option<AbortOnDrop>,
        Option<web::Payload>,
    ) {
        match self {
            Body::Empty(kept) => (request, None, kept),
            Body::Small(bytes) => (request.body(bytes), None, None),
            Body::Stream(payload) => {
                let (body, pump) = stream_body(payload);
                (request.body(body), Some(pump), None)
            }
        }
    }
}

/// The request body as reqwest sends it: chunks read from actix-web's
/// payload by a task of this worker (the payload is bound to it) as the next
/// hop takes them. The guard stops the task with the answer.
fn stream_body(mut payload: web::Payload) -> (reqwest::Body, AbortOnDrop) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(PUMP_CHUNKS);
    let pump = actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (reqwest::Body::wrap_stream(stream), AbortOnDrop(pump))
}

/// An answer's body streamed from the next hop; holds the request body's
/// pump until the answer is done.
struct Streamed {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>>>>,
    _pump: Option<AbortOnDrop>,
}

impl Stream for Streamed {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx).map(|item| {
            item.map(|chunk| {
                chunk.map_err(|e| {
                    tracing::debug!(error = %e, "the upstream broke off an answer");
                    actix_web::error::ErrorBadGateway(e)
                })
            })
        })
    }
}

/// The answer of the next hop as actix-web sends it on: its status and
/// headers (hop-by-hop and reserved ones removed, plus `extra`), its body
/// streamed.
pub(crate) fn relay(
    response: reqwest::Response,
    extra: Vec<(String, String)>,
    pump: Option<AbortOnDrop>,
) -> HttpResponse {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponseBuilder::new(status);
    let all: Vec<(&str, &[u8])> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let mut length = None;
    for (name, value) in headers::pass_on(&all) {
        if name == "content-length" {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            continue;
        }
        builder.append_header((name, value));
    }
    for (name, value) in extra {
        builder.append_header((name, value));
    }
    let body = Streamed {
        inner: Box::pin(response.bytes_stream()),
        _pump: pump,
    };
    match length {
        Some(length) => builder.body(SizedStream::new(length, body)),
        None => builder.streaming(body),
    }
}

/// Whether the request asks for a WebSocket upgrade (passed through to the
/// application as one).
pub(crate) fn is_websocket(req: &HttpRequest) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == actix_web::http::Method::GET
        && has(actix_web::http::header::CONNECTION, "upgrade")
        && has(actix_web::http::header::UPGRADE, "websocket")
}

/// Joins the client's upgraded connection and the next hop's, once the next
/// hop answered 101: the client's bytes (the request's payload after the
/// upgrade) are copied to it by a task of this worker, its bytes are the
/// answer's body. Either side closing ends both.
pub(crate) async fn splice(
    response: reqwest::Response,
    extra: Vec<(String, String)>,
    mut payload: web::Payload,
) -> HttpResponse {
    use tokio::io::{AsyncRead, AsyncWriteExt};

    let mut builder = HttpResponseBuilder::new(StatusCode::SWITCHING_PROTOCOLS);
    let all: Vec<(&str, &[u8])> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    for (name, value) in headers::pass_on(&all) {
        builder.append_header((name, value));
    }
    for (name, value) in extra {
        builder.append_header((name, value));
    }
    builder.upgrade("websocket");
    let io = match response.upgrade().await {
        Ok(io) => io,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the WebSocket upgrade failed: {e}"),
            )
            .error_response()
        }
    };
    let (mut read, mut write) = tokio::io::split(io);
    let pump = actix_web::rt::spawn(async move {
        while let Some(Ok(chunk)) = payload.next().await {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        let mut buf = [0u8; 16 * 1024];
        let mut read_buf = tokio::io::ReadBuf::new(&mut buf);
        match Pin::new(&mut read).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if read_buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(read_buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    });
    let body = Spliced {
        inner: Box::pin(body),
        _pump: AbortOnDrop(pump),
    };
    builder.streaming(body)
}

/// The next hop's side of a spliced connection, holding the client's pump.
struct Spliced {
    inner: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>>>>,
    _pump: AbortOnDrop,
}

impl Stream for Spliced {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// How sending to the next hop failed.
#[derive(Debug)]
pub(crate) enum HopError {
    /// No connection could be made: nothing was sent.
    Unreachable(String),
    /// No answer head within the bound.
    Timeout(Duration),
    /// The connection broke, or the answer was not HTTP.
    Broken(String),
}

/// Sends `request`, waiting at most `timeout` for the answer head.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, HopError> {
    match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => Err(HopError::Timeout(timeout)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) if e.is_connect() => Err(HopError::Unreachable(crate::tls::error_chain(&e))),
        Ok(Err(e)) if e.is_timeout() => Err(HopError::Timeout(timeout)),
        Ok(Err(e)) => Err(HopError::Broken(crate::tls::error_chain(&e))),
    }
}

/// The JSON answer when the application cannot be asked: 502
/// `upstream_unavailable`, or 504 `upstream_timeout`.
pub(crate) fn upstream_error(error: &HopError, upstream: &str) -> HttpResponse {
    let answer = match error {
        HopError::Unreachable(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("the application at {upstream} cannot be reached: {e}"),
        ),
        HopError::Broken(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("the application at {upstream} failed to answer: {e}"),
        ),
        HopError::Timeout(t) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the application at {upstream} did not answer within upstream_timeout ({t:?})"),
        ),
    };
    answer.error_response()
}
