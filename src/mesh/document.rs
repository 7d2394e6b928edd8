//! What a session operation returns ([`Document`]) and the version condition a
//! write may carry ([`IfMatch`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Error;
use crate::ring::NodeId;
use crate::session::{Session, SessionId, UnixMillis};

/// A session as its holder served it: id, data, version and times.
///
/// `data` is always a JSON object, kept as its compact text; [`Document::get`]
/// reads one field as a typed value.
///
/// ```
/// # async fn example(mesh: sessionmesh::Mesh) -> Result<(), sessionmesh::Error> {
/// let created = mesh.create(serde_json::json!({"user": "ada", "visits": 1}), None).await?;
/// let again = mesh.get(&created.id).await?;
/// assert_eq!(again.get::<String>("user")?, Some("ada".to_owned()));
/// assert_eq!(again.version, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Document {
    /// The session's id.
    pub id: SessionId,
    /// Bumped by every write; starts at 1.
    pub version: u64,
    /// When the session was created.
    pub created_at: SystemTime,
    /// When it expires unless used again (every read and write slides it).
    pub expires_at: SystemTime,
    /// Its idle timeout.
    pub ttl: Duration,
    data: Box<RawValue>,
    served_by: NodeId,
}

fn time(millis: UnixMillis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

fn millis(time: SystemTime) -> UnixMillis {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Document {
    pub(crate) fn new(id: SessionId, session: &Session, served_by: NodeId) -> Document {
        Document {
            id,
            version: session.version,
            created_at: time(session.created_at),
            expires_at: time(session.expires_at),
            ttl: Duration::from_millis(session.ttl_ms),
            data: session.data.clone(),
            served_by,
        }
    }

    /// A document as versions before operation frames describe it (no ttl:
    /// taken from `ttl`).
    pub(crate) fn legacy(
        id: SessionId,
        version: u64,
        created_at: SystemTime,
        expires_at: SystemTime,
        data: Box<RawValue>,
        served_by: &NodeId,
        ttl: Duration,
    ) -> Document {
        Document {
            id,
            version,
            created_at,
            expires_at,
            ttl,
            data,
            served_by: served_by.clone(),
        }
    }

    /// The session's data: a JSON object, as compact text.
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// The data as a map of JSON values (parses it).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.data.get()).unwrap_or_default()
    }

    /// The value of the top-level field `key`, as a `T`; `Ok(None)` when the
    /// field is absent, [`Error::InvalidData`] when it does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.to_map().remove(key) {
            None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| Error::InvalidData(format!("field {key:?}: {e}"))),
        }
    }

    /// The id of the node that served it (its owner, or the replica that took
    /// over).
    pub fn served_by(&self) -> &str {
        &self.served_by
    }

    pub(crate) fn into_data(self) -> Box<RawValue> {
        self.data
    }
}

/// A [`Document`] as a holder sends it over a link.
#[derive(Serialize, Deserialize)]
pub(crate) struct DocumentWire {
    id: SessionId,
    version: u64,
    created_at: UnixMillis,
    expires_at: UnixMillis,
    ttl_ms: u64,
    data: Box<RawValue>,
    served_by: String,
}

impl From<&Document> for DocumentWire {
    fn from(doc: &Document) -> DocumentWire {
        DocumentWire {
            id: doc.id,
            version: doc.version,
            created_at: millis(doc.created_at),
            expires_at: millis(doc.expires_at),
            ttl_ms: doc.ttl.as_millis() as u64,
            data: doc.data.clone(),
            served_by: doc.served_by.to_string(),
        }
    }
}

impl From<DocumentWire> for Document {
    fn from(wire: DocumentWire) -> Document {
        Document {
            id: wire.id,
            version: wire.version,
            created_at: time(wire.created_at),
            expires_at: time(wire.expires_at),
            ttl: Duration::from_millis(wire.ttl_ms),
            data: wire.data,
            served_by: wire.served_by.as_str().into(),
        }
    }
}

/// The versions a write may apply to, as HTTP's `If-Match` names them: any
/// version (no condition), or one of a list. A write whose session is at
/// another version fails with [`Error::PreconditionFailed`] and changes nothing.
///
/// ```
/// use sessionmesh::IfMatch;
/// assert!(IfMatch::any().allows(7));
/// assert!(IfMatch::from(3).allows(3) && !IfMatch::from(3).allows(4));
/// assert!(IfMatch::one_of([1, 3]).allows(3));
/// assert!(IfMatch::from(None).allows(9));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfMatch(Vec<u64>);

impl IfMatch {
    /// No condition.
    pub fn any() -> IfMatch {
        IfMatch(Vec::new())
    }

    /// Any one of `versions` (none at all: no version matches).
    pub fn one_of(versions: impl IntoIterator<Item = u64>) -> IfMatch {
        let mut list: Vec<u64> = versions.into_iter().collect();
        if list.is_empty() {
            // No version is 0: an empty list matches nothing, not everything.
            list.push(0);
        }
        IfMatch(list)
    }

    /// Whether a session at `version` satisfies it.
    pub fn allows(&self, version: u64) -> bool {
        self.0.is_empty() || self.0.contains(&version)
    }

    /// The versions named; empty for any.
    pub(crate) fn versions(&self) -> &[u64] {
        &self.0
    }
}

impl From<u64> for IfMatch {
    fn from(version: u64) -> IfMatch {
        IfMatch(vec![version])
    }
}

impl From<Option<u64>> for IfMatch {
    fn from(version: Option<u64>) -> IfMatch {
        IfMatch(version.into_iter().collect())
    }
}

/// Serialises `data` into session data: compact JSON text of an object.
pub(crate) fn to_data(data: &impl Serialize) -> Result<Box<RawValue>, Error> {
    let raw =
        serde_json::value::to_raw_value(data).map_err(|e| Error::InvalidData(e.to_string()))?;
    match raw.get().starts_with('{') {
        true => Ok(raw),
        false => Err(Error::InvalidData(
            "session data must be a JSON object".to_owned(),
        )),
    }
}
