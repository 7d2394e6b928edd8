//! `GET /metrics` and the middleware that counts requests by matched route pattern.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

use super::ApiError;
use crate::metrics::{Listener, CONTENT_TYPE};
use crate::node::Node;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/metrics", "GET, HEAD").route(super::get_or_head().to(metrics)));
}

/// `GET /metrics`: every family in OpenMetrics text; the gauges (sessions,
/// members, ring size) are computed now.
async fn metrics(node: super::Shared) -> HttpResponse {
    let members = node.membership().report().await;
    let copies = node.config().replication_factor.get();
    node.metrics().refresh(
        &node.view(),
        &members,
        node.store(),
        node.replication(),
        copies,
    );
    match node.metrics().encode() {
        Ok(text) => HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .insert_header(("cache-control", "no-store"))
            .body(text),
        Err(error) => ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_encoding",
            error.to_string(),
        )
        .error_response(),
    }
}

/// Middleware: counts every answered request under its matched route pattern
/// (`/api/sessions/{id}`, never the raw path) and status.
pub(super) async fn count(
    node: std::sync::Arc<Node>,
    listener: Listener,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let result = next.call(req).await;
    let (route, status) = match &result {
        Ok(response) => (
            response.request().match_pattern(),
            response.status().as_u16(),
        ),
        Err(error) => (None, error.as_response_error().status_code().as_u16()),
    };
    if let Ok(response) = &result {
        if let Some(hit) = response.response().extensions().get::<super::LimitHit>() {
            node.metrics().limit_hit(hit.0);
        }
    }
    node.metrics()
        .observe_request(listener, method.as_str(), route, status, started.elapsed());
    result
}
