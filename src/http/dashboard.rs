//! The operator dashboard: `GET /dashboard` (one embedded HTML page) and the
//! read-only `GET /api/cluster/overview` it polls, which gathers every live
//! member's view of the cluster and counters.
//!
//! Why gather on the server rather than let the page fetch each member's public
//! `/api/cluster` (with CORS): the browser usually reaches one node, or only the
//! load balancer, while the members' advertised public addresses are often names
//! inside a container network. Peers always reach each other's internal
//! listener, so this node asks them there, with the same signed requests as any
//! other peer traffic (`GET /internal/dashboard`), and the page needs no CORS.
//! Answers are cached per worker for [`CACHE_FOR`], and requests that arrive
//! while a worker gathers wait for that gathering rather than start their own:
//! whatever anonymous callers do, a worker asks each member at most once per
//! period (counted in `sessionmesh_dashboard_gathers_total`).

use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::future::{join_all, FutureExt, Shared};
use serde_json::{json, Value};

use super::admin;
use crate::membership::MemberReport;
use crate::node::Node;
use crate::session::now_millis;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("dashboard.html");
/// Path of the internal route that answers one node's part of the overview.
pub const INTERNAL_PATH: &str = "/internal/dashboard";
/// How long a gathered overview is reused.
const CACHE_FOR: Duration = Duration::from_millis(500);
/// Bound on asking one peer (a peer that is down refuses at once on most
/// networks; this bounds a peer that is stuck or far away).
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/dashboard", "GET, HEAD").route(super::get_or_head().to(page)))
        .service(
            super::resource("/api/cluster/overview", "GET, HEAD")
                .route(super::get_or_head().to(overview)),
        );
}

pub(super) fn internal_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(INTERNAL_PATH, web::get().to(internal));
}

/// `GET /dashboard`.
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .insert_header((
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(PAGE)
}

/// This node's part of the overview: its `/api/cluster` document and counters.
async fn snapshot(node: &Node) -> Value {
    json!({ "cluster": admin::view(node).await, "stats": node.metrics().stats() })
}

/// `GET /internal/dashboard` (signed peers only).
async fn internal(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().json(snapshot(&node).await)
}

thread_local! {
    /// One client per actix worker: a pool must live on the runtime that drives it.
    /// Built on first use, from the node's transport (plain HTTP or mutual TLS):
    /// a worker thread serves one node only.
    static CLIENT: OnceCell<reqwest::Client> = const { OnceCell::new() };
    /// The last overview this worker gathered: (node generation, when, body).
    static CACHE: RefCell<Option<(u64, Instant, Bytes)>> = const { RefCell::new(None) };
    /// The gathering in progress on this worker, which concurrent requests share.
    static GATHERING: RefCell<Option<(u64, Gathering)>> = const { RefCell::new(None) };
}

/// An overview being gathered, awaited by every request that wants it.
type Gathering = Shared<Pin<Box<dyn Future<Output = Bytes>>>>;

/// Asks one peer for its part, over its internal listener.
async fn fetch_peer(node: &Node, member: &MemberReport) -> Value {
    let started = Instant::now();
    let id = &member.member.node_id;
    let url = node
        .transport()
        .url(&member.member.internal_addr, INTERNAL_PATH);
    let signature = node.signer().sign(node.id(), "GET", INTERNAL_PATH, b"");
    let request = CLIENT.with(|client| {
        client
            .get_or_init(|| {
                node.transport()
                    .client_builder()
                    .http1_only()
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(PEER_TIMEOUT)
                    // Below the internal listener's keep-alive (75 s), so that a
                    // pooled connection is never closed under a request.
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build()
                    .unwrap_or_default()
            })
            .get(&url)
            .header(crate::auth::HEADER, signature)
            .send()
    });
    let result = async {
        let response = request.await?.error_for_status()?;
        response.json::<Value>().await
    }
    .await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(part) => json!({
            "node_id": id, "ok": true, "took_ms": took_ms,
            "cluster": part["cluster"], "stats": part["stats"],
        }),
        Err(error) => json!({
            "node_id": id, "ok": false, "took_ms": took_ms,
            "error": error_text(&error),
        }),
    }
}

fn error_text(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "unreachable".to_owned()
    } else if let Some(status) = error.status() {
        format!("answered {status}")
    } else {
        "request failed".to_owned()
    }
}

/// `GET /api/cluster/overview`: this node's gossip view of the members (live or
/// not) and, for every live member, its own view and counters.
async fn overview(node: super::Shared) -> HttpResponse {
    let cached = CACHE.with(|cache| {
        cache.borrow().as_ref().and_then(|(generation, at, body)| {
            (*generation == node.generation() && at.elapsed() < CACHE_FOR).then(|| body.clone())
        })
    });
    let body = match cached {
        Some(body) => body,
        None => {
            let generation = node.generation();
            let gathering = GATHERING.with(|slot| {
                let mut slot = slot.borrow_mut();
                match &*slot {
                    Some((g, gathering)) if *g == generation => gathering.clone(),
                    _ => {
                        let node = node.clone();
                        let future: Pin<Box<dyn Future<Output = Bytes>>> = Box::pin(async move {
                            node.metrics().dashboard_gathers.inc();
                            Bytes::from(gather(&node).await.to_string())
                        });
                        let gathering = future.shared();
                        *slot = Some((generation, gathering.clone()));
                        gathering
                    }
                }
            });
            let body = gathering.clone().await;
            GATHERING.with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot
                    .as_ref()
                    .is_some_and(|(_, current)| current.ptr_eq(&gathering))
                {
                    *slot = None;
                    CACHE.with(|cache| {
                        *cache.borrow_mut() = Some((generation, Instant::now(), body.clone()))
                    });
                }
            });
            body
        }
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "no-store"))
        .body(body)
}

async fn gather(node: &Node) -> Value {
    let members = node.membership().report().await;
    let own = async {
        let started = Instant::now();
        let mut part = snapshot(node).await;
        part["node_id"] = json!(node.id());
        part["ok"] = json!(true);
        part["took_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
        part
    };
    let peers = members
        .iter()
        .filter(|m| m.live && &*m.member.node_id != node.id())
        .map(|m| fetch_peer(node, m));
    let (own, peers) = futures_util::join!(own, join_all(peers));
    let mut nodes = vec![own];
    nodes.extend(peers);
    nodes.sort_by(|a, b| a["node_id"].as_str().cmp(&b["node_id"].as_str()));
    json!({
        "viewer": { "node_id": node.id(), "generation": node.generation(), "status": node.status() },
        "generated_at_ms": now_millis(),
        "members": members,
        "nodes": nodes,
    })
}
