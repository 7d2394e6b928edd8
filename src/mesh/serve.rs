//! The holder's side of a session operation: execute one [`Request`] on this
//! node's copy, whoever asked (a caller on this node, or a peer over a link).
//! Replicated writes, read-through and doubt are the replication layer's; this
//! module turns requests into its calls and its outcomes into [`Error`]s.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Document, Error};
use crate::node::Node;
use crate::protocol::{Field, Request};
use crate::replication::OwnerError;
use crate::ring::Ring;
use crate::session::{
    check_version, empty_object, now_millis, to_raw, Change, Session, SessionId, WriteError,
};

impl From<OwnerError> for Error {
    fn from(e: OwnerError) -> Error {
        match e {
            OwnerError::Write(WriteError::NotFound) => Error::NotFound,
            OwnerError::Write(WriteError::VersionMismatch { current }) => {
                Error::PreconditionFailed { current }
            }
            OwnerError::Write(WriteError::Conflict { current }) => Error::Conflict { current },
            OwnerError::Write(WriteError::TooLarge { size, max }) => Error::TooLarge { size, max },
            // 128 random bits never collide in practice; a retry mints another.
            OwnerError::Write(WriteError::IdTaken) => Error::unavailable(
                "id_collision",
                "session id already in use; retry",
                Duration::ZERO,
            ),
            OwnerError::Full { max } => Error::unavailable(
                "node_full",
                format!("this node holds max_sessions ({max}) sessions; retry later or add nodes"),
                Duration::from_secs(5),
            ),
            e @ OwnerError::Stale { .. } => {
                Error::unavailable("stale_copy", e.to_string(), Duration::ZERO)
            }
            e @ OwnerError::Unreachable => {
                Error::unavailable("holders_unreachable", e.to_string(), Duration::from_secs(1))
            }
            e @ OwnerError::NoLease => {
                Error::unavailable("no_lease", e.to_string(), Duration::from_secs(1))
            }
            e @ OwnerError::Replication { .. } => {
                Error::unavailable("replication_failed", e.to_string(), Duration::from_secs(1))
            }
        }
    }
}

/// Applies an RFC 7386 merge patch (a JSON object) to session data.
pub(crate) fn merge_patch(current: &RawValue, patch: &Map<String, Value>) -> Box<RawValue> {
    let mut doc: Value =
        serde_json::from_str(current.get()).unwrap_or_else(|_| Value::Object(Map::new()));
    json_patch::merge(&mut doc, &Value::Object(patch.clone()));
    match doc {
        Value::Object(map) => to_raw(&map),
        _ => empty_object(),
    }
}

/// The data as an object (session data always is one).
fn object(data: &RawValue) -> Map<String, Value> {
    serde_json::from_str(data.get()).unwrap_or_default()
}

/// A field's value as JSON, for comparing what a transaction read with what
/// is there now (`None`: absent).
fn field_value(raw: &Option<Box<RawValue>>) -> Option<Value> {
    raw.as_ref()
        .map(|r| serde_json::from_str(r.get()).unwrap_or(Value::Null))
}

/// The data a transaction writes: `writes` applied (after `clear`) to
/// `current` (at `version`), if every field in `reads` is unchanged (or nothing
/// changed at all since `base`).
pub(crate) fn commit_data(
    current: &RawValue,
    version: u64,
    base: u64,
    reads: &[Field],
    writes: &[Field],
    clear: bool,
) -> Result<Box<RawValue>, Error> {
    let mut data = object(current);
    if version != base {
        let unchanged = reads
            .iter()
            .all(|(key, seen)| data.get(key) == field_value(seen).as_ref());
        if !unchanged {
            return Err(Error::Conflict { current: version });
        }
    }
    if clear {
        data.clear();
    }
    for (key, value) in writes {
        match field_value(value) {
            Some(value) => data.insert(key.clone(), value),
            None => data.remove(key),
        };
    }
    Ok(to_raw(&data))
}

/// [`commit_data`] on a held session, as a store change.
fn commit(
    session: &Session,
    base: u64,
    reads: &[Field],
    writes: &[Field],
    clear: bool,
) -> Result<Change, WriteError> {
    match commit_data(&session.data, session.version, base, reads, writes, clear) {
        Ok(data) => Ok(Change::data(data)),
        Err(_) => Err(WriteError::Conflict {
            current: session.version,
        }),
    }
}

fn ttl(ttl_ms: Option<u64>, default: Duration) -> Duration {
    ttl_ms.map_or(default, Duration::from_millis)
}

impl Node {
    fn document(&self, id: SessionId, session: &Session) -> Document {
        Document::new(id, session, self.node_id().clone())
    }

