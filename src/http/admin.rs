//! Operator routes on the public listener: cluster view and health.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::membership::Status;
use crate::node::Node;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/cluster", "GET, HEAD").route(super::get_or_head().to(cluster)),
    )
    .service(super::resource("/healthz", "GET, HEAD").route(super::get_or_head().to(healthz)))
    .service(super::resource("/readyz", "GET, HEAD").route(super::get_or_head().to(readyz)));
}

/// `GET /api/cluster`: this node's view of the cluster.
async fn cluster(node: super::Shared) -> HttpResponse {
    HttpResponse::Ok().json(view(&node).await)
}

/// This node's view of the cluster (`/api/cluster`).
pub(super) async fn view(node: &Node) -> serde_json::Value {
    let view = node.view();
    let members = node.membership().report().await;
    let copies = node.config().replication_factor.get();
    let counts = crate::metrics::session_counts(&view.ring, node.store(), node.id(), copies);
    let shares = view.ring.shares();
    json!({
        "node_id": node.id(),
        "generation": node.generation(),
        "status": node.status(),
        "members": members,
        "ring": {
            "fingerprint": view.ring.fingerprint(),
            "vnodes_per_node": view.ring.vnodes_per_node(),
            "replication_factor": copies,
            "nodes": view.ring.nodes(),
            "shares": shares,
        },
        // Ring members that vanished without leaving, still counted until
        // `dead_node_grace`: with as many as the ring holds, this node has no
        // majority and takes no write.
        "missing": view.missing.keys().collect::<Vec<_>>(),
        "quorum": node.replication().quorum(),
        // Whether this node holds its ownership leases now: without them it
        // checks with the other holders before serving from memory, and a
        // write waits for them (503 `no_lease` when they do not come).
        "lease": { "held": node.replication().lease_held() },
        "sessions": { "owned": counts.owned, "replica": counts.replica, "other": counts.other },
        "replication": node.replication().stats(),
        "handoff": node.replication().progress(),
        "repair": { "hints_pending": node.replication().hints_pending() },
    })
}

/// `GET /healthz`: 200 while the process runs.
async fn healthz(node: super::Shared) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "node_id": node.id()}))
}

/// `GET /readyz`: 200 only while this node is `ready` and in its own ring.
async fn readyz(node: super::Shared) -> HttpResponse {
    let status = node.status();
    let in_ring = node.view().ring.contains(node.id());
    let code = if status == Status::Ready && in_ring {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(code)
        .json(json!({"status": status, "in_ring": in_ring, "node_id": node.id()}))
}
