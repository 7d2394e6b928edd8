//! The calling side of peer links: a link per peer address, opened on first use,
//! opened again after it breaks, and closed with its owner (a worker's peer
//! client for page reads, the replication client for batches).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::{
    Frame, ACK, BATCH_BYTES, FAILED, LEASE, LEASE_REPLY, LINK_PATH, OP, OP_REPLY, REPLICATE, SYNC,
    SYNC_REPLY,
};
use crate::auth::{self, Signer};
use crate::ring::NodeId;
use crate::tls::PeerTransport;

/// How long a peer that does not serve links (an older version) is asked over
/// HTTP before a link is tried again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(30);

/// A link unused for this long is not used again (the holder closes links idle
/// for [`super::server::IDLE`]; a request must not race that close).
const REUSE: Duration = Duration::from_secs(60);

/// How long the answer to a link upgrade may take before the peer is taken for
/// one that does not serve links.
const UPGRADE_ANSWER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection could be made: the peer is down or unreachable.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The link broke or the answer did not come in time.
    #[error("link failed: {0}")]
    Broken(String),
    /// The peer does not serve links: ask it over HTTP.
    #[error("the peer does not serve links")]
    Unsupported,
    /// The peer could not serve the request (its error code and message).
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
}

/// The links of one owner (a worker thread, or the replication client) to its
/// peers.
pub struct Links {
    /// Only for the upgrade requests: no total timeout, which would also bound
    /// the upgraded connection.
    http: reqwest::Client,
    transport: PeerTransport,
    signer: Signer,
    self_id: NodeId,
    timeout: Duration,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// One connection attempt at a time per peer address.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Peers that refused the upgrade (404) or did not answer it, and when to
    /// try again.
    unsupported: Mutex<HashMap<String, Instant>>,
    /// Stops every link of this set (the node is shutting down).
    stop: CancellationToken,
}