    /// Executes `request` on this node's copy of the session. `Ok(None)` for a
    /// deletion. `owned`: the ring under which routing found this node the
    /// session's owner, if it did.
    pub(crate) async fn serve(
        &self,
        request: Request,
        owned: Option<&Arc<Ring>>,
    ) -> Result<Option<Document>, Error> {
        let replication = self.replication();
        let default_ttl = self.config().session_ttl;
        let now = now_millis();
        let document = |id: SessionId| move |s: &Session| self.document(id, s);
        let written = match request {
            Request::Get { id } | Request::Touch { id, ttl_ms: None } => {
                return match replication.read(&id, owned, document(id)).await? {
                    Some(doc) => Ok(Some(doc)),
                    None => Err(Error::NotFound),
                };
            }
            Request::Touch {
                id,
                ttl_ms: Some(ttl_ms),
            } => {
                let change = |_: &Session| {
                    Ok(Change {
                        data: None,
                        ttl_ms: Some(ttl_ms),
                    })
                };
                replication.write(&id, change, document(id)).await
            }
            Request::Create { data, ttl_ms } => {
                let id = self.mint_owned_id().unwrap_or_else(SessionId::random);
                let session = Session::new(data, ttl(ttl_ms, default_ttl), now);
                replication.create(id, session.clone()).await?;
                Ok(self.document(id, &session))
            }
            Request::Put { id, data, ttl_ms } => {
                let session = Session::new(data, ttl(ttl_ms, default_ttl), now);
                let session = replication.put(id, session).await?;
                Ok(self.document(id, &session))
            }
            Request::Replace { id, data, if_match } => {
                let change = |s: &Session| {
                    check_version(&if_match, s.version)?;
                    Ok(Change::data(data.clone()))
                };
                replication.write(&id, change, document(id)).await
            }
            Request::Merge {
                id,
                patch,
                if_match,
            } => {
                let patch = object(&patch);
                let change = |s: &Session| {
                    check_version(&if_match, s.version)?;
                    Ok(Change::data(merge_patch(&s.data, &patch)))
                };
                replication.write(&id, change, document(id)).await
            }
            Request::Commit {
                id,
                base,
                reads,
                writes,
                clear,
            } => {
                let change = |s: &Session| commit(s, base, &reads, &writes, clear);
                replication.write(&id, change, document(id)).await
            }
            Request::Delete { id, if_match } => {
                replication
                    .delete(&id, |s| check_version(&if_match, s.version))
                    .await?;
                return Ok(None);
            }
        };
        Ok(Some(written?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(data: &str, version: u64) -> Session {
        let mut s = Session::new(
            RawValue::from_string(data.to_owned()).unwrap(),
            Duration::from_secs(60),
            0,
        );
        s.version = version;
        s
    }

    fn field(key: &str, value: Option<&str>) -> Field {
        (
            key.to_owned(),
            value.map(|v| RawValue::from_string(v.to_owned()).unwrap()),
        )
    }

    fn data(change: Change) -> Value {
        serde_json::from_str(change.data.unwrap().get()).unwrap()
    }

    #[test]
    fn a_commit_at_its_base_version_applies_its_writes() {
        let s = session(r#"{"n":1,"keep":true}"#, 4);
        let change = commit(
            &s,
            4,
            &[field("n", Some("1"))],
            &[field("n", Some("2")), field("new", Some(r#"{"a":[1]}"#))],
            false,
        )
        .unwrap();
        assert_eq!(
            data(change),
            serde_json::json!({"n": 2, "keep": true, "new": {"a": [1]}})
        );
    }

    #[test]
    fn a_commit_after_other_writes_applies_only_if_what_it_read_is_unchanged() {
        // Someone else wrote an unrelated field: no conflict.
        let s = session(r#"{"n":1,"other":"x"}"#, 6);
        let change = commit(
            &s,
            4,
            &[field("n", Some("1"))],
            &[field("n", Some("2"))],
            false,
        );
        assert_eq!(
            data(change.unwrap()),
            serde_json::json!({"n": 2, "other": "x"})
        );
        // Someone else changed the field it read: conflict, carrying the version.
        let s = session(r#"{"n":5}"#, 6);
        let outcome = commit(
            &s,
            4,
            &[field("n", Some("1"))],
            &[field("n", Some("2"))],
            false,
        );
        assert_eq!(outcome.unwrap_err(), WriteError::Conflict { current: 6 });
        // It read the field as absent, and someone created it meanwhile.
        let outcome = commit(&s, 4, &[field("n", None)], &[field("n", Some("1"))], false);
        assert!(outcome.is_err());
    }

    #[test]
    fn clear_and_removals() {
        let s = session(r#"{"a":1,"b":2}"#, 1);
        let change = commit(&s, 1, &[], &[field("c", Some("3"))], true).unwrap();
        assert_eq!(data(change), serde_json::json!({"c": 3}));
        let change = commit(&s, 1, &[], &[field("a", None)], false).unwrap();
        assert_eq!(data(change), serde_json::json!({"b": 2}));
    }

    #[test]
    fn merge_follows_rfc_7386() {
        let current = RawValue::from_string(r#"{"a":1,"b":{"c":2,"d":3}}"#.into()).unwrap();
        let patch =
            object(&RawValue::from_string(r#"{"a":null,"b":{"c":5},"e":[1]}"#.into()).unwrap());
        let merged: Value = serde_json::from_str(merge_patch(&current, &patch).get()).unwrap();
        assert_eq!(merged, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
