//! Sessions: ids, the session record and its JSON document, and the local store.

mod id;
mod record;
mod store;

pub use id::{InvalidSessionId, SessionId};
pub use record::{Entry, Record, Tombstone};
pub use store::{check_version, replica_copy, Change, Known, Merged, Store, WriteError};

use serde_json::value::RawValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch: the one clock of the session layer.
pub type UnixMillis = u64;

/// Now, in unix milliseconds.
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One session as its owner holds it.
///
/// `data` is kept as its compact JSON text (always an object): a read copies it into
/// the response as it is, with no parsing, and it costs its length in memory.
#[derive(Clone, Debug)]
pub struct Session {
    /// The data: compact JSON text of an object.
    pub data: Box<RawValue>,
    /// Bumped by every write; starts at 1.
    pub version: u64,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When the last write was applied (the conflict tie-break after `version`).
    pub updated_at: UnixMillis,
    /// When it expires unless used.
    pub expires_at: UnixMillis,
    /// Idle timeout in milliseconds; each access pushes `expires_at` to now + ttl.
    pub ttl_ms: u64,
    /// The expiry this node last sent the other holders (local bookkeeping, not
    /// replicated): a read sends them a copy again once the expiry has slid a
    /// quarter TTL past it. `None` for a copy taken in from a peer and not
    /// served here since: its expiry already carries the replicas' slack, and
    /// what the other holders hold is not known, so the first read here sends
    /// them a copy (see [`crate::session::replica_copy`]).
    pub synced_expires_at: Option<UnixMillis>,
}

impl Session {
    /// A new session at version 1, expiring `ttl` after `now` unless used.
    pub fn new(data: Box<RawValue>, ttl: Duration, now: UnixMillis) -> Session {
        let ttl_ms = ttl.as_millis() as u64;
        Session {
            data,
            version: 1,
            created_at: now,
            updated_at: now,
            expires_at: now.saturating_add(ttl_ms),
            ttl_ms,
            synced_expires_at: Some(now.saturating_add(ttl_ms)),
        }
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at <= now
    }

    pub(crate) fn touch(&mut self, now: UnixMillis) {
        self.expires_at = now.saturating_add(self.ttl_ms);
    }

    /// The value of a top-level string field of `data`, if any.
    pub fn data_str(&self, field: &str) -> Option<String> {
        json_str_field(self.data.get(), field)
    }
}

/// The value of a top-level string field of the JSON object `json`, if any.
///
/// Walks the object once without building it: other fields' values are
/// skipped, keys are borrowed from the text when they need no unescaping.
/// As with a parsed map, the last of duplicate keys wins.
pub fn json_str_field(json: &str, field: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;

    struct Key<'de>(Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    struct Find<'f>(&'f str);
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(Key(key)) = map.next_key()? {
                if key == self.0 {
                    let value: serde_json::Value = map.next_value()?;
                    found = value.as_str().map(str::to_owned);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(json);
    let found = Find(field).deserialize(&mut de).ok()?;
    de.end().ok()?;
    found
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const RFC3339_MAX: UnixMillis = 253_402_300_799_999;

/// RFC 3339 time in UTC with millisecond precision. Later times (a huge
/// `session_ttl`, or a peer's copy with any number in it) are written as the
/// last representable one: humantime refuses them, and `to_string` would panic.
pub fn rfc3339(t: UnixMillis) -> String {
    let t = t.min(RFC3339_MAX);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t)).to_string()
}

/// Parses a request body into compact JSON object text.
pub fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, DataError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DataError::Malformed(e.to_string()))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(DataError::NotAnObject(json_kind(&other))),
    }
}

/// Compact JSON text of an object.
pub fn to_raw(map: &serde_json::Map<String, serde_json::Value>) -> Box<RawValue> {
    // Serialising a map of JSON values cannot fail.
    serde_json::value::to_raw_value(map).unwrap_or_else(|_| empty_object())
}

/// `{}`.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("`{}` is valid JSON")
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Why a body is not acceptable session data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("session data must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_object_accepts_objects_only() {
        assert!(parse_object(br#"{"a":1}"#).is_ok());
        assert!(matches!(
            parse_object(b"[1]"),
            Err(DataError::NotAnObject(_))
        ));
        assert!(matches!(parse_object(b"{"), Err(DataError::Malformed(_))));
        assert!(matches!(
            parse_object(b"\xff"),
            Err(DataError::Malformed(_))
        ));
    }

    #[test]
    fn data_str_reads_a_top_level_string() {
        let s = Session::new(
            to_raw(&parse_object(br#"{"name":"Ada","n":1}"#).unwrap()),
            Duration::from_secs(60),
            0,
        );
        assert_eq!(s.data_str("name").as_deref(), Some("Ada"));
        assert_eq!(s.data_str("n"), None);
        assert_eq!(s.data_str("missing"), None);
        let s = Session::new(
            to_raw(
                &parse_object(br#"{"a":{"name":"inner"},"na\u006de":"Esc\"aped","name":"Last"}"#)
                    .unwrap(),
            ),
            Duration::from_secs(60),
            0,
        );
        // to_raw keeps one "name" (a map): the escaped key is the same key.
        assert_eq!(s.data_str("name").as_deref(), Some("Last"));
        let dup = Session::new(
            serde_json::value::RawValue::from_string(r#"{"name":"First","name":"Last"}"#.into())
                .unwrap(),
            Duration::from_secs(60),
            0,
        );
        assert_eq!(
            dup.data_str("name").as_deref(),
            Some("Last"),
            "the last one wins"
        );
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(RFC3339_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
