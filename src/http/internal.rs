//! The internal listener's gate: every request must carry a valid signature made
//! with the cluster secret (see [`crate::auth`]); requests under `/fwd` are
//! public requests a peer forwarded (versions before operation frames do),
//! served here without a further hop.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::auth;
use crate::link::LINK_PATH;
use crate::membership::{prove, Proof, ADMISSION_PATH};
use crate::node::Node;
use crate::replication::client::{REPLICATE_PATH, SESSIONS_PATH};
use crate::session::{now_millis, SessionId};

/// Middleware of the `/fwd` scope: the forwarded request's session operations
/// are served by this node (see [`crate::mesh::from_peer`]).
pub(super) async fn served_here(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    crate::mesh::from_peer(next.call(req)).await
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/ping", web::get().to(ping))
        .route(ADMISSION_PATH, web::get().to(admission))
        .route(REPLICATE_PATH, web::post().to(replicate))
        .route(&format!("{SESSIONS_PATH}/{{id}}"), web::get().to(copy))
        .route(LINK_PATH, web::get().to(crate::link::server::accept));
}

#[derive(serde::Deserialize)]
struct Challenge {
    nonce: String,
}

/// `GET /internal/admission?nonce=N`: proves this node knows the cluster secret
/// (see [`crate::membership`]'s admission).
async fn admission(node: web::Data<Node>, challenge: web::Query<Challenge>) -> HttpResponse {
    let config = node.config();
    HttpResponse::Ok().json(Proof {
        cluster_id: config.cluster_id.clone(),
        node_id: node.id().to_owned(),
        generation: node.generation(),
        proof: prove(
            node.signer(),
            &config.cluster_id,
            node.id(),
            node.generation(),
            &challenge.nonce,
        ),
    })
}

/// Largest replication batch body accepted (batches hold at most 512 copies).
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// `POST /internal/replicate`: merges copies sent by a peer.
async fn replicate(node: web::Data<Node>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let ack = node.replication().apply_batch(&body).map_err(|e| {
        ApiError::bad_request("bad_batch", format!("malformed replication batch: {e}"))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(ack))
}

/// `GET /internal/sessions/{id}`: this node's copy (live or tombstone), for a
/// peer's read-through.
async fn copy(node: web::Data<Node>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = SessionId::parse(&id)
        .ok_or_else(|| ApiError::not_found("no_session", "malformed session id"))?;
    match node.replication().copy(&id) {
        Some(record) => Ok(HttpResponse::Ok().json(record)),
        None => Err(ApiError::not_found("no_session", "no copy here")),
    }
}

/// `GET /internal/ping`: who answers (a signed liveness probe for peers).
async fn ping(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"node_id": node.id(), "generation": node.generation()}))
}

/// Checks the signature of an internal request before any handler runs, and
/// before its body is read: the signature covers the body's digest, which the
/// request states in [`auth::DIGEST_HEADER`]. Only a signed request's body is
/// then read (bounded) and checked against that digest, and handed on.
pub(super) async fn authenticate(
    node: Arc<Node>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refuse = |req: ServiceRequest, status: StatusCode, code: &'static str, message: String| {
        let response = ApiError::new(status, code, message).error_response();
        Ok(req.into_response(response).map_into_right_body())
    };
    let verified = {
        let headers = req.headers();
        let header = headers.get(auth::HEADER).and_then(|v| v.to_str().ok());
        // A header that is not text cannot have been signed: refused.
        let text = |name: &str| match headers.get(name).map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(text)) => Ok(Some(text)),
            Some(Err(_)) => Err(auth::AuthError::Malformed),
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or(req.path(), |pq| pq.as_str());
        text(auth::SESSION_HEADER).and_then(|session| {
            let digest = text(auth::DIGEST_HEADER)?.unwrap_or(auth::empty_body_digest());
            let verified = node.signer().verify_request(
                header,
                req.method().as_str(),
                path,
                digest,
                session,
            )?;
            // Last: a request refused for another reason does not use up its nonce.
            node.replays().check(&verified, now_millis())?;
            Ok(digest.to_owned())
        })
    };
    let digest = match verified {
        Ok(digest) => digest,
        Err(error) => {
            if matches!(error, auth::AuthError::Replayed) {
                node.metrics().replayed_requests.inc();
                tracing::warn!(peer = ?req.peer_addr(), "a signed internal request came again: refused");
            }
            tracing::debug!(peer = ?req.peer_addr(), %error, "internal request refused");
            return refuse(
                req,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                error.to_string(),
            );
        }
    };
    // A link upgrade's payload is the link itself: it is signed with no body
    // and left for the link to read. A gateway request's body is streamed to
    // the application: it is signed without it (the signed path confines
    // such a signature to the gateway).
    let is_link = req.path() == LINK_PATH;
    let is_gateway = req.path() == crate::gateway::HOP_PREFIX
        || req
            .path()
            .strip_prefix(crate::gateway::HOP_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'));
    if !is_link && !is_gateway {
        let mut payload = req.take_payload();
        let mut body = BytesMut::new();
        let mut hasher = Sha256::new();
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else {
                return refuse(
                    req,
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "could not read the request body".into(),
                );
            };
            if body.len() + chunk.len() > MAX_BATCH_BYTES {
                return refuse(
                    req,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "internal request body too large".into(),
                );
            }
            hasher.update(&chunk);
            body.extend_from_slice(&chunk);
        }
        let actual = if body.is_empty() {
            auth::empty_body_digest().to_owned()
        } else {
            auth::hex(&hasher.finalize())
        };
        if actual != digest {
            tracing::debug!(peer = ?req.peer_addr(), "internal request body does not match its signed digest");
            return refuse(
                req,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the body does not match its signed digest".into(),
            );
        }
        req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    }
    Ok(next.call(req).await?.map_into_left_body())
}
