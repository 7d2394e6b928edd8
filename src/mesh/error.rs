//! The one error type of session operations, whichever node served them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a session operation failed.
///
/// The same values come back whether the session's holder is this node or a
/// peer: a holder's refusal travels back over the peer link as its code and
/// fields, not as an HTTP status. [`Error::code`] is the stable machine-readable
/// name (the `error` field of the JSON API).
///
/// ```
/// use sessionmesh::Error;
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::NotFound => "log in again",
///         Error::PreconditionFailed { .. } | Error::Conflict { .. } => "reload and retry",
///         e if e.retry_after().is_some() => "try again shortly",
///         _ => "something is wrong",
///     }
/// }
/// assert_eq!(describe(&Error::NotFound), "log in again");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such session: never created, expired, or deleted.
    #[error("no such session (unknown, expired or deleted)")]
    NotFound,
    /// The write named the versions it applies to (HTTP's `If-Match`) and the
    /// session is at another one.
    #[error("the session is at version {current}, not one the write names")]
    PreconditionFailed {
        /// The session's version now.
        current: u64,
    },
    /// Values the writer read changed before its write arrived (a concurrent
    /// request changed the same keys); nothing was written.
    #[error("the session changed since it was read (now at version {current}); retry")]
    Conflict {
        /// The session's version now.
        current: u64,
    },
    /// The session's data would exceed `max_session_bytes`; nothing was written.
    #[error("session data of {size} bytes is over max_session_bytes ({max})")]
    TooLarge {
        /// Bytes of the data the write would have stored (compact JSON).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The data is not a JSON object (session data always is).
    #[error("invalid session data: {0}")]
    InvalidData(String),
    /// The operation could not be done now and changed nothing that was
    /// acknowledged; retrying after [`Error::retry_after`] may succeed.
    /// `code` says why: `owner_unavailable`, `holders_unreachable`,
    /// `no_lease`, `replication_failed`, `stale_copy`, `overloaded`, `node_full`,
    /// `id_collision`, `peer_too_old` or `stopped`.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable reason.
        code: &'static str,
        /// Human-readable reason.
        message: String,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// The session's holder failed while serving the request (it broke off or
    /// did not answer in time): whether a write took effect is unknown.
    #[error("the session's holder failed: {0}")]
    Failed(String),
}

/// Reasons of [`Error::Unavailable`], as `&'static str` so that the type stays
/// `Copy`-cheap to match on.
const UNAVAILABLE_CODES: &[&str] = &[
    "owner_unavailable",
    "replication_failed",
    "stale_copy",
    "overloaded",
    "node_full",
    "peer_too_old",
    "stopped",
    "holders_unreachable",
    "no_lease",
    "id_collision",
];

impl Error {
    /// The stable machine-readable name of the error.
    ///
    /// ```
    /// assert_eq!(sessionmesh::Error::NotFound.code(), "no_session");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound => "no_session",
            Error::PreconditionFailed { .. } => "version_mismatch",
            Error::Conflict { .. } => "session_conflict",
            Error::TooLarge { .. } => "session_too_large",
            Error::InvalidData(_) => "invalid_data",
            Error::Unavailable { code, .. } => code,
            Error::Failed(_) => "owner_failed",
        }
    }

    /// When retrying may succeed: `Some` for [`Error::Unavailable`] (and
    /// immediately for [`Error::Conflict`]), `None` for answers that a retry
    /// would not change.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(sessionmesh::Error::NotFound.retry_after(), None);
    /// assert_eq!(
    ///     sessionmesh::Error::Conflict { current: 3 }.retry_after(),
    ///     Some(Duration::ZERO)
    /// );
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } => Some(*retry_after),
            Error::Conflict { .. } => Some(Duration::ZERO),
            _ => None,
        }
    }

    pub(crate) fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Error {
        Error::Unavailable {
            code,
            message: message.into(),
            retry_after,
        }
    }
}

/// An [`Error`] as a peer sends it over a link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorWire {
    code: String,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl From<&Error> for ErrorWire {
    fn from(error: &Error) -> ErrorWire {
        let mut wire = ErrorWire {
            code: error.code().to_owned(),
            message: error.to_string(),
            current: None,
            size: None,
            max: None,
            retry_after_ms: None,
        };
        match error {
            Error::PreconditionFailed { current } | Error::Conflict { current } => {
                wire.current = Some(*current)
            }
            Error::TooLarge { size, max } => (wire.size, wire.max) = (Some(*size), Some(*max)),
            Error::InvalidData(reason) | Error::Failed(reason) => wire.message = reason.clone(),
            Error::Unavailable {
                message,
                retry_after,
                ..
            } => {
                wire.message = message.clone();
                wire.retry_after_ms = Some(retry_after.as_millis() as u64);
            }
            Error::NotFound => {}
        }
        wire
    }
}

impl From<ErrorWire> for Error {
    fn from(wire: ErrorWire) -> Error {
        let current = wire.current.unwrap_or_default();
        match wire.code.as_str() {
            "no_session" => Error::NotFound,
            "version_mismatch" => Error::PreconditionFailed { current },
            "session_conflict" => Error::Conflict { current },
            "session_too_large" => Error::TooLarge {
                size: wire.size.unwrap_or_default(),
                max: wire.max.unwrap_or_default(),
            },
            "invalid_data" => Error::InvalidData(wire.message),
            "owner_failed" => Error::Failed(wire.message),
            code => match UNAVAILABLE_CODES.iter().find(|known| **known == code) {
                Some(known) => Error::Unavailable {
                    code: known,
                    message: wire.message,
                    retry_after: Duration::from_millis(wire.retry_after_ms.unwrap_or(1_000)),
                },
                // A code this version does not know (a newer peer): its message
                // says what happened.
                None => Error::Failed(format!("{code}: {}", wire.message)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_wire() {
        let errors = [
            Error::NotFound,
            Error::PreconditionFailed { current: 7 },
            Error::Conflict { current: 9 },
            Error::TooLarge { size: 70, max: 64 },
            Error::InvalidData("not an object".into()),
            Error::unavailable("replication_failed", "1 of 2", Duration::from_secs(1)),
            Error::unavailable("stale_copy", "retry", Duration::ZERO),
            Error::Failed("timed out".into()),
        ];
        for error in errors {
            let wire = serde_json::to_string(&ErrorWire::from(&error)).unwrap();
            let back: Error = serde_json::from_str::<ErrorWire>(&wire).unwrap().into();
            assert_eq!(back, error, "{wire}");
        }
    }

    #[test]
    fn an_unknown_code_from_a_newer_peer_is_a_failure_that_says_so() {
        let wire = r#"{"code":"quantum_flux","message":"the flux"}"#;
        let back: Error = serde_json::from_str::<ErrorWire>(wire).unwrap().into();
        assert_eq!(back, Error::Failed("quantum_flux: the flux".into()));
    }
}
