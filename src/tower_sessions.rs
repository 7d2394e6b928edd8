//! A store for [tower-sessions] (cargo feature `tower-sessions`): the sessions
//! of an axum (or any tower) application kept in the cluster instead of Redis.
//!
//! An application that runs tower-sessions on `tower-sessions-redis-store`
//! switches with one line; its [`SessionManagerLayer`] configuration and every
//! handler stay as they are:
//!
//! ```text
//! - let store = RedisStore::new(pool);
//! + let store = sessionmesh::tower_sessions::MeshSessionStore::new(mesh.clone());
//! ```
//!
//! In full (each node of the application starts its [`Mesh`], which finds the
//! others by gossip):
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessionmesh::tower_sessions::MeshSessionStore;
//! use sessionmesh::{Config, Mesh};
//! use tower_sessions::{Expiry, Session, SessionManagerLayer};
//!
//! async fn visit(session: Session) -> String {
//!     let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
//!     match session.insert("visits", visits).await {
//!         Ok(()) => format!("visit number {visits}"),
//!         Err(error) => format!("the session could not be written: {error}"),
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mesh = Mesh::start(Config::load(&Default::default())?).await?; // SESSIONMESH_* settings
//!     let store = MeshSessionStore::new(mesh.clone());
//!     let sessions = SessionManagerLayer::new(store)
//!         .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
//!     let app = Router::new().route("/", get(visit)).layer(sessions);
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     axum::serve(listener, app).await?;
//!     mesh.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Behaviour, as tower-sessions' Redis store
//!
//! - The session id is the cluster's: tower-sessions writes an [`Id`] as 22
//!   base64 characters of its 128 bits, and so does sessionmesh, so the cookie
//!   value is the session's id in the cluster. `create` takes the id that
//!   [`Mesh::create`] mints on the node serving the request (that node owns
//!   the session) and gives it to the record, as the trait allows.
//! - `load` of an id that is unknown, deleted or past its record's
//!   `expiry_date` gives no session (never an error); tower-sessions then
//!   starts an empty one. Loading does not extend the expiry: a record expires
//!   at the `expiry_date` its last `create` or `save` wrote, as a Redis key
//!   with `EXAT` does (with `Expiry::OnInactivity` that is every save, which
//!   `with_always_save(true)` makes every request).
//! - `save` writes only a session that is there (`SET … XX`): a session that
//!   expired or was deleted stays gone, and the call succeeds. A record whose
//!   `expiry_date` has passed is deleted.
//! - `cycle_id` deletes the old id and creates the session under a new one, and
//!   `flush`/`delete` delete it: the old cookie then names no session on any
//!   node.
//! - An operation the cluster cannot do now ([`crate::Error::Unavailable`],
//!   say) is [`session_store::Error::Backend`]; data this store did not write
//!   under an id is [`session_store::Error::Decode`].
//!
//! # What the cluster holds
//!
//! Each session's data is a JSON object with the record's data and its expiry
//! date, so that the JSON API and the dashboard show it as it is:
//!
//! ```json
//! {"data": {"visits": 3, "user": {"name": "ada"}}, "expiry_date": "2030-01-01T12:00:00.123456789Z"}
//! ```
//!
//! The cluster's own idle timeout of the session is set to the time left until
//! `expiry_date` (and set again when a save moves it by more than a second,
//! the precision of Redis's `EXAT`): the cluster drops the session once it is
//! neither used nor written until then. A load that finds `expiry_date`
//! passed deletes the session. `save` first reads the session to tell a live
//! session from an expired one (two operations where Redis does one).
//!
//! [tower-sessions]: https://docs.rs/tower-sessions/0.15
//! [`SessionManagerLayer`]: https://docs.rs/tower-sessions/0.15/tower_sessions/service/struct.SessionManagerLayer.html

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::{session_store, SessionStore};

use crate::{Document, Error, IfMatch, Mesh, SessionId};

/// How far the cluster's expiry of a session may be from its record's
/// `expiry_date` before a save sets it again: Redis's `EXAT` has whole seconds.
const SLACK: Duration = Duration::from_secs(1);

