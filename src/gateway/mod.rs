//! Gateway mode: sessionmesh in front of an application in any language, which gets the session in request headers and changes it through response headers.
//!
//! With `upstream` set, every public request outside [`PREFIX`] goes to an
//! application: the one next to the node that owns the request's session.
//!
//! 1. The entry node reads the session cookie (signature checked), removes
//!    every `X-Sessionmesh-*` header the client sent and the hop-by-hop
//!    headers, and adds `Forwarded` / `X-Forwarded-*`.
//! 2. A guest's request, or one whose session this node owns, is served
//!    here. Otherwise it goes once, signed with the cluster secret and its
//!    body streamed, to the owner's internal listener under `/gateway`,
//!    which serves it without a further hop. An owner that cannot be reached
//!    at all is passed over: a request without a body, or with a small one
//!    (read before the hop, up to 64 KiB), is served here (the
//!    session operations themselves reach the replica that takes over); one
//!    with a larger, streamed body gets 503 `owner_unavailable` (it cannot be
//!    sent twice).
//! 3. The serving node reads the session, hands it to its application in
//!    the request headers of [`contract`], streams the request and answer,
//!    applies the change the answer's headers ask (replicated, before the
//!    answer leaves), sets or expires the cookie and removes those headers.
//!    A WebSocket upgrade the application accepts (101) becomes a byte
//!    splice of both connections, through the hop when there is one.
//!
//! `docs/gateway.md` is the contract as users read it: headers, prefix,
//! budget, errors.

pub mod contract;
pub mod headers;
mod proxy;

use std::time::Duration;

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{Map, Value};

use crate::auth;
use crate::config::Upstream;
use crate::http::ApiError;
use crate::mesh::{Error, IfMatch, Mesh, ENTRY_NODE};
use crate::node::Node;
use crate::routing::{self, Target};
use crate::session::SessionId;
use contract::{Action, Handed};
use proxy::{Body, HopError};

/// In gateway mode, sessionmesh's own public routes (session API, cluster
/// view, dashboard, metrics, health) live under this prefix, so that the
/// application keeps every other path: `/_sessionmesh/healthz`,
/// `/_sessionmesh/api/session`, ...
pub const PREFIX: &str = "/_sessionmesh";

/// Prefix on the internal listener under which a peer's gateway requests are
/// served (signed; the body is streamed, not part of the signature).
pub(crate) const HOP_PREFIX: &str = "/gateway";

/// One worker's clients for gateway mode: to the application next to this
/// node, and to the peers' internal listeners.
pub(crate) struct Gateway {
    upstream: Upstream,
    app: reqwest::Client,
    peers: reqwest::Client,
    /// The same for WebSocket upgrades: no read timeout, which would also
    /// bound the upgraded connection's quiet times.
    app_upgrades: reqwest::Client,
    peers_upgrades: reqwest::Client,
    /// Bound on the application's answer head.
    timeout: Duration,
    /// Bound on a peer's answer head: its application's bound, plus a margin.
    hop_timeout: Duration,
}

impl Gateway {
    /// The clients of one worker thread (a connection's tasks run on the
    /// runtime that opened it); `None` when `upstream` is not set.
    fn for_worker(node: &Node) -> Option<Result<Gateway, String>> {
        let config = node.config();
        let upstream = config.upstream.clone()?;
        let timeout = config.upstream_timeout;
        let connect = timeout.min(Duration::from_secs(2));
        let app = || {
            reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .tcp_nodelay(true)
                .connect_timeout(connect)
                .pool_idle_timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
        };
        let peers = || {
            node.transport()
                .client_builder()
                .http1_only()
                .tcp_nodelay(true)
                .connect_timeout(config.forward_timeout.min(Duration::from_secs(1)))
                .pool_idle_timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
        };
        let built = (|| {
            Ok::<_, reqwest::Error>(Gateway {
                upstream,
                app: app().read_timeout(timeout).build()?,
                peers: peers()
                    .read_timeout(timeout + config.forward_timeout)
                    .build()?,
                app_upgrades: app().build()?,
                peers_upgrades: peers().build()?,
                timeout,
                hop_timeout: timeout + config.forward_timeout,
            })
        })();
        Some(built.map_err(|e| format!("building the gateway's HTTP clients: {e}")))
    }
}

