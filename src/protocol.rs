//! The typed session operations that travel between nodes.
//!
//! An entry node that does not hold a session sends the operation to its
//! holder as one [`Request`] in a link frame ([`crate::link::OP`]); the holder
//! executes it exactly as it executes its own callers' operations and answers
//! one [`Reply`] ([`crate::link::OP_REPLY`]). The body is JSON so that fields
//! can be added without breaking older peers (unknown fields are ignored);
//! a peer that does not know `OP` frames at all (a version before them)
//! answers `FAILED unknown_request`, and the entry falls back to HTTP
//! forwarding (see [`crate::mesh`]).
//!
//! A request that reached a holder is served there, never sent on: one hop.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::mesh::{DocumentWire, ErrorWire};
use crate::session::SessionId;

/// A top-level field of session data and its value (`None`: absent, or removed).
pub type Field = (String, Option<Box<RawValue>>);

/// One session operation. Externally tagged (`{"get": {"id": ...}}`): the
/// data travels as raw JSON text, which an internally tagged enum would have
/// to buffer and cannot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The session (slides its expiry).
    Get { id: SessionId },
    /// Slides the expiry; with `ttl_ms`, sets a new idle timeout (a write).
    Touch {
        id: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// A new session under an id the serving node mints (one it owns).
    Create {
        data: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Stores a session under `id` whatever is held there (stores that name
    /// their keys).
    Put {
        id: SessionId,
        data: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Replaces the data.
    Replace {
        id: SessionId,
        data: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        if_match: Vec<u64>,
    },
    /// RFC 7386 JSON merge patch of the data.
    Merge {
        id: SessionId,
        patch: Box<RawValue>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        if_match: Vec<u64>,
    },
    /// An optimistic transaction on top-level fields: applies `writes` (after
    /// removing every field when `clear`) if the session is still at `base`,
    /// or if every field in `reads` still has the value it had then.
    Commit {
        id: SessionId,
        base: u64,
        #[serde(default)]
        reads: Vec<Field>,
        #[serde(default)]
        writes: Vec<Field>,
        #[serde(default)]
        clear: bool,
    },
    /// Deletes the session.
    Delete {
        id: SessionId,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        if_match: Vec<u64>,
    },
}

impl Request {
    /// The session it names (a creation names none yet).
    pub fn id(&self) -> Option<&SessionId> {
        match self {
            Request::Create { .. } => None,
            Request::Get { id }
            | Request::Touch { id, .. }
            | Request::Put { id, .. }
            | Request::Replace { id, .. }
            | Request::Merge { id, .. }
            | Request::Commit { id, .. }
            | Request::Delete { id, .. } => Some(id),
        }
    }

    /// Whether it may be sent to the next holder after the previous one
    /// failed mid-request: only reads (a write may have been applied).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Request::Get { .. } | Request::Touch { ttl_ms: None, .. }
        )
    }
}

/// The answer to a [`Request`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The session after the operation.
    Session(DocumentWire),
    /// It was deleted.
    Deleted,
    /// It failed.
    Error(ErrorWire),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_name_their_operation() {
        let id = SessionId::random();
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let requests = [
            Request::Get { id },
            Request::Create {
                data: raw(r#"{"a":1}"#),
                ttl_ms: Some(5),
            },
            Request::Commit {
                id,
                base: 3,
                reads: vec![("n".into(), Some(raw("1"))), ("gone".into(), None)],
                writes: vec![("n".into(), Some(raw("2")))],
                clear: false,
            },
            Request::Delete {
                id,
                if_match: vec![1, 3],
            },
        ];
        for request in requests {
            let text = serde_json::to_string(&request).unwrap();
            let back: Request = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
        let text = serde_json::to_string(&Request::Get { id }).unwrap();
        assert_eq!(text, format!(r#"{{"get":{{"id":"{id}"}}}}"#));
    }

    #[test]
    fn malformed_and_unknown_requests_are_errors_not_panics() {
        for text in [
            r#"{"teleport":{"id":"x"}}"#,
            r#"{"get":{"id":"not-an-id"}}"#,
            r#"{"get":{}}"#,
            r#"[]"#,
            "",
        ] {
            assert!(serde_json::from_str::<Request>(text).is_err(), "{text}");
        }
    }
}
