//! How this node asks a session's holder: per thread, one multiplexed link per
//! peer ([`crate::link`]) carrying [`Request`]s, and for peers of a version
//! without operation frames, HTTP forwarding to their `/fwd` JSON API (a
//! rolling upgrade keeps working).
//!
//! Per thread because a connection's tasks run on the runtime that opened it:
//! an actix worker (one single-threaded runtime each) or a tokio runtime of
//! the application's. The set of one thread is built on first use and closed
//! when the mesh stops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::serve::commit_data;
use super::{Document, Error};
use crate::auth;
use crate::link::{LinkError, Links};
use crate::node::Node;
use crate::protocol::{Reply, Request};
use crate::ring::NodeId;
use crate::routing::Failure;
use crate::session::SessionId;

/// Prefix under which peers' internal listeners serve forwarded public routes.
pub(crate) const FORWARD_PREFIX: &str = "/fwd";
/// Header naming the entry node on forwarded requests and their responses.
pub(crate) const ENTRY_NODE: &str = "x-entry-node";

/// How long a peer that answered `unknown_request` to an operation frame (a
/// version before them) is asked over HTTP before a frame is tried again.
const NO_OPS_RETRY: Duration = Duration::from_secs(30);

/// What became of asking a holder.
pub(crate) enum Asked {
    /// It answered (a session, a deletion, or its refusal).
    Answered(Result<Option<Document>, Error>),
    /// It could not be asked, or broke off: see [`crate::routing::try_next`].
    Failed(Failure, Error),
}

/// One thread's ways to its peers, for one node.
pub(crate) struct Peers {
    links: Links,
    http: reqwest::Client,
    /// Bounds the requests in flight to peers from this thread; past it, fail fast.
    inflight: tokio::sync::Semaphore,
    /// Peers that do not know operation frames, and until when to use HTTP.
    no_ops: Mutex<HashMap<String, Instant>>,
    stop: CancellationToken,
}

thread_local! {
    static PEERS: RefCell<Vec<(u64, Arc<Peers>)>> = const { RefCell::new(Vec::new()) };
}

impl Peers {
    /// This thread's set for `node`, built on first use.
    pub(crate) fn of(node: &Node) -> Result<Arc<Peers>, Error> {
        PEERS.with(|cell| {
            let mut list = cell.borrow_mut();
            // Sets of stopped nodes (tests and local clusters run several).
            list.retain(|(_, peers)| !peers.stop.is_cancelled());
            if let Some((_, peers)) = list.iter().find(|(key, _)| *key == node.key()) {
                return Ok(peers.clone());
            }
            let peers = Arc::new(Peers::new(node).map_err(|e| {
                Error::unavailable(
                    "stopped",
                    format!("no client for peers: {e}"),
                    Duration::from_secs(1),
                )
            })?);
            list.push((node.key(), peers.clone()));
            Ok(peers)
        })
    }

