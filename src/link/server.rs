//! The holder side of peer links: the upgrade route and the loop that serves a
//! link's requests.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;

use super::{
    Frame, ACK, BATCH_BYTES, FAILED, FOUND, LEASE, LEASE_REPLY, MISSING, OP, OP_REPLY, READ,
    REPLICATE, SYNC, SYNC_REPLY,
};
use crate::mesh::{DocumentWire, ErrorWire};
use crate::node::Node;
use crate::protocol::{Reply, Request};
use crate::replication::client::{LeaseReply, LeaseRequest, SyncRequest};
use crate::session::SessionId;

/// Largest WebSocket message either side accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A link with no request for this long is closed (the entry opens a new one
/// when it needs it): no connection outlives a peer that vanished silently.
pub(crate) const IDLE: Duration = Duration::from_secs(120);

/// Requests of one link being served at once past the first look (reads that
/// wait for a read-through); past it, the link stops reading.
const MAX_PENDING: usize = 1024;

/// How long a link that stops reading waits for the answers of the requests it
/// read (writes waiting for their replica) before it closes anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// `GET /internal/link` (signed, `Upgrade: websocket`): opens a link.
pub async fn accept(
    req: HttpRequest,
    body: web::Payload,
    node: web::Data<Node>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream.max_frame_size(MAX_MESSAGE_BYTES);
    // On this worker's runtime: the link ends with its connection, or with the
    // worker at shutdown.
    actix_web::rt::spawn(serve(node, session, stream));
    Ok(response)
}

async fn serve(
    node: web::Data<Node>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
    let stop = node.link_stop().clone();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = tokio::time::timeout(IDLE, stream.recv()) => match message {
                Ok(Some(Ok(message))) => message,
                // Idle, closed by the peer, or a protocol error.
                _ => break,
            },
        };
        match message {
            actix_ws::Message::Binary(data) => {
                let mut replies = BytesMut::new();
                for frame in Frame::decode_all(data) {
                    let Ok(frame) = frame else {
                        tracing::warn!("malformed message on a peer link: closing it");
                        let _ = session.close(None).await;
                        return;
                    };
                    let mut answer = Box::pin(answer(node.clone(), frame));
                    // Most reads are answered at once: no task for them.
                    match (&mut answer).now_or_never() {
                        Some(reply) => {
                            replies.extend_from_slice(&reply);
                            // Many reads of large sessions in one small
                            // message: their replies leave in messages of
                            // about BATCH_BYTES, not all in one buffer.
                            if replies.len() >= BATCH_BYTES {
                                node.metrics().link_replies_cut.inc();
                                if session.binary(replies.split().freeze()).await.is_err() {
                                    return;
                                }
                            }
                        }
                        None => {
                            let Ok(permit) = pending.clone().acquire_owned().await else {
                                return;
                            };
                            let mut session = session.clone();
                            actix_web::rt::spawn(async move {
                                let reply = answer.await;
                                let _ = session.binary(reply).await;
                                drop(permit);
                            });
                        }
                    }
                }
                if !replies.is_empty() && session.binary(replies.freeze()).await.is_err() {
                    return;
                }
            }
            actix_ws::Message::Ping(data) if session.pong(&data).await.is_err() => return,
            actix_ws::Message::Close(_) => break,
            _ => {}
        }
    }
    // A clean close promises the peer that every request read was answered
    // before it: a request still unanswered when the close comes was never
    // read, so the peer may send it again (elsewhere). This is what lets a
    // node stop (a graceful leave) under traffic without failing the writes
    // in flight to it.
    if tokio::time::timeout(DRAIN, pending.acquire_many(MAX_PENDING as u32))
        .await
        .is_err()
    {
        tracing::warn!(?DRAIN, "closing a peer link with requests still unanswered");
        return;
    }
    let _ = session.close(Some(actix_ws::CloseCode::Away.into())).await;
}

/// The reply to one request, encoded.
async fn answer(node: web::Data<Node>, frame: Frame) -> Bytes {
    let mut out = BytesMut::new();
    match frame.kind {
        OP => match serde_json::from_slice::<Request>(&frame.body) {
            Err(e) => failed(
                frame.id,
                "bad_request",
                &format!("malformed session operation: {e}"),
                &mut out,
            ),
            Ok(request) => {
                node.metrics().link_ops.inc();
                let reply = match node.serve(request, None).await {
                    Ok(Some(doc)) => Reply::Session(DocumentWire::from(&doc)),
                    Ok(None) => Reply::Deleted,
                    Err(error) => Reply::Error(ErrorWire::from(&error)),
                };
                match serde_json::to_vec(&reply) {
                    Ok(body) => Frame::encode(frame.id, OP_REPLY, &body, &mut out),
                    Err(e) => failed(frame.id, "internal", &e.to_string(), &mut out),
                }
            }
        },
        READ => {
            let id = std::str::from_utf8(&frame.body)
                .ok()
                .and_then(SessionId::parse);
            match id {
                None => failed(frame.id, "bad_request", "malformed session id", &mut out),
                Some(id) => {
                    node.metrics().link_reads.inc();
                    // The data goes straight from the store into the reply.
                    let found = node
                        .replication()
                        .read(&id, None, |s| {
                            Frame::encode(frame.id, FOUND, s.data.get().as_bytes(), &mut out)
                        })
                        .await;
                    match found {
                        Ok(Some(())) => {}
                        Ok(None) => Frame::encode(frame.id, MISSING, &[], &mut out),
                        Err(e) => failed(frame.id, "holders_unreachable", &e.to_string(), &mut out),
                    }
                }
            }
        }
        LEASE => match serde_json::from_slice::<LeaseRequest>(&frame.body) {
            Ok(request) => {
                let from: crate::ring::NodeId = request.from.as_str().into();
                let term_ms = node
                    .replication()
                    .lease_request(&from, &request.fingerprint);
                match serde_json::to_vec(&LeaseReply { term_ms }) {
                    Ok(body) => Frame::encode(frame.id, LEASE_REPLY, &body, &mut out),
                    Err(e) => failed(frame.id, "internal", &e.to_string(), &mut out),
                }
            }
            Err(e) => failed(
                frame.id,
                "bad_request",
                &format!("malformed lease request: {e}"),
                &mut out,
            ),
        },
        SYNC => match serde_json::from_slice::<SyncRequest>(&frame.body) {
            Ok(request) => match node.replication().sync_answer(request).await {
                Ok(reply) => match serde_json::to_vec(&reply) {
                    Ok(body) => Frame::encode(frame.id, SYNC_REPLY, &body, &mut out),
                    Err(e) => failed(frame.id, "internal", &e.to_string(), &mut out),
                },
                Err(e) => failed(frame.id, "internal", &e.to_string(), &mut out),
            },
            Err(e) => failed(
                frame.id,
                "bad_request",
                &format!("malformed anti-entropy request: {e}"),
                &mut out,
            ),
        },
        REPLICATE => match node.replication().apply_batch(&frame.body) {
            Ok(ack) => Frame::encode(frame.id, ACK, &ack, &mut out),
            Err(e) => failed(
                frame.id,
                "bad_batch",
                &format!("malformed replication batch: {e}"),
                &mut out,
            ),
        },
        kind => failed(
            frame.id,
            "unknown_request",
            &format!("unknown link request kind {kind:#x}"),
            &mut out,
        ),
    }
    out.freeze()
}

fn failed(id: u64, code: &str, message: &str, out: &mut BytesMut) {
    let text = format!("{code}\n{message}");
    Frame::encode(id, FAILED, text.as_bytes(), out);
}