impl Links {
    /// Links from `self_id`, each closed when `stop` is cancelled.
    pub fn new(
        self_id: NodeId,
        signer: Signer,
        timeout: Duration,
        transport: &PeerTransport,
        stop: CancellationToken,
    ) -> anyhow::Result<Links> {
        let http = transport
            .client_builder()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Links {
            http,
            transport: transport.clone(),
            signer,
            self_id,
            timeout,
            links: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            unsupported: Mutex::new(HashMap::new()),
            stop,
        })
    }

    /// Sends a session operation (JSON of a [`crate::protocol::Request`]) to
    /// the peer at `internal_addr`; its reply (JSON of a
    /// [`crate::protocol::Reply`]). A `read` may be sent again on a new link
    /// when its link closed under it; a write is sent once.
    pub async fn op(
        &self,
        internal_addr: &str,
        body: Bytes,
        read: bool,
    ) -> Result<Bytes, LinkError> {
        let reply = self.request(internal_addr, OP, body, read).await?;
        match reply.kind {
            OP_REPLY => Ok(reply.body),
            _ => Err(unexpected(reply)),
        }
    }

    /// Asks the peer at `internal_addr` for a lease (JSON request); its reply
    /// (JSON). Asked once: the next round asks again.
    pub async fn lease(&self, internal_addr: &str, body: Bytes) -> Result<Bytes, LinkError> {
        let reply = self.request(internal_addr, LEASE, body, false).await?;
        match reply.kind {
            LEASE_REPLY => Ok(reply.body),
            _ => Err(unexpected(reply)),
        }
    }

    /// Opens an anti-entropy round with the peer at `internal_addr` (JSON
    /// request); its reply (JSON). Sent once: the next round asks again.
    pub async fn sync(&self, internal_addr: &str, body: Bytes) -> Result<Bytes, LinkError> {
        let reply = self.request(internal_addr, SYNC, body, false).await?;
        match reply.kind {
            SYNC_REPLY => Ok(reply.body),
            _ => Err(unexpected(reply)),
        }
    }

    /// Sends a replication batch (JSON) to the peer at `internal_addr`; its
    /// acknowledgement (JSON). Sent once: a write applied twice would look like
    /// a stale write to the writer.
    pub async fn replicate(&self, internal_addr: &str, batch: Bytes) -> Result<Bytes, LinkError> {
        let reply = self.request(internal_addr, REPLICATE, batch, false).await?;
        match reply.kind {
            ACK => Ok(reply.body),
            _ => Err(unexpected(reply)),
        }
    }

    async fn request(
        &self,
        internal_addr: &str,
        kind: u8,
        body: Bytes,
        again_if_closed: bool,
    ) -> Result<Frame, LinkError> {
        let mut retried = !again_if_closed;
        let mut resent_unread = false;
        loop {
            let link = self.link(internal_addr).await?;
            match link.call(kind, body.clone(), self.timeout).await {
                Err(CallError::Closed) if !retried => retried = true,
                Err(CallError::Closed) => return Err(LinkError::Broken("link closed".into())),
                // Never read by the peer: safe to send again, whatever it is.
                Err(CallError::Unread) if !resent_unread => resent_unread = true,
                Err(CallError::Unread) => {
                    return Err(LinkError::Connect(
                        "the peer closed its links (stopping) before reading the request".into(),
                    ))
                }
                Err(CallError::TimedOut) => {
                    return Err(LinkError::Broken(format!(
                        "no answer within {:?}",
                        self.timeout
                    )))
                }
                Ok(reply) => return Ok(reply),
            }
        }
    }

    /// The open link to `addr`, opened now if there is none.
    async fn link(&self, addr: &str) -> Result<Arc<Link>, LinkError> {
        if let Some(link) = self.open_link(addr) {
            return Ok(link);
        }
        if let Some(until) = self.unsupported.lock().get(addr) {
            if Instant::now() < *until {
                return Err(LinkError::Unsupported);
            }
        }
        let gate = {
            let mut connecting = self.connecting.lock();
            // Peers come and go: forget the gates no attempt holds.
            if connecting.len() >= 1024 {
                connecting.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            connecting.entry(addr.to_owned()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        // Another request may have opened it meanwhile.
        if let Some(link) = self.open_link(addr) {
            return Ok(link);
        }
        match self.connect(addr).await {
            Ok(link) => {
                let link = Arc::new(link);
                let mut links = self.links.lock();
                // Peers come and go: keep the map to the links in use.
                links.retain(|_, l| !l.is_closed());
                links.insert(addr.to_owned(), link.clone());
                Ok(link)
            }
            Err(LinkError::Unsupported) => {
                let mut unsupported = self.unsupported.lock();
                if unsupported.len() >= 1024 {
                    unsupported.clear();
                }
                unsupported.insert(addr.to_owned(), Instant::now() + UNSUPPORTED_RETRY);
                Err(LinkError::Unsupported)
            }
            Err(e) => Err(e),
        }
    }

    fn open_link(&self, addr: &str) -> Option<Arc<Link>> {
        self.links
            .lock()
            .get(addr)
            .filter(|l| l.is_fresh())
            .cloned()
    }

    /// Upgrades a signed request to the peer's link route.
    async fn connect(&self, addr: &str) -> Result<Link, LinkError> {
        use reqwest::header;
        let key = generate_key();
        let request = self
            .http
            .get(self.transport.url(addr, LINK_PATH))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .header(
                auth::HEADER,
                self.signer.sign(&self.self_id, "GET", LINK_PATH, b""),
            );
        let answer_within = UPGRADE_ANSWER.min(self.timeout);
        let response = match tokio::time::timeout(answer_within, request.send()).await {
            // A version before links waits for the end of the request's body,
            // which an upgrade does not have: no answer ever comes.
            Err(_) => {
                tracing::info!(%addr, "no answer to the link upgrade: HTTP to this peer for a while");
                return Err(LinkError::Unsupported);
            }
            Ok(Err(e)) if e.is_connect() => return Err(LinkError::Connect(e.to_string())),
            Ok(Err(e)) => return Err(LinkError::Broken(e.to_string())),
            Ok(Ok(response)) => response,
        };
        match response.status().as_u16() {
            101 => {}
            404 | 405 => return Err(LinkError::Unsupported),
            status => return Err(LinkError::Broken(format!("link upgrade answered {status}"))),
        }
        let accept = response
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok());
        if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
            return Err(LinkError::Broken("bad Sec-WebSocket-Accept".into()));
        }
        let io = response
            .upgrade()
            .await
            .map_err(|e| LinkError::Broken(e.to_string()))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(super::server::MAX_MESSAGE_BYTES))
            .max_frame_size(Some(super::server::MAX_MESSAGE_BYTES));
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
        Ok(Link::start(ws, self.stop.child_token()))
    }
}

/// The error for a reply that is not one the request expects.
fn unexpected(reply: Frame) -> LinkError {
    match reply.kind {
        FAILED => {
            let text = String::from_utf8_lossy(&reply.body);
            let (code, message) = text.split_once('\n').unwrap_or(("failed", &text));
            LinkError::Failed {
                code: code.to_owned(),
                message: message.to_owned(),
            }
        }
        kind => LinkError::Broken(format!("unexpected reply kind {kind:#x}")),
    }
}