    fn new(node: &Node) -> anyhow::Result<Peers> {
        let config = node.config();
        let timeout = config.forward_timeout;
        let stop = node.stop_token().child_token();
        let http = node
            .transport()
            .client_builder()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Peers {
            links: Links::new(
                node.node_id().clone(),
                node.signer().clone(),
                timeout,
                node.transport(),
                stop.clone(),
            )?,
            http,
            inflight: tokio::sync::Semaphore::new(config.max_forwards),
            no_ops: Mutex::new(HashMap::new()),
            stop,
        })
    }

    /// Asks `holder` (at `addr`) to execute `request`.
    pub(crate) async fn ask(
        &self,
        node: &Node,
        holder: &NodeId,
        addr: &str,
        request: &Request,
    ) -> Asked {
        let Ok(_permit) = self.inflight.try_acquire() else {
            return Asked::Answered(Err(Error::unavailable(
                "overloaded",
                "too many requests in flight to other nodes (max_forwards); retry shortly",
                Duration::from_secs(1),
            )));
        };
        let mut asked = self.ask_link(holder, addr, request).await;
        if asked.is_none() {
            asked = Some(self.ask_http(node, holder, addr, request).await);
        }
        let asked = asked
            .unwrap_or_else(|| Asked::Failed(Failure::Broken, Error::Failed("no answer".into())));
        if let Asked::Answered(Ok(Some(doc))) = &asked {
            debug_assert_eq!(doc.served_by(), &**holder);
        }
        asked
    }

    /// Over the link; `None` when the peer needs HTTP.
    async fn ask_link(&self, holder: &NodeId, addr: &str, request: &Request) -> Option<Asked> {
        if self
            .no_ops
            .lock()
            .get(addr)
            .is_some_and(|until| Instant::now() < *until)
        {
            return None;
        }
        let body = match serde_json::to_vec(request) {
            Ok(body) => Bytes::from(body),
            Err(e) => return Some(Asked::Answered(Err(Error::InvalidData(e.to_string())))),
        };
        let failed = |failure, error: &dyn std::fmt::Display| {
            tracing::debug!(%holder, %error, "asking the holder failed");
            Some(Asked::Failed(
                failure,
                match failure {
                    Failure::Unreachable => owner_unavailable(holder),
                    Failure::Broken => Error::Failed(format!("{holder}: {error}")),
                },
            ))
        };
        match self.links.op(addr, body, request.is_read()).await {
            Ok(reply) => Some(Asked::Answered(decode_reply(&reply))),
            Err(LinkError::Unsupported) => None,
            Err(LinkError::Failed { code, .. }) if code == "unknown_request" => {
                let mut no_ops = self.no_ops.lock();
                if no_ops.len() >= 1024 {
                    no_ops.clear();
                }
                no_ops.insert(addr.to_owned(), Instant::now() + NO_OPS_RETRY);
                None
            }
            Err(LinkError::Failed { code, message }) => Some(Asked::Answered(Err(Error::Failed(
                format!("{holder}: {code}: {message}"),
            )))),
            Err(e @ LinkError::Connect(_)) => failed(Failure::Unreachable, &e),
            Err(e @ LinkError::Broken(_)) => failed(Failure::Broken, &e),
        }
    }

    /// As a peer of a version before operation frames serves it: the request
    /// as the public JSON API, forwarded to its internal listener.
    async fn ask_http(&self, node: &Node, holder: &NodeId, addr: &str, request: &Request) -> Asked {
        let session_path = |id: &SessionId| format!("{FORWARD_PREFIX}/api/sessions/{id}");
        let versions = |list: &[u64]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|v| format!("\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let call = |method: &'static str, path: String, if_match: Option<String>, body: Bytes| {
            self.forward(node, holder, addr, method, path, if_match, body)
        };
        match request {
            Request::Get { id } | Request::Touch { id, ttl_ms: None } => {
                call("GET", session_path(id), None, Bytes::new()).await
            }
            Request::Create { data, ttl_ms } => {
                let mut path = format!("{FORWARD_PREFIX}/api/sessions");
                if let Some(ms) = ttl_ms {
                    path.push_str(&format!("?ttl_seconds={}", ms.div_ceil(1000).max(1)));
                }
                call("POST", path, None, raw_bytes(data)).await
            }
            Request::Replace { id, data, if_match } => {
                call("PUT", session_path(id), versions(if_match), raw_bytes(data)).await
            }
            Request::Merge {
                id,
                patch,
                if_match,
            } => {
                call(
                    "PATCH",
                    session_path(id),
                    versions(if_match),
                    raw_bytes(patch),
                )
                .await
            }
            Request::Delete { id, if_match } => {
                call("DELETE", session_path(id), versions(if_match), Bytes::new()).await
            }
            Request::Commit {
                id,
                base,
                reads,
                writes,
                clear,
            } => {
                // Read, decide here, and write back only if nothing changed
                // in between: the same outcome as on a newer holder.
                let current = match call("GET", session_path(id), None, Bytes::new()).await {
                    Asked::Answered(Ok(Some(doc))) => doc,
                    other => return other,
                };
                let data = match commit_data(
                    current.data(),
                    current.version,
                    *base,
                    reads,
                    writes,
                    *clear,
                ) {
                    Ok(data) => data,
                    Err(e) => return Asked::Answered(Err(e)),
                };
                let written = call(
                    "PUT",
                    session_path(id),
                    versions(&[current.version]),
                    raw_bytes(&data),
                )
                .await;
                match written {
                    Asked::Answered(Err(Error::PreconditionFailed { current })) => {
                        Asked::Answered(Err(Error::Conflict { current }))
                    }
                    other => other,
                }
            }
            Request::Touch {
                ttl_ms: Some(_), ..
            }
            | Request::Put { .. } => Asked::Answered(Err(Error::unavailable(
                "peer_too_old",
                format!(
                    "{holder} runs a version without this operation; retry once it is upgraded"
                ),
                Duration::from_secs(5),
            ))),
        }
    }

    /// One signed request to a peer's `/fwd` JSON API.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        node: &Node,
        holder: &NodeId,
        addr: &str,
        method: &'static str,
        path: String,
        if_match: Option<String>,
        body: Bytes,
    ) -> Asked {
        let url = node.transport().url(addr, &path);
        let digest = auth::body_digest(&body);
        let signature = node
            .signer()
            .sign_claimed(node.id(), method, &path, &digest, None);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .http
            .request(method, url)
            .header(auth::HEADER, signature)
            .header(auth::DIGEST_HEADER, digest)
            .header(ENTRY_NODE, node.id())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(versions) = if_match {
            request = request.header(reqwest::header::IF_MATCH, versions);
        }
        if let Some(token) = &node.config().api_token {
            request = request.bearer_auth(String::from_utf8_lossy(token.expose()));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return Asked::Failed(Failure::Unreachable, owner_unavailable(holder))
            }
            Err(e) => {
                return Asked::Failed(Failure::Broken, Error::Failed(format!("{holder}: {e}")))
            }
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Asked::Failed(Failure::Broken, Error::Failed(format!("{holder}: {e}")))
            }
        };
        Asked::Answered(legacy_answer(
            status,
            &body,
            holder,
            node.config().session_ttl,
        ))
    }
}