/// A worker's gateway, as handlers find it in the app data: `None` outside
/// gateway mode.
pub(crate) struct Slot(Option<Result<Gateway, String>>);

impl Slot {
    /// The gateway of this worker, if `upstream` is set.
    pub(crate) fn for_worker(node: &Node) -> Slot {
        Slot(Gateway::for_worker(node))
    }

    /// Whether gateway mode is on.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }
}

fn gateway_of(req: &HttpRequest) -> Result<&Gateway, ApiError> {
    let unavailable = |message: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway_unavailable",
            message,
        )
    };
    match req.app_data::<Slot>().and_then(|slot| slot.0.as_ref()) {
        Some(Ok(gateway)) => Ok(gateway),
        Some(Err(e)) => Err(unavailable(e.clone())),
        None => Err(unavailable("gateway mode is not configured".to_owned())),
    }
}

/// Lower-case `(name, value)` pairs of an actix-web header map.
fn header_pairs(map: &actix_web::http::header::HeaderMap) -> Vec<(&str, &[u8])> {
    map.iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect()
}

fn path_and_query(req: &HttpRequest) -> &str {
    req.uri()
        .path_and_query()
        .map_or(req.path(), |pq| pq.as_str())
}

/// The public listener's fallback in gateway mode: every request that is not
/// one of sessionmesh's routes.
pub(crate) async fn public(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let Some(mesh) = crate::mesh::from_app_data(&req) else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_mesh",
            "no sessionmesh::Mesh in the app data",
        )
        .error_response();
    };
    let gateway = match gateway_of(&req) {
        Ok(gateway) => gateway,
        Err(answer) => return answer.error_response(),
    };
    let node = mesh.node();
    let incoming = header_pairs(req.headers());
    let passed = headers::pass_on(&incoming);
    let client = headers::Client {
        ip: req
            .peer_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
        proto: node.config().public_scheme().as_str(),
        host: req
            .headers()
            .get(actix_web::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string())),
    };
    let set = headers::forwarding(&passed, &client);
    let mut outgoing: Vec<(String, Vec<u8>)> = passed
        .iter()
        .filter(|(name, _)| !set.iter().any(|(s, _)| s == name))
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect();
    outgoing.extend(set.into_iter().map(|(n, v)| (n.to_owned(), v.into_bytes())));

    let id = node.cookies().from_request(&req);
    let owner = id.and_then(|id| {
        let view = node.view();
        let copies = node.config().replication_factor.get();
        match routing::plan(&view.ring, id.as_bytes(), node.id(), copies, false).first() {
            Some(Target::Peer(holder)) => view
                .internal_addr(holder)
                .map(|addr| (holder.to_string(), addr.to_owned())),
            _ => None,
        }
    });
    let body = match Body::of(&req, payload).await {
        Ok(body) => body,
        Err(error) => return error.error_response(),
    };
    let (Some(id), Some((holder, addr))) = (id, owner) else {
        let path = path_and_query(&req);
        return serve_here(&mesh, gateway, id, node.id(), &req, path, outgoing, body).await;
    };

    // To the owner, once.
    let websocket = proxy::is_websocket(&req);
    let path = format!("{HOP_PREFIX}{}", path_and_query(&req));
    let session = id.to_string();
    let signature = node.signer().sign_with_session(
        node.id(),
        req.method().as_str(),
        &path,
        b"",
        Some(&session),
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let client = match websocket {
        true => &gateway.peers_upgrades,
        false => &gateway.peers,
    };
    let mut request = client
        .request(method, node.transport().url(&addr, &path))
        .header(auth::HEADER, signature)
        .header(auth::SESSION_HEADER, &session)
        .header(ENTRY_NODE, node.id());
    for (name, value) in &outgoing {
        request = request.header(name.as_str(), value.as_slice());
    }
    if websocket {
        request = request
            .header("connection", "upgrade")
            .header("upgrade", "websocket");
    }
    let replay = body.replay();
    let (request, pump, payload) = body.attach(request);
    match proxy::send(request, gateway.hop_timeout).await {
        Ok(response) if websocket && response.status() == 101 => {
            let Some(payload) = payload else {
                return ApiError::new(StatusCode::BAD_GATEWAY, "owner_failed", "no payload")
                    .error_response();
            };
            let entry = vec![(ENTRY_NODE.to_owned(), node.id().to_owned())];
            proxy::splice(response, entry, payload).await
        }
        Ok(response) => proxy::relay(
            response,
            vec![(ENTRY_NODE.to_owned(), node.id().to_owned())],
            pump,
        ),
        // Nothing was sent: served here, the session from the replica that
        // takes over, if the body can be sent again.
        Err(HopError::Unreachable(e)) if replay.is_some() || payload.is_some() => {
            tracing::debug!(owner = %holder, error = %e, "the owner cannot be reached: serving here");
            let body = match (replay, payload) {
                (Some(body), _) => body,
                (None, kept) => Body::Empty(kept),
            };
            let path = path_and_query(&req);
            serve_here(
                &mesh,
                gateway,
                Some(id),
                node.id(),
                &req,
                path,
                outgoing,
                body,
            )
            .await
        }
        Err(HopError::Unreachable(e)) => ApiError::from(Error::unavailable(
            "owner_unavailable",
            format!("the node that holds this session ({holder}) cannot be reached: {e}"),
            Duration::from_secs(1),
        ))
        .error_response(),
        Err(HopError::Timeout(t)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the session's owner ({holder}) did not answer within {t:?}"),
        )
        .error_response(),
        Err(HopError::Broken(e)) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "owner_failed",
            format!("the session's owner ({holder}) failed: {e}"),
        )
        .error_response(),
    }
}