/// A [`tower_sessions_core::SessionStore`] (`tower_sessions::SessionStore`)
/// that keeps sessions in the cluster: pass it to tower-sessions'
/// `SessionManagerLayer` in place of `RedisStore` (see the
/// [module documentation](self)).
///
/// Cheap to clone; every clone uses the same [`Mesh`].
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use tower_sessions::SessionManagerLayer;
///
/// # fn example(mesh: sessionmesh::Mesh) -> Router {
/// let store = sessionmesh::tower_sessions::MeshSessionStore::new(mesh);
/// Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(SessionManagerLayer::new(store))
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MeshSessionStore {
    mesh: Mesh,
}

impl MeshSessionStore {
    /// A store that keeps sessions in the cluster of `mesh`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mesh = sessionmesh::Mesh::start(sessionmesh::Config::load(&Default::default())?).await?;
    /// let store = sessionmesh::tower_sessions::MeshSessionStore::new(mesh.clone());
    /// # Ok(()) }
    /// ```
    pub fn new(mesh: Mesh) -> MeshSessionStore {
        MeshSessionStore { mesh }
    }

    /// The mesh the store keeps its sessions in.
    ///
    /// ```
    /// # fn example(store: sessionmesh::tower_sessions::MeshSessionStore) {
    /// println!("sessions are kept by node {}", store.mesh().node_id());
    /// # }
    /// ```
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }
}

/// A session's data in the cluster, as the store writes it.
#[derive(Serialize)]
struct Stored<'a> {
    data: &'a HashMap<String, Value>,
    expiry_date: String,
}

/// A session's data in the cluster, as the store reads it.
#[derive(Deserialize)]
struct Held {
    data: HashMap<String, Value>,
    expiry_date: String,
}

/// The cluster's id of a tower-sessions id: the same 128 bits, and the same
/// 22 characters.
fn session_id(id: &Id) -> SessionId {
    SessionId::from_bits(id.0.to_le_bytes())
}

/// The tower-sessions id of a cluster id.
fn tower_id(id: &SessionId) -> Id {
    Id(i128::from_le_bytes(id.to_bits()))
}

/// The record's expiry as a time, and the time left until it; `None` when it
/// has passed.
fn remaining(expiry_date: OffsetDateTime) -> Option<(SystemTime, Duration)> {
    let deadline = SystemTime::from(expiry_date);
    let left = deadline.duration_since(SystemTime::now()).ok()?;
    (!left.is_zero()).then_some((deadline, left))
}

/// A future `deadline` as RFC 3339 text (a record's date is at most in 9999,
/// which RFC 3339 can write).
fn rfc3339(deadline: SystemTime) -> String {
    humantime::format_rfc3339_nanos(deadline).to_string()
}

fn backend(error: Error) -> session_store::Error {
    session_store::Error::Backend(error.to_string())
}

/// Why a session could not be read.
enum ReadError {
    /// The cluster did not answer it.
    Mesh(Error),
    /// It holds data this store did not write.
    Foreign(String),
}

impl From<ReadError> for session_store::Error {
    fn from(error: ReadError) -> session_store::Error {
        match error {
            ReadError::Mesh(error) => backend(error),
            ReadError::Foreign(reason) => session_store::Error::Decode(reason),
        }
    }
}

impl MeshSessionStore {
    /// The record `id` holds, if it has not expired; an expired one is deleted
    /// (unless it was written meanwhile), as Redis drops a key at its `EXAT`.
    async fn live(&self, id: &SessionId) -> Result<Option<Record>, ReadError> {
        let doc = match self.mesh.get(id).await {
            Ok(doc) => doc,
            Err(Error::NotFound) => return Ok(None),
            Err(error) => return Err(ReadError::Mesh(error)),
        };
        let held: Held = serde_json::from_str(doc.data().get())
            .map_err(|e| ReadError::Foreign(format!("session {id}: {e}")))?;
        let deadline = humantime::parse_rfc3339(&held.expiry_date)
            .map_err(|e| ReadError::Foreign(format!("session {id}: expiry_date: {e}")))?;
        if deadline > SystemTime::now() {
            return Ok(Some(Record {
                id: tower_id(id),
                data: held.data,
                expiry_date: OffsetDateTime::from(deadline),
            }));
        }
        match self.mesh.delete(id, doc.version).await {
            Ok(()) | Err(Error::NotFound | Error::PreconditionFailed { .. }) => {}
            // Expired all the same; the cluster drops it after its idle timeout.
            Err(error) => tracing::debug!(%id, %error, "could not delete an expired session"),
        }
        Ok(None)
    }

