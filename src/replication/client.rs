//! Typed client for the replication routes of peers' internal listeners.
//!
//! It lives on the node's main runtime (replication queues, handoff and
//! read-through all run there), so one connection pool serves them all. The
//! one exception is [`InternalClient::push_here`]: a write's copy sent over a
//! link of the calling thread's own (see there).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use serde::{Deserialize, Serialize};

use crate::auth::{self, Signer};
use crate::link::{LinkError, Links, MAX_LINK_BATCH_BYTES};
use crate::ring::NodeId;
use crate::session::{Record, SessionId};
use crate::tls::PeerTransport;

/// Path of the batch replication route on the internal listener.
pub const REPLICATE_PATH: &str = "/internal/replicate";
/// Prefix of the single-session fetch route on the internal listener.
pub const SESSIONS_PATH: &str = "/internal/sessions";

/// Bound on asking one holder for its copy (read-through).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of a replication request.
#[derive(Serialize, Deserialize)]
pub struct Batch {
    /// The sender's node id.
    pub from: String,
    /// Copies (handoff, repair, expiry refreshes) and writes (`write: true`).
    pub records: Vec<Record>,
}

/// A [`Batch`] to send, borrowed.
#[derive(Serialize)]
struct BatchRef<'a> {
    from: &'a str,
    records: &'a [Record],
}

/// Answer to a replication request.
#[derive(Serialize, Deserialize)]
pub struct BatchAck {
    pub received: usize,
    pub applied: usize,
    /// The receiver's copy of each session where it wins over the one sent.
    #[serde(default)]
    pub superseded: Vec<Record>,
    /// Ids of the copies the receiver refused because their data is over its
    /// `max_session_bytes` (absent from versions before the limit held for
    /// copies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// The receiver is leaving and took none of the copies (absent from
    /// versions before leavers refused copies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

/// A request for an ownership lease.
#[derive(Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The asking node.
    pub from: String,
    /// The fingerprint of its ring.
    pub fingerprint: String,
}

/// An anti-entropy round's opening (see [`super::anti_entropy`]).
#[derive(Serialize, Deserialize)]
pub struct SyncRequest {
    /// The asking node: the owner of the sessions compared.
    pub from: String,
    /// The fingerprint of its ring.
    pub fingerprint: String,
    /// Its digest of the sessions it owns and the receiver holds.
    pub sums: Vec<u64>,
}

/// The answer to a [`SyncRequest`].
#[derive(Default, Serialize, Deserialize)]
pub struct SyncReply {
    /// The receiver's ring is not the asker's: nothing compared.
    #[serde(default)]
    pub ring_differs: bool,
    /// The buckets whose digests differ.
    #[serde(default)]
    pub buckets: Vec<usize>,
    /// The receiver's copies in those buckets.
    #[serde(default)]
    pub summaries: Vec<super::anti_entropy::Summary>,
}

/// The answer to a [`LeaseRequest`].
#[derive(Serialize, Deserialize)]
pub struct LeaseReply {
    /// The term granted, in milliseconds; absent when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer failed: {0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    /// Batches go over peer links (see [`crate::link`]); HTTP to peers without.
    links: Arc<Links>,
    transport: PeerTransport,
    signer: Signer,
    self_id: NodeId,
    /// Unique in this process: keys the links of each thread ([`THREAD_LINKS`]).
    key: u64,
    stop: tokio_util::sync::CancellationToken,
}

thread_local! {
    /// Per thread, the links [`InternalClient::push_here`] sends on, by client.
    static THREAD_LINKS: RefCell<Vec<(u64, Arc<Links>, tokio_util::sync::CancellationToken)>> =
        const { RefCell::new(Vec::new()) };
}