/// `/gateway/...` on the internal listener: a request a peer routed here
/// (its signature, with the session id, was checked by the listener's gate).
pub(crate) async fn hop(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let Some(node) = req
        .app_data::<web::Data<Node>>()
        .map(|d| d.clone().into_inner())
    else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no_node", "no node")
            .error_response();
    };
    let gateway = match gateway_of(&req) {
        Ok(gateway) => gateway,
        Err(answer) => return answer.error_response(),
    };
    let mesh = Mesh::detached(node.clone());
    let id = req
        .headers()
        .get(auth::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(SessionId::parse);
    let entry = req
        .headers()
        .get(ENTRY_NODE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let incoming = header_pairs(req.headers());
    let outgoing: Vec<(String, Vec<u8>)> = headers::pass_on(&incoming)
        .into_iter()
        .filter(|(name, _)| {
            *name != auth::HEADER && *name != auth::SESSION_HEADER && *name != ENTRY_NODE
        })
        .map(|(n, v)| (n.to_owned(), v.to_vec()))
        .collect();
    let path = path_and_query(&req);
    let path = path.strip_prefix(HOP_PREFIX).unwrap_or(path);
    let body = match Body::of(&req, payload).await {
        Ok(body) => body,
        Err(error) => return error.error_response(),
    };
    serve_here(&mesh, gateway, id, &entry, &req, path, outgoing, body).await
}

/// Serves a request on this node: the session read, the application asked,
/// its change applied, the answer streamed back.
#[allow(clippy::too_many_arguments)]
async fn serve_here(
    mesh: &Mesh,
    gateway: &Gateway,
    id: Option<SessionId>,
    entry: &str,
    req: &HttpRequest,
    path: &str,
    outgoing: Vec<(String, Vec<u8>)>,
    body: Body,
) -> HttpResponse {
    let node = mesh.node();
    let handed = match id {
        None => Handed::guest(),
        Some(id) => match mesh.get(&id).await {
            Ok(doc) => Handed {
                id: Some(id),
                version: doc.version,
                data: doc.data().get().to_owned(),
            },
            Err(Error::NotFound) => Handed::guest(),
            Err(error) => return ApiError::from(error).error_response(),
        },
    };
    let data_url = |id: &SessionId| {
        let public = node
            .view()
            .member(node.id())
            .map(|m| m.public_addr.clone())
            .unwrap_or_else(|| node.config().advertised_addr(node.config().public_addr));
        node.config()
            .public_scheme()
            .url(&public, &format!("{PREFIX}/api/sessions/{id}"))
    };
    let session_headers = contract::request_headers(&handed, entry, data_url);

    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let url = format!("{}{path}", gateway.upstream.origin());
    let websocket = proxy::is_websocket(req);
    let client = match websocket {
        true => &gateway.app_upgrades,
        false => &gateway.app,
    };
    let mut request = client.request(method, url);
    for (name, value) in &outgoing {
        request = request.header(name.as_str(), value.as_slice());
    }
    for (name, value) in &session_headers {
        request = request.header(*name, value.as_str());
    }
    if websocket {
        request = request
            .header("connection", "upgrade")
            .header("upgrade", "websocket");
    }
    let (request, pump, payload) = body.attach(request);
    let response = match proxy::send(request, gateway.timeout).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(upstream = %gateway.upstream, ?error, "the application did not answer");
            return proxy::upstream_error(&error, gateway.upstream.origin());
        }
    };

    let asked = contract::parse_change(
        response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let change = match asked {
        Ok(change) => change,
        Err(error) => {
            tracing::warn!(%error, "the application's session headers are invalid: nothing changed");
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_session_header",
                format!("the application's session headers are invalid, nothing changed: {error}"),
            )
            .error_response();
        }
    };
    let seen: Map<String, Value> = serde_json::from_str(&handed.data).unwrap_or_default();
    let status = response.status().as_u16();
    let action = contract::decide(&change, handed.id, handed.version, &seen, status);
    if action == Action::Ignore {
        tracing::warn!(
            status,
            "the application answered a server error with a session change: not applied"
        );
    }
    let cookie = match apply(mesh, action).await {
        Ok(cookie) => cookie,
        Err(error) => return ApiError::from(error).error_response(),
    };
    let extra = cookie
        .map(|c| vec![("set-cookie".to_owned(), c.to_string())])
        .unwrap_or_default();
    match (websocket && status == 101, payload) {
        (true, Some(payload)) => proxy::splice(response, extra, payload).await,
        _ => proxy::relay(response, extra, pump),
    }
}

