//! Peer links: long-lived, multiplexed connections to peers that carry an entry
//! node's session operations to the session's holder (one link per thread and
//! peer) and replication batches to replicas (one per peer, from the main
//! runtime).
//!
//! A forwarded page read over plain HTTP costs a whole request on each side: the
//! public request is rebuilt, signed, parsed again and its answer relayed. A link
//! asks the holder for the session only, and many reads share one connection and
//! one system call: a reader waits for its answer while others' requests go out.
//!
//! - Transport: a WebSocket on the internal listener (`GET` [`LINK_PATH`]),
//!   upgraded from a request signed with the cluster secret like every internal
//!   request, so a link gets the listener's TLS (and mTLS) and needs no port of
//!   its own. A peer that answers 404 (an older version) is served by the HTTP
//!   forward instead.
//! - Wire: each binary WebSocket message holds whole frames,
//!   `length u32 | request id u64 | kind u8 | body` (big-endian; `length` counts
//!   what follows it). Requests: [`OP`] (body: a session operation, see
//!   [`crate::protocol`]), [`REPLICATE`] (body: a replication batch, the JSON
//!   of `POST /internal/replicate`) and [`READ`] (body: a session id; sent by
//!   versions before [`OP`], still served). Replies carry the request's id:
//!   [`OP_REPLY`] (body: the operation's outcome), [`ACK`] (body: the batch's
//!   acknowledgement, JSON), [`FOUND`] (body: the session's data, compact
//!   JSON), [`MISSING`], or [`FAILED`] (body: `<error code>\n<message>`; a
//!   version that does not know a request kind answers `unknown_request`).
//! - Replies come in any order; the writer of each side sends whatever is queued
//!   in one message.

pub mod client;
pub mod server;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use client::{LinkError, Links};

/// Route of the link upgrade on the internal listener.
pub const LINK_PATH: &str = "/internal/link";

/// Request: the session named by the body, as its holder serves a read.
pub const READ: u8 = 0x01;
/// Request: copies and writes to merge (a replication batch, JSON).
pub const REPLICATE: u8 = 0x02;
/// Request: a session operation (a `protocol::Request`, JSON).
pub const OP: u8 = 0x03;
/// Request: an ownership lease (`{"from", "fingerprint"}`, JSON; see
/// `replication::lease`).
pub const LEASE: u8 = 0x04;
/// Request: an anti-entropy round (`replication::client::SyncRequest`, JSON).
pub const SYNC: u8 = 0x05;
/// Reply: the session's data (compact JSON object).
pub const FOUND: u8 = 0x81;
/// Reply: no such session (unknown, expired or deleted).
pub const MISSING: u8 = 0x82;
/// Reply: the request could not be served (`<code>\n<message>`).
pub const FAILED: u8 = 0x83;
/// Reply: a replication batch merged (its acknowledgement, JSON).
pub const ACK: u8 = 0x84;
/// Reply: the outcome of a session operation (a `protocol::Reply`, JSON).
pub const OP_REPLY: u8 = 0x85;
/// Reply: a lease granted or not (`{"term_ms": n}` or `{}`, JSON).
pub const LEASE_REPLY: u8 = 0x86;
/// Reply: the copies that differ (`replication::client::SyncReply`, JSON).
pub const SYNC_REPLY: u8 = 0x87;

/// Bytes of a frame before its body: length, request id, kind.
const HEADER_BYTES: usize = 4 + 8 + 1;

/// Messages are cut at about this size when frames queue up, and when the
/// replies to one message add up (many reads of large sessions); a single
/// larger frame (a large session) goes alone.
pub(crate) const BATCH_BYTES: usize = 256 * 1024;