impl InternalClient {
    /// A client from `self_id`; its links close when `stop` is cancelled.
    pub fn new(
        self_id: NodeId,
        signer: Signer,
        timeout: Duration,
        transport: &PeerTransport,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<InternalClient> {
        static KEYS: AtomicU64 = AtomicU64::new(1);
        let http = transport
            .client_builder()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_millis(500)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(InternalClient {
            http,
            links: Arc::new(Links::new(
                self_id.clone(),
                signer.clone(),
                timeout,
                transport,
                stop.clone(),
            )?),
            transport: transport.clone(),
            signer,
            self_id,
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            stop,
        })
    }

    /// The calling thread's links of this client, opened on first use with
    /// `timeout` for their requests; `None` outside a tokio runtime (a link's
    /// tasks run on the runtime that opens it).
    fn thread_links(&self, timeout: Duration) -> Option<Arc<Links>> {
        tokio::runtime::Handle::try_current().ok()?;
        THREAD_LINKS.with(|cell| {
            let mut list = cell.borrow_mut();
            // Links of stopped nodes (tests and local clusters run several).
            list.retain(|(_, _, stop)| !stop.is_cancelled());
            if let Some((_, links, _)) = list.iter().find(|(key, _, _)| *key == self.key) {
                return Some(links.clone());
            }
            let stop = self.stop.child_token();
            let links = Links::new(
                self.self_id.clone(),
                self.signer.clone(),
                timeout,
                &self.transport,
                stop.clone(),
            )
            .ok()?;
            let links = Arc::new(links);
            list.push((self.key, links.clone(), stop));
            Some(links)
        })
    }

    /// Sends a batch of copies to a peer over the calling thread's own link to
    /// it, for a write whose caller waits for the acknowledgement: the request
    /// leaves from this thread and the answer wakes the caller on it, instead
    /// of a hand-off to the peer's queue on the main runtime and a wake-up from
    /// there (two wake-ups of another thread per write). Whatever else this
    /// thread sends to the peer meanwhile leaves in the same message.
    ///
    /// A peer that does not answer within `timeout` (the replication timeout;
    /// the thread's links are opened with it) fails the push, and its link is
    /// closed. `None` when it was not sent: the peer does not serve links, the
    /// batch is too large for one, or this thread cannot open links; the
    /// caller then queues the copies for the main runtime, which uses HTTP
    /// where needed.
    pub async fn push_here(
        &self,
        internal_addr: &str,
        records: &[Record],
        timeout: Duration,
    ) -> Option<Result<BatchAck, PeerError>> {
        let links = self.thread_links(timeout)?;
        let batch = BatchRef {
            from: &self.self_id,
            records,
        };
        let body = match serde_json::to_vec(&batch) {
            Ok(body) => Bytes::from(body),
            Err(e) => return Some(Err(PeerError::Failed(e.to_string()))),
        };
        if body.len() > MAX_LINK_BATCH_BYTES {
            return None;
        }
        let ack = match links.replicate(internal_addr, body).await {
            Ok(ack) => ack,
            Err(LinkError::Unsupported) => return None,
            Err(e @ (LinkError::Connect(_) | LinkError::Broken(_))) => {
                return Some(Err(PeerError::Unreachable(e.to_string())))
            }
            Err(e @ LinkError::Failed { .. }) => {
                return Some(Err(PeerError::Failed(e.to_string())))
            }
        };
        Some(serde_json::from_slice(&ack).map_err(|e| PeerError::Failed(e.to_string())))
    }

    fn map_err(error: reqwest::Error) -> PeerError {
        if error.is_connect() || error.is_timeout() {
            PeerError::Unreachable(error.to_string())
        } else {
            PeerError::Failed(error.to_string())
        }
    }

    /// Sends copies and writes to a peer, which merges them: over the link to
    /// the peer, or over HTTP when it does not serve links or the batch is
    /// large.
    pub async fn push(
        &self,
        internal_addr: &str,
        records: Vec<Record>,
    ) -> Result<BatchAck, PeerError> {
        let batch = Batch {
            from: self.self_id.to_string(),
            records,
        };
        let body =
            Bytes::from(serde_json::to_vec(&batch).map_err(|e| PeerError::Failed(e.to_string()))?);
        if body.len() > MAX_LINK_BATCH_BYTES {
            return self.push_http(internal_addr, body).await;
        }
        let ack = match self.links.replicate(internal_addr, body.clone()).await {
            Ok(ack) => ack,
            Err(LinkError::Unsupported) => return self.push_http(internal_addr, body).await,
            Err(e @ (LinkError::Connect(_) | LinkError::Broken(_))) => {
                return Err(PeerError::Unreachable(e.to_string()))
            }
            Err(e @ LinkError::Failed { .. }) => return Err(PeerError::Failed(e.to_string())),
        };
        serde_json::from_slice(&ack).map_err(|e| PeerError::Failed(e.to_string()))
    }

    /// [`InternalClient::push`] as `POST /internal/replicate`.
    async fn push_http(&self, internal_addr: &str, body: Bytes) -> Result<BatchAck, PeerError> {
        let digest = auth::body_digest(&body);
        let response = self
            .http
            .post(self.transport.url(internal_addr, REPLICATE_PATH))
            .header(
                auth::HEADER,
                self.signer
                    .sign_claimed(&self.self_id, "POST", REPLICATE_PATH, &digest, None),
            )
            .header(auth::DIGEST_HEADER, digest)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(Self::map_err)?;
        if !response.status().is_success() {
            return Err(PeerError::Failed(format!("status {}", response.status())));
        }
        response.json().await.map_err(Self::map_err)
    }

    /// Asks a peer for an ownership lease under `fingerprint`: the term it
    /// granted, `None` when it refused (or does not know leases).
    pub async fn lease(
        &self,
        internal_addr: &str,
        me: &str,
        fingerprint: &str,
    ) -> Result<Option<u64>, PeerError> {
        let body = serde_json::to_vec(&LeaseRequest {
            from: me.to_owned(),
            fingerprint: fingerprint.to_owned(),
        })
        .map_err(|e| PeerError::Failed(e.to_string()))?;
        match self.links.lease(internal_addr, Bytes::from(body)).await {
            Ok(reply) => serde_json::from_slice::<LeaseReply>(&reply)
                .map(|r| r.term_ms)
                .map_err(|e| PeerError::Failed(e.to_string())),
            // A version before leases: no grant.
            Err(LinkError::Unsupported) => Ok(None),
            Err(LinkError::Failed { code, .. }) if code == "unknown_request" => Ok(None),
            Err(e) => Err(PeerError::Unreachable(e.to_string())),
        }
    }

    /// Opens an anti-entropy round with the peer at `internal_addr`.
    pub async fn sync(
        &self,
        internal_addr: &str,
        request: &SyncRequest,
    ) -> Result<SyncReply, PeerError> {
        let body = serde_json::to_vec(request).map_err(|e| PeerError::Failed(e.to_string()))?;
        match self.links.sync(internal_addr, Bytes::from(body)).await {
            Ok(reply) => {
                serde_json::from_slice(&reply).map_err(|e| PeerError::Failed(e.to_string()))
            }
            // A version before anti-entropy: nothing to compare with.
            Err(LinkError::Unsupported) => Ok(SyncReply {
                ring_differs: true,
                ..SyncReply::default()
            }),
            Err(LinkError::Failed { code, .. }) if code == "unknown_request" => Ok(SyncReply {
                ring_differs: true,
                ..SyncReply::default()
            }),
            Err(e) => Err(PeerError::Unreachable(e.to_string())),
        }
    }

    /// A peer's copy of a session (live or tombstone), if it has one.
    ///
    /// Asked again, once, on a new connection when the first attempt failed
    /// quickly without a timeout: a pooled connection that the peer closed
    /// while this process stood still (a pause, a frozen container) fails
    /// on first use, and a read is safe to repeat.
    pub async fn fetch(
        &self,
        internal_addr: &str,
        id: &SessionId,
    ) -> Result<Option<Record>, PeerError> {
        let started = std::time::Instant::now();
        match self.fetch_once(internal_addr, id).await {
            Err(PeerError::Failed(_) | PeerError::Unreachable(_))
                if started.elapsed() < FETCH_TIMEOUT / 4 =>
            {
                self.fetch_once(internal_addr, id).await
            }
            answer => answer,
        }
    }

    async fn fetch_once(
        &self,
        internal_addr: &str,
        id: &SessionId,
    ) -> Result<Option<Record>, PeerError> {
        let path = format!("{SESSIONS_PATH}/{id}");
        let response = self
            .http
            .get(self.transport.url(internal_addr, &path))
            // A holder that does not answer within this (frozen, overloaded)
            // is passed over: every acknowledged write is on another holder too.
            .timeout(FETCH_TIMEOUT)
            .header(
                auth::HEADER,
                self.signer.sign(&self.self_id, "GET", &path, b""),
            )
            .send()
            .await
            .map_err(Self::map_err)?;
        match response.status().as_u16() {
            200 => Ok(Some(response.json().await.map_err(Self::map_err)?)),
            404 => Ok(None),
            status => Err(PeerError::Failed(format!("status {status}"))),
        }
    }
}
