//! A store for [actix-session] (cargo feature `actix-session`): the sessions of
//! an actix-session application kept in the cluster instead of Redis.
//!
//! An application that runs actix-session on Redis switches with one line; its
//! [`SessionMiddleware`] configuration, cookie key and every handler stay as
//! they are:
//!
//! ```text
//! - let store = RedisSessionStore::new("redis://127.0.0.1:6379").await?;
//! + let store = sessionmesh::actix_session::MeshSessionStore::new(mesh.clone());
//! ```
//!
//! In full (each node of the application starts its [`Mesh`], which finds the
//! others by gossip; all nodes share the cookie key, as they did with Redis):
//!
//! ```no_run
//! use actix_session::{Session, SessionMiddleware};
//! use actix_web::cookie::Key;
//! use actix_web::{web, App, HttpServer, Responder};
//! use sessionmesh::actix_session::MeshSessionStore;
//! use sessionmesh::{Config, Mesh};
//!
//! async fn visit(session: Session) -> actix_web::Result<impl Responder> {
//!     let visits: u64 = session.get("visits")?.unwrap_or(0) + 1;
//!     session.insert("visits", visits)?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mesh = Mesh::start(Config::load(&Default::default())?).await?; // SESSIONMESH_* settings
//!     // The same 64 bytes on every node (from the application's own secret store).
//!     let key = Key::from(&std::fs::read("/run/secrets/cookie-key")?);
//!     let store = MeshSessionStore::new(mesh.clone());
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(store.clone(), key.clone()))
//!             .route("/", web::get().to(visit))
//!     })
//!     .bind(("0.0.0.0", 8080))?
//!     .run()
//!     .await?;
//!     mesh.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Behaviour, as actix-session's `RedisSessionStore`
//!
//! - The session key (the value inside the signed or private cookie) is the
//!   session's id in the cluster: 22 characters, minted by [`Mesh::create`]
//!   on the node that serves the request, so that node owns the session.
//! - `load` of a key that is unknown, deleted, expired or not an id at all
//!   gives no session (never an error); actix-session then starts an empty
//!   one. A session whose data this store did not write (the JSON API's, say)
//!   is a deserialisation error, which actix-session also treats as an empty
//!   session.
//! - The TTL is Redis's: a session expires `ttl` after `save`, `update` or
//!   `update_ttl` set it, and loading it does not extend it. actix-session's
//!   `TtlExtensionPolicy::OnStateChanges` (its default) and `OnEveryRequest`
//!   therefore work as they do on Redis.
//! - `update` of a key that is gone (expired, purged, deleted) saves the state
//!   under a new key, as the Redis store's `SET … XX` followed by a `save`
//!   does; `update_ttl` of such a key does nothing, as `EXPIRE` does, and with
//!   a TTL that is not positive deletes the session, as `EXPIRE` does.
//! - `save` and `update` refuse a TTL that is not positive, as Redis refuses
//!   `SET … EX 0`.
//! - Renewal (`Session::renew`) deletes the old key and saves under a new one,
//!   and purging deletes it: the old cookie then names no session on any node.
//! - An operation the cluster cannot do now ([`crate::Error::Unavailable`],
//!   say) is the trait's `Other` error, which the middleware answers with a
//!   500, as it does when Redis is down.
//!
//! # What the cluster holds
//!
//! Each session's data is a JSON object with actix-session's state (its values
//! are JSON text, as actix-session encodes them) and the time it expires, so
//! that the JSON API and the dashboard show it as it is:
//!
//! ```json
//! {"state": {"user_id": "42", "name": "\"ada\""}, "expiry_date": "2030-01-01T12:00:00.123456789Z"}
//! ```
//!
//! The cluster's own idle timeout of the session is set to the same TTL: it
//! drops the session once it is neither used nor written for that long. A
//! load that finds `expiry_date` passed deletes the session, as Redis would
//! have. Reads and writes go to the session's owner in one hop, like any
//! [`Mesh`] operation; `update` and `update_ttl` first read the session to
//! tell a live session from an expired one (two operations where Redis does
//! one).
//!
//! [actix-session]: https://docs.rs/actix-session/0.11
//! [`SessionMiddleware`]: ::actix_session::SessionMiddleware

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as Ttl;
use serde::{Deserialize, Serialize};

use crate::{Document, Error, IfMatch, Mesh, SessionId};

/// actix-session's session state: its keys and their JSON-encoded values.
type State = HashMap<String, String>;