fn owner_unavailable(holder: &str) -> Error {
    Error::unavailable(
        "owner_unavailable",
        format!("the node that holds this session ({holder}) cannot be reached"),
        Duration::from_secs(1),
    )
}

fn raw_bytes(raw: &RawValue) -> Bytes {
    Bytes::copy_from_slice(raw.get().as_bytes())
}

/// A holder's reply to an operation frame.
fn decode_reply(body: &[u8]) -> Result<Option<Document>, Error> {
    match serde_json::from_slice::<Reply>(body) {
        Ok(Reply::Session(doc)) => Ok(Some(doc.into())),
        Ok(Reply::Deleted) => Ok(None),
        Ok(Reply::Error(error)) => Err(error.into()),
        Err(e) => Err(Error::Failed(format!("malformed reply: {e}"))),
    }
}

/// The session document of the public JSON API (as versions before operation
/// frames answer).
#[derive(Deserialize)]
struct LegacyDocument {
    id: SessionId,
    data: Box<RawValue>,
    version: u64,
    created_at: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct LegacyError {
    error: String,
    #[serde(default)]
    message: String,
}

/// An answer of the public JSON API, as the outcome of an operation.
fn legacy_answer(
    status: u16,
    body: &[u8],
    holder: &NodeId,
    ttl: Duration,
) -> Result<Option<Document>, Error> {
    let time = |text: &str| humantime::parse_rfc3339(text).unwrap_or(SystemTime::UNIX_EPOCH);
    match status {
        200 | 201 => {
            let doc: LegacyDocument = serde_json::from_slice(body)
                .map_err(|e| Error::Failed(format!("{holder}: malformed answer: {e}")))?;
            let created_at = time(&doc.created_at);
            let expires_at = time(&doc.expires_at);
            Ok(Some(Document::legacy(
                doc.id,
                doc.version,
                created_at,
                expires_at,
                doc.data,
                holder,
                ttl,
            )))
        }
        204 => Ok(None),
        _ => {
            let error: LegacyError = serde_json::from_slice(body).unwrap_or(LegacyError {
                error: format!("status_{status}"),
                message: String::from_utf8_lossy(body).into_owned(),
            });
            Err(match (status, error.error.as_str()) {
                (404, _) => Error::NotFound,
                (412, _) => Error::PreconditionFailed { current: 0 },
                (413, _) => Error::TooLarge { size: 0, max: 0 },
                (400, _) => Error::InvalidData(error.message),
                (503, code) => {
                    let known = [
                        "replication_failed",
                        "stale_copy",
                        "overloaded",
                        "node_full",
                        "owner_unavailable",
                    ];
                    match known.iter().find(|k| **k == code) {
                        Some(code) => {
                            Error::unavailable(code, error.message, Duration::from_secs(1))
                        }
                        None => Error::Failed(format!("{holder}: {code}: {}", error.message)),
                    }
                }
                (_, code) => Error::Failed(format!("{holder}: {code}: {}", error.message)),
            })
        }
    }
}