    /// Sets the cluster's expiry of the session to `deadline` unless it is
    /// within [`SLACK`] of it.
    async fn align(&self, doc: &Document, deadline: SystemTime) -> Result<(), Error> {
        let off = match doc.expires_at.duration_since(deadline) {
            Ok(later) => later,
            Err(earlier) => earlier.duration(),
        };
        if off <= SLACK {
            return Ok(());
        }
        let Ok(left) = deadline.duration_since(SystemTime::now()) else {
            // Passed meanwhile: the next load deletes it.
            return Ok(());
        };
        match self.mesh.touch(&doc.id, Some(left)).await {
            // Deleted meanwhile: as after a DEL that follows a SET.
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn delete_id(&self, id: &SessionId) -> session_store::Result<()> {
        match self.mesh.delete(id, IfMatch::any()).await {
            Ok(()) | Err(Error::NotFound) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }
}

#[async_trait]
impl SessionStore for MeshSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let Some((deadline, left)) = remaining(record.expiry_date) else {
            // Already expired: like a key set with an EXAT in the past, it
            // names no session.
            return Ok(());
        };
        let data = Stored {
            data: &record.data,
            expiry_date: rfc3339(deadline),
        };
        let doc = self.mesh.create(&data, Some(left)).await.map_err(backend)?;
        record.id = tower_id(&doc.id);
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = session_id(&record.id);
        let Some((deadline, _)) = remaining(record.expiry_date) else {
            // An EXAT in the past drops the key.
            return self.delete_id(&id).await;
        };
        match self.live(&id).await {
            // `SET … XX`: nothing there, nothing written.
            Ok(None) => return Ok(()),
            // Redis overwrites whatever the key holds.
            Ok(Some(_)) | Err(ReadError::Foreign(_)) => {}
            Err(error) => return Err(error.into()),
        }
        let data = Stored {
            data: &record.data,
            expiry_date: rfc3339(deadline),
        };
        match self.mesh.replace(&id, &data, IfMatch::any()).await {
            Ok(doc) => self.align(&doc, deadline).await.map_err(backend),
            Err(Error::NotFound) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self.live(&self::session_id(session_id)).await?)
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.delete_id(&self::session_id(session_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_same_128_bits_and_the_same_text() {
        for _ in 0..100 {
            let id = Id::default();
            let ours = session_id(&id);
            assert_eq!(ours.as_str(), id.to_string());
            assert_eq!(tower_id(&ours), id);
            assert_eq!(ours.as_str().parse::<Id>().unwrap(), id);
        }
        let ours = SessionId::random();
        assert_eq!(session_id(&tower_id(&ours)), ours);
    }

    #[test]
    fn only_a_future_expiry_leaves_time() {
        let now = OffsetDateTime::now_utc();
        let (deadline, left) = remaining(now + time::Duration::minutes(5)).unwrap();
        assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(290));
        assert_eq!(
            OffsetDateTime::from(deadline),
            now + time::Duration::minutes(5)
        );
        assert!(remaining(now - time::Duration::seconds(1)).is_none());
        assert!(remaining(OffsetDateTime::UNIX_EPOCH - time::Duration::days(400)).is_none());
    }

    #[test]
    fn expiry_dates_read_back_to_the_nanosecond() {
        let expiry = OffsetDateTime::now_utc() + time::Duration::days(14);
        let text = rfc3339(SystemTime::from(expiry));
        let back = OffsetDateTime::from(humantime::parse_rfc3339(&text).unwrap());
        assert_eq!(back, expiry);
        let last = OffsetDateTime::from_unix_timestamp_nanos(253_402_300_799_999_999_999).unwrap();
        assert_eq!(
            rfc3339(SystemTime::from(last)),
            "9999-12-31T23:59:59.999999999Z"
        );
    }
}