enum CallError {
    /// The link closed before the answer came.
    Closed,
    /// Never read by the peer, so it may be sent again: the link closed
    /// before it was sent, or the peer closed the link cleanly before
    /// answering (it answers every request it read before its close).
    Unread,
    TimedOut,
}

/// Requests waiting for their answer, by request id.
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Frame>>,
    closed: bool,
    /// The peer closed the link with a close frame (after answering every
    /// request it read).
    closed_by_peer: bool,
    /// When the last request was sent.
    last_used: Option<Instant>,
    /// Stops both tasks, which drops the connection.
    stop: CancellationToken,
}

/// One open link: a writer task sending queued requests, a reader task handing
/// answers to their requests. Dropping the link stops both.
struct Link {
    outgoing: mpsc::UnboundedSender<(u64, u8, Bytes)>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Link {
    fn start<S>(ws: WebSocketStream<S>, stop: CancellationToken) -> Link
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<(u64, u8, Bytes)>();
        let waiting = Arc::new(Mutex::new(Waiting {
            replies: HashMap::new(),
            closed: false,
            closed_by_peer: false,
            last_used: None,
            stop,
        }));
        let writer = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let stop = waiting.lock().stop.clone();
                let mut buf = BytesMut::new();
                loop {
                    let (id, kind, body) = tokio::select! {
                        _ = stop.cancelled() => break,
                        request = queue.recv() => match request {
                            Some(request) => request,
                            None => break,
                        },
                    };
                    Frame::encode(id, kind, &body, &mut buf);
                    while buf.len() < BATCH_BYTES {
                        match queue.try_recv() {
                            Ok((id, kind, body)) => Frame::encode(id, kind, &body, &mut buf),
                            Err(_) => break,
                        }
                    }
                    if sink
                        .send(Message::Binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                close(&waiting);
            })
        };
        let reader = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let stop = waiting.lock().stop.clone();
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => break,
                        message = stream.next() => match message {
                            Some(Ok(message)) => message,
                            _ => break,
                        },
                    };
                    match message {
                        Message::Binary(data) => {
                            let mut guard = waiting.lock();
                            let mut malformed = false;
                            for frame in Frame::decode_all(data) {
                                match frame {
                                    Ok(frame) => {
                                        if let Some(reply) = guard.replies.remove(&frame.id) {
                                            let _ = reply.send(frame);
                                        }
                                    }
                                    Err(_) => {
                                        malformed = true;
                                        break;
                                    }
                                }
                            }
                            drop(guard);
                            if malformed {
                                tracing::warn!("malformed message on a peer link: closing it");
                                break;
                            }
                        }
                        Message::Close(_) => {
                            waiting.lock().closed_by_peer = true;
                            break;
                        }
                        _ => {}
                    }
                }
                close(&waiting);
            })
        };
        Link {
            outgoing,
            waiting,
            next_id: AtomicU64::new(1),
            tasks: [writer, reader],
        }
    }

    fn is_closed(&self) -> bool {
        self.waiting.lock().closed
    }

    /// Open, and used recently enough to be sure the holder keeps it; an idle
    /// link is closed here first.
    fn is_fresh(&self) -> bool {
        let stale = {
            let waiting = self.waiting.lock();
            if waiting.closed {
                return false;
            }
            waiting.last_used.is_some_and(|t| t.elapsed() >= REUSE)
        };
        if stale {
            close(&self.waiting);
        }
        !stale
    }

    async fn call(&self, kind: u8, body: Bytes, timeout: Duration) -> Result<Frame, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if waiting.closed {
                // Not sent: it closed since it was picked.
                return Err(CallError::Unread);
            }
            waiting.last_used = Some(Instant::now());
            waiting.replies.insert(id, tx);
        }
        if self.outgoing.send((id, kind, body)).is_err() {
            // The writer is gone (its runtime stopped): the link is done.
            close(&self.waiting);
            return Err(CallError::Unread);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) if self.waiting.lock().closed_by_peer => Err(CallError::Unread),
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                // A peer that stopped answering (paused, partitioned): the next
                // request opens a new link, which fails fast if it is down.
                close(&self.waiting);
                Err(CallError::TimedOut)
            }
        }
    }
}

/// Marks the link closed, fails the requests still waiting and stops both
/// tasks (the connection closes with them).
fn close(waiting: &Mutex<Waiting>) {
    let mut waiting = waiting.lock();
    waiting.closed = true;
    waiting.replies.clear();
    waiting.stop.cancel();
}
