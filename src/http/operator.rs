//! Operator actions on the public listener: where a session lives
//! (`GET /api/cluster/whereis/{id}`, read-only) and a graceful leave
//! (`POST /api/admin/leave?node=<id>`, signed with the cluster secret).
//!
//! The leave request carries the same `x-sessionmesh-auth` signature as peer
//! traffic (see [`crate::auth`]), made by `sessionmesh leave` from the cluster
//! secret, over the method and the path with its query. The query names the
//! node that is to leave, so a signature captured on its way to one node cannot
//! make another leave, and a replay within the 30 s window only repeats the same
//! request, which is idempotent.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::auth;
use crate::session::SessionId;

/// Path of the leave request.
pub const LEAVE_PATH: &str = "/api/admin/leave";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/cluster/whereis/{id}", "GET, HEAD")
            .route(super::get_or_head().to(whereis)),
    )
    .service(super::resource(LEAVE_PATH, "POST").post(leave));
}

/// `GET /api/cluster/whereis/{id}`: the owner and replicas of a session id in
/// this node's ring. Placement only: it says nothing about whether the session
/// exists. Accepts a bare id or a cookie value (`<id>.<signature>`).
async fn whereis(node: super::Shared, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().get("id").unwrap_or_default();
    let id_text = raw.split_once('.').map_or(raw, |(id, _)| id);
    let id = SessionId::parse(id_text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_session_id",
            "not a session id: expected 22 URL-safe characters (or a cookie value)",
        )
    })?;
    let view = node.view();
    let copies = node.config().replication_factor.get();
    let describe = |id: &str| -> Value {
        match view.member(id) {
            Some(m) => json!({
                "node_id": id, "status": m.status,
                "public_addr": m.public_addr, "internal_addr": m.internal_addr,
            }),
            None => json!({ "node_id": id }),
        }
    };
    let mut list = view.ring.preference_list(id.as_bytes(), copies);
    let owner = list.next().map(|n| describe(n));
    let replicas: Vec<Value> = list.map(|n| describe(n)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "id": id.to_string(),
        "owner": owner,
        "replicas": replicas,
        "replication_factor": copies,
        "ring": { "fingerprint": view.ring.fingerprint(), "nodes": view.ring.nodes() },
        "answered_by": node.id(),
    })))
}

#[derive(Deserialize)]
struct LeaveQuery {
    node: Option<String>,
}

/// `POST /api/admin/leave?node=<id>`: starts this node's graceful leave, as on
/// SIGTERM; answers 202 before the node stops serving.
async fn leave(node: super::Shared, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |pq| pq.as_str());
    let header = req
        .headers()
        .get(auth::HEADER)
        .and_then(|v| v.to_str().ok());
    let requester = node
        .signer()
        .verify(header, "POST", path, b"")
        .map_err(|error| {
            tracing::warn!(peer = ?req.peer_addr(), %error, "leave request refused");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "{error}: sign the request with the cluster secret (sessionmesh leave does)"
                ),
            )
        })?
        .to_owned();
    let query: LeaveQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    match query.node.as_deref() {
        None => Err(ApiError::bad_request(
            "missing_node",
            "name the node that is to leave: ?node=<node_id>",
        )),
        Some(named) if named != node.id() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_node",
            format!(
                "this is {}, not {named}: send the request to that node's own address",
                node.id()
            ),
        )),
        Some(_) => {
            tracing::info!(node = %node.id(), %requester, "leave requested");
            node.request_leave();
            Ok(HttpResponse::Accepted().json(json!({
                "node_id": node.id(),
                "status": "leaving",
                "message": "leaving the cluster: handing off, then the process exits",
            })))
        }
    }
}