/// Applies `action` with the mesh's operations (replicated before they
/// return); the cookie to set, if any.
async fn apply(mesh: &Mesh, action: Action) -> Result<Option<Cookie<'static>>, Error> {
    let cookies = mesh.node().cookies();
    let renewed = |id: SessionId, renew: bool| async move {
        match renew {
            true => mesh
                .renew(&id)
                .await
                .map(|doc| Some(cookies.cookie(&doc.id))),
            false => Ok(None),
        }
    };
    match action {
        Action::Nothing | Action::Ignore => Ok(None),
        Action::Create(data) => {
            let doc = mesh.create(&data, None).await?;
            Ok(Some(cookies.cookie(&doc.id)))
        }
        Action::Replace {
            id,
            version,
            data,
            renew,
        } => {
            match mesh.replace(&id, &data, version).await {
                Ok(_) => {}
                Err(Error::PreconditionFailed { current }) => {
                    return Err(Error::Conflict { current })
                }
                Err(error) => return Err(error),
            }
            renewed(id, renew).await
        }
        Action::Commit {
            id,
            base,
            reads,
            writes,
            renew,
        } => {
            mesh.commit(
                &id,
                base,
                contract::fields(&reads),
                contract::fields(&writes),
                false,
            )
            .await?;
            renewed(id, renew).await
        }
        Action::Renew(id) => renewed(id, true).await,
        Action::Delete(id) => {
            if let Some(id) = id {
                match mesh.delete(&id, IfMatch::any()).await {
                    Ok(()) | Err(Error::NotFound) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(Some(cookies.removal()))
        }
    }
}