/// An [`actix_session::storage::SessionStore`] that keeps sessions in the
/// cluster: pass it to [`actix_session::SessionMiddleware`] in place of
/// `RedisSessionStore` (see the [module documentation](self)).
///
/// Cheap to clone; every clone uses the same [`Mesh`].
///
/// ```no_run
/// use actix_session::SessionMiddleware;
/// use actix_web::{cookie::Key, App, HttpServer};
/// use sessionmesh::actix_session::MeshSessionStore;
///
/// # async fn example(mesh: sessionmesh::Mesh, key: Key) -> std::io::Result<()> {
/// let store = MeshSessionStore::new(mesh);
/// HttpServer::new(move || App::new().wrap(SessionMiddleware::new(store.clone(), key.clone())))
///     .bind(("127.0.0.1", 8080))?
///     .run()
///     .await
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
    /// let store = sessionmesh::actix_session::MeshSessionStore::new(mesh.clone());
    /// # Ok(()) }
    /// ```
    pub fn new(mesh: Mesh) -> MeshSessionStore {
        MeshSessionStore { mesh }
    }

    /// The mesh the store keeps its sessions in.
    ///
    /// ```
    /// # fn example(store: sessionmesh::actix_session::MeshSessionStore) {
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
    state: &'a State,
    expiry_date: String,
}

/// A session's data in the cluster, as the store reads it.
#[derive(Deserialize)]
struct Held {
    state: State,
    expiry_date: String,
}

/// Why a session could not be read.
enum ReadError {
    /// The cluster did not answer it.
    Mesh(Error),
    /// It holds data this store did not write.
    Foreign(anyhow::Error),
}

/// A positive TTL as a std duration, or why not.
fn positive(ttl: &Ttl) -> Result<Duration, anyhow::Error> {
    match Duration::try_from(*ttl) {
        Ok(ttl) if !ttl.is_zero() => Ok(ttl),
        _ => Err(anyhow::anyhow!(
            "invalid session TTL {ttl}: it must be positive"
        )),
    }
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999999999Z).
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999)
}

/// `expiry_date` for a session that expires `ttl` from now.
fn expiry_date(ttl: Duration) -> String {
    let deadline = SystemTime::now()
        .checked_add(ttl)
        .map_or(latest(), |t| t.min(latest()));
    humantime::format_rfc3339_nanos(deadline).to_string()
}

/// The session's id, if `key` is one.
fn id(key: &SessionKey) -> Option<SessionId> {
    SessionId::parse(key.as_ref())
}

fn key(doc: &Document) -> Result<SessionKey, anyhow::Error> {
    // 22 characters: always within actix-session's 4064 bytes.
    SessionKey::try_from(doc.id.to_string()).map_err(anyhow::Error::new)
}

impl MeshSessionStore {
    /// The session `id` holds, if it has not expired; an expired one is
    /// deleted (unless it was written meanwhile), as Redis drops a key at its
    /// deadline.
    async fn live(&self, id: &SessionId) -> Result<Option<State>, ReadError> {
        let doc = match self.mesh.get(id).await {
            Ok(doc) => doc,
            Err(Error::NotFound) => return Ok(None),
            Err(error) => return Err(ReadError::Mesh(error)),
        };
        let held: Held = serde_json::from_str(doc.data().get())
            .map_err(|e| ReadError::Foreign(anyhow::Error::new(e)))?;
        let deadline = humantime::parse_rfc3339(&held.expiry_date)
            .map_err(|e| ReadError::Foreign(anyhow::anyhow!("expiry_date: {e}")))?;
        if deadline > SystemTime::now() {
            return Ok(Some(held.state));
        }
        match self.mesh.delete(id, doc.version).await {
            Ok(()) | Err(Error::NotFound | Error::PreconditionFailed { .. }) => {}
            // Expired all the same; the cluster drops it after its idle timeout.
            Err(error) => tracing::debug!(%id, %error, "could not delete an expired session"),
        }
        Ok(None)
    }

