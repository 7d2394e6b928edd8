//! The internal listener's gate: every request must carry a valid signature made
//! with the cluster secret (see [`crate::auth`]); a signed request with an
//! `x-entry-node` header is a forwarded public request, served here without a
//! further hop.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde_json::json;

use super::ApiError;
use crate::auth::{self, Signer};
use crate::node::Node;
use crate::peer_client::ENTRY_NODE;
use crate::replication::client::{Batch, BatchAck, REPLICATE_PATH, SESSIONS_PATH};
use crate::session::SessionId;

/// Marks a request that a peer forwarded here: it is served locally.
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub entry_node: String,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/ping", web::get().to(ping))
        .route(REPLICATE_PATH, web::post().to(replicate))
        .route(&format!("{SESSIONS_PATH}/{{id}}"), web::get().to(copy));
}

/// Largest replication batch body accepted (batches hold at most 512 copies).
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// `POST /internal/replicate`: merges copies sent by a peer.
async fn replicate(node: web::Data<Node>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("bad_batch", format!("malformed replication batch: {e}"))
    })?;
    let received = batch.records.len();
    let applied = node.replication().apply(batch.records);
    Ok(HttpResponse::Ok().json(BatchAck { received, applied }))
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

pub(super) async fn authenticate(
    signer: Arc<Signer>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |pq| pq.as_str())
        .to_owned();
    let header = req
        .headers()
        .get(auth::HEADER)
        .and_then(|v| v.to_str().ok());
    match signer.verify(header, req.method().as_str(), &path) {
        Ok(_signer_node) => {
            if let Some(entry) = req.headers().get(ENTRY_NODE).and_then(|v| v.to_str().ok()) {
                let forwarded = Forwarded {
                    entry_node: entry.to_owned(),
                };
                req.extensions_mut().insert(forwarded);
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(error) => {
            tracing::debug!(peer = ?req.peer_addr(), %error, "internal request refused");
            let response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string())
                    .error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