/// Largest replication batch sent over a link; larger ones (handoff of large
/// sessions, bursts of large writes) go over HTTP. A link keeps the buffers its
/// largest message needed for as long as it lives, at both ends, and a node has
/// a few links per peer (one per worker thread, one for replication): this
/// bounds them, like [`BATCH_BYTES`] bounds coalesced messages. (After a burst
/// of 3000 sessions of 32 KiB had expired, the nodes of `tests/chaos.rs` held
/// 15 to 37 MB over their baseline in two runs with 1 MiB here, 6 to 38 MB in
/// three runs with 256 KiB: no clear effect on that figure, which came from
/// glibc's malloc keeping freed arena tops: see `node::pin_malloc_thresholds`.)
pub const MAX_LINK_BATCH_BYTES: usize = BATCH_BYTES;

/// One request or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The request it is or answers.
    pub id: u64,
    /// What it is: a request or a reply kind (the constants of this module).
    pub kind: u8,
    /// What it carries.
    pub body: Bytes,
}

/// A message that is not a sequence of whole frames.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed link message")]
pub struct Malformed;

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(id: u64, kind: u8, body: &[u8], out: &mut BytesMut) {
        out.reserve(HEADER_BYTES + body.len());
        // Bodies are bounded by the session size limit, far below 4 GiB.
        out.put_u32((8 + 1 + body.len()) as u32);
        out.put_u64(id);
        out.put_u8(kind);
        out.put_slice(body);
    }

    /// The frames of one message, in order; an error for trailing bytes that do
    /// not make a whole frame.
    pub fn decode_all(mut message: Bytes) -> impl Iterator<Item = Result<Frame, Malformed>> {
        std::iter::from_fn(move || {
            if message.is_empty() {
                return None;
            }
            if message.len() < HEADER_BYTES {
                message.clear();
                return Some(Err(Malformed));
            }
            let length = u32::from_be_bytes([message[0], message[1], message[2], message[3]]);
            let length = length as usize;
            if length < 9 || message.len() - 4 < length {
                message.clear();
                return Some(Err(Malformed));
            }
            message.advance(4);
            let mut frame = message.split_to(length);
            let id = frame.get_u64();
            let kind = frame.get_u8();
            Some(Ok(Frame {
                id,
                kind,
                body: frame,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[Frame]) -> Bytes {
        let mut out = BytesMut::new();
        for f in frames {
            Frame::encode(f.id, f.kind, &f.body, &mut out);
        }
        out.freeze()
    }

    #[test]
    fn frames_round_trip_in_one_message() {
        let frames = vec![
            Frame {
                id: 1,
                kind: READ,
                body: Bytes::from_static(b"abc"),
            },
            Frame {
                id: u64::MAX,
                kind: MISSING,
                body: Bytes::new(),
            },
        ];
        let decoded: Vec<_> = Frame::decode_all(encode_all(&frames))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, frames);
    }

    #[test]
    fn a_cut_frame_is_malformed_and_ends_the_message() {
        let whole = encode_all(&[Frame {
            id: 7,
            kind: FOUND,
            body: Bytes::from_static(b"{\"name\":\"x\"}"),
        }]);
        for cut in 1..whole.len() {
            let results: Vec<_> = Frame::decode_all(whole.slice(..cut)).collect();
            assert_eq!(results, vec![Err(Malformed)], "cut at {cut}");
        }
        // A length too small to hold the id and kind.
        let mut bad = BytesMut::new();
        bad.put_u32(3);
        bad.put_slice(&[0; 9]);
        assert_eq!(
            Frame::decode_all(bad.freeze()).collect::<Vec<_>>(),
            vec![Err(Malformed)]
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            for frame in Frame::decode_all(Bytes::from(data)).flatten() {
                prop_assert!(frame.body.len() < 200);
            }
        }

        #[test]
        fn encoded_frames_decode_to_themselves(
            frames in proptest::collection::vec((any::<u64>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8)
        ) {
            let frames: Vec<Frame> = frames
                .into_iter()
                .map(|(id, kind, body)| Frame { id, kind, body: Bytes::from(body) })
                .collect();
            let decoded: Vec<Frame> = Frame::decode_all(encode_all(&frames)).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(decoded, frames);
        }
    }
}