    /// Gives the cluster's copy the idle timeout `ttl` unless it has it.
    async fn align(&self, doc: &Document, ttl: Duration) -> Result<(), Error> {
        if doc.ttl.as_millis() == ttl.as_millis() {
            return Ok(());
        }
        match self.mesh.touch(&doc.id, Some(ttl)).await {
            // Deleted meanwhile: as after a DEL that follows a SET.
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Writes `state` under `id` if a session is there (`SET … XX`):
    /// `Ok(false)` when none is.
    async fn overwrite(&self, id: &SessionId, state: &State, ttl: Duration) -> Result<bool, Error> {
        let data = Stored {
            state,
            expiry_date: expiry_date(ttl),
        };
        match self.mesh.replace(id, &data, IfMatch::any()).await {
            Ok(doc) => self.align(&doc, ttl).await.map(|()| true),
            Err(Error::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

impl SessionStore for MeshSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some(id) = id(session_key) else {
            return Ok(None);
        };
        match self.live(&id).await {
            Ok(state) => Ok(state),
            Err(ReadError::Mesh(error)) => Err(LoadError::Other(error.into())),
            Err(ReadError::Foreign(error)) => Err(LoadError::Deserialization(error)),
        }
    }

    async fn save(&self, session_state: State, ttl: &Ttl) -> Result<SessionKey, SaveError> {
        let ttl = positive(ttl).map_err(SaveError::Other)?;
        let data = Stored {
            state: &session_state,
            expiry_date: expiry_date(ttl),
        };
        let doc = self
            .mesh
            .create(&data, Some(ttl))
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        key(&doc).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: State,
        ttl: &Ttl,
    ) -> Result<SessionKey, UpdateError> {
        let std_ttl = positive(ttl).map_err(UpdateError::Other)?;
        let written = match id(&session_key) {
            None => false,
            Some(id) => match self.live(&id).await {
                Ok(None) => false,
                // Redis overwrites whatever the key holds.
                Ok(Some(_)) | Err(ReadError::Foreign(_)) => self
                    .overwrite(&id, &session_state, std_ttl)
                    .await
                    .map_err(|e| UpdateError::Other(e.into()))?,
                Err(ReadError::Mesh(error)) => return Err(UpdateError::Other(error.into())),
            },
        };
        if written {
            return Ok(session_key);
        }
        // Gone: saved under a new key, as the Redis store does.
        self.save(session_state, ttl).await.map_err(|e| match e {
            SaveError::Serialization(e) => UpdateError::Serialization(e),
            SaveError::Other(e) => UpdateError::Other(e),
        })
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Ttl) -> Result<(), anyhow::Error> {
        let Some(id) = id(session_key) else {
            return Ok(());
        };
        let Ok(ttl) = positive(ttl) else {
            // `EXPIRE` with a TTL that is not positive deletes the key.
            return self.delete(session_key).await;
        };
        let written = match self.live(&id).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {
                let patch = serde_json::json!({ "expiry_date": expiry_date(ttl) });
                self.mesh.merge_patch(&id, patch, IfMatch::any()).await
            }
            // Data this store did not write: only the cluster's timeout.
            Err(ReadError::Foreign(_)) => self.mesh.touch(&id, Some(ttl)).await,
            Err(ReadError::Mesh(error)) => return Err(error.into()),
        };
        match written {
            Ok(doc) => Ok(self.align(&doc, ttl).await?),
            Err(Error::NotFound) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let Some(id) = id(session_key) else {
            return Ok(());
        };
        match self.mesh.delete(&id, IfMatch::any()).await {
            Ok(()) | Err(Error::NotFound) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_must_be_positive() {
        assert_eq!(positive(&Ttl::seconds(2)).unwrap(), Duration::from_secs(2));
        assert_eq!(
            positive(&Ttl::milliseconds(1500)).unwrap(),
            Duration::from_millis(1500)
        );
        assert!(positive(&Ttl::ZERO).is_err());
        assert!(positive(&Ttl::seconds(-5)).is_err());
    }

    #[test]
    fn expiry_dates_are_rfc_3339_and_read_back() {
        let before = SystemTime::now();
        let date = expiry_date(Duration::from_secs(60));
        let read = humantime::parse_rfc3339(&date).unwrap();
        assert!(read >= before + Duration::from_secs(60), "{date}");
        assert!(
            read <= SystemTime::now() + Duration::from_secs(60),
            "{date}"
        );
        // A TTL past what RFC 3339 can write is the last date it can.
        let far = expiry_date(Duration::from_secs(u64::MAX / 2));
        assert_eq!(far, "9999-12-31T23:59:59.999999999Z");
        assert_eq!(humantime::parse_rfc3339(&far).unwrap(), latest());
    }

    #[test]
    fn only_ids_are_keys() {
        let id = SessionId::random();
        assert_eq!(
            super::id(&SessionKey::try_from(id.to_string()).unwrap()),
            Some(id)
        );
        // actix-session's own keys (64 alphanumeric characters, as Redis
        // stores them) name no session here.
        let redis_key = "a".repeat(64);
        assert_eq!(super::id(&SessionKey::try_from(redis_key).unwrap()), None);
        assert_eq!(
            super::id(&SessionKey::try_from("not a key".to_owned()).unwrap()),
            None
        );
    }
}
