//! actix-web integration: the application keeps its own `HttpServer`, `App`
//! and routes; [`SessionMiddleware`] gives each request its session, and the
//! [`Session`] extractor reads and changes it in handlers.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer, Responder};
//! use sessionmesh::actix::{Session, SessionMiddleware};
//!
//! async fn add_to_cart(session: Session, item: web::Path<String>) -> actix_web::Result<impl Responder> {
//!     let mut cart: Vec<String> = session.get("cart")?.unwrap_or_default();
//!     cart.push(item.into_inner());
//!     session.insert("cart", &cart)?;
//!     Ok(format!("{} items", cart.len()))
//! }
//!
//! # async fn example(mesh: sessionmesh::Mesh) -> std::io::Result<()> {
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(SessionMiddleware::new(mesh.clone()))
//!         .route("/cart/{item}", web::post().to(add_to_cart))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
//!
//! WHERE THE HANDLER RUNS. On the node the request entered. The session is
//! read from its holder when the handler extracts [`Session`] (from memory
//! on the owner, else one round trip on a peer link), and the handler's
//! changes go back to the holder as one operation after it returns, before
//! the response leaves. A handler that does not extract [`Session`] costs
//! nothing. (The alternative, proxying the whole request to the owner, costs
//! two HTTP exchanges per request; see BENCHMARKS.md.)
//!
//! CONCURRENCY. Requests on one session are not serialised: each handler
//! works on the copy it read. Its changes are applied as an optimistic
//! transaction on top-level fields: the writes of the handler (inserted,
//! removed, cleared fields) are applied if the session is still at the version
//! the handler read, or else if every field the handler read (through
//! [`Session::get`] or [`Session::remove`]) still has the value it saw then.
//! So concurrent requests that change different fields all succeed, and no
//! update is ever lost: when two handlers read and change the same field, the
//! first to finish wins and the other's response is replaced by
//! `409 Conflict` (`{"error": "session_conflict"}`, `Retry-After: 0`): the
//! client may retry the request, which then reads the new value.
//!
//! COOKIE. The session cookie is the cluster's (`cookie_name`, signed with
//! `cookie_secret`, rotating through `cookie_previous_secrets`; `HttpOnly`,
//! `SameSite` and `Secure` as configured): a session started here is read on
//! every node, whatever serves it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::http::ApiError;
use crate::mesh::{Error, IfMatch, Mesh};
use crate::session::SessionId;

/// Gives every request its [`Session`] and applies the changes handlers made.
///
/// ```
/// use actix_web::{web, App};
/// use sessionmesh::actix::SessionMiddleware;
///
/// # fn example(mesh: sessionmesh::Mesh) {
/// // With the mesh given...
/// let app = App::new().wrap(SessionMiddleware::new(mesh.clone()));
/// // ...or taken from the app data, for routes configured apart from it.
/// let app = App::new()
///     .app_data(mesh.clone())
///     .service(web::resource("/").wrap(SessionMiddleware::default()));
/// # }
/// ```
///
/// With [`SessionMiddleware::new`] it uses the given mesh; its `Default` uses
/// the [`Mesh`] in the app data (`App::new().app_data(mesh.clone())`, or
/// `.app_data(web::Data::new(mesh.clone()))`).
#[derive(Clone, Default)]
pub struct SessionMiddleware {
    mesh: Option<Mesh>,
}

impl SessionMiddleware {
    /// Sessions of `mesh`.
    pub fn new(mesh: Mesh) -> SessionMiddleware {
        SessionMiddleware { mesh: Some(mesh) }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<SessionService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service: Rc::new(service),
            mesh: self.mesh.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the application's.
pub struct SessionService<S> {
    service: Rc<S>,
    mesh: Option<Mesh>,
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some(mesh) = self
            .mesh
            .clone()
            .or_else(|| crate::mesh::from_app_data(req.request()))
        else {
            let error = actix_web::error::ErrorInternalServerError(
                "SessionMiddleware::default() needs a sessionmesh::Mesh in the app data",
            );
            return Box::pin(async move { Err(error) });
        };
        let cookie = mesh.node().cookies().from_request(req.request());
        let state = Rc::new(RefCell::new(State::new(mesh, cookie)));
        req.extensions_mut().insert(Handle(state.clone()));
        let service = self.service.clone();
        Box::pin(async move {
            let mut response = service.call(req).await?;
            match finish(&state).await {
                Ok(Some(cookie)) => {
                    response.response_mut().add_cookie(&cookie)?;
                    Ok(response.map_into_left_body())
                }
                Ok(None) => Ok(response.map_into_left_body()),
                Err(error) => {
                    let answer = ApiError::from(error).error_response();
                    Ok(response.into_response(answer).map_into_right_body())
                }
            }
        })
    }
}

/// What the request's handlers did to its session.
struct State {
    mesh: Mesh,
    /// The id the request's cookie names (signature checked).
    cookie: Option<SessionId>,
    /// Set once a handler extracted the session.
    loaded: Option<Loaded>,
    /// The data as the handler sees it: what was read, with its changes. A
    /// field neither written nor cleared still holds the value read.
    current: Map<String, Value>,
    /// Top-level fields read, with the value they had when the session was read.
    reads: BTreeMap<String, Option<Value>>,
    /// Top-level fields changed: new value, or `None` for removed.
    writes: BTreeMap<String, Option<Value>>,
    clear: bool,
    renew: bool,
    purge: bool,
}

/// The session as it was read.
struct Loaded {
    /// `None`: no session (a guest, or its session expired).
    id: Option<SessionId>,
    version: u64,
    served_by: String,
}

impl State {
    fn new(mesh: Mesh, cookie: Option<SessionId>) -> State {
        State {
            mesh,
            cookie,
            loaded: None,
            current: Map::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            clear: false,
            renew: false,
            purge: false,
        }
    }

    /// Notes that the handler read `key`, unless it wrote it first (so
    /// `current` still holds the value read).
    fn read(&mut self, key: &str) {
        if self.clear || self.writes.contains_key(key) || self.reads.contains_key(key) {
            return;
        }
        let seen = self.current.get(key).cloned();
        self.reads.insert(key.to_owned(), seen);
    }
}

#[derive(Clone)]
struct Handle(Rc<RefCell<State>>);

/// Reads the session of the request once (later extractions reuse it).
async fn load(state: &Rc<RefCell<State>>) -> Result<(), Error> {
    let (mesh, cookie) = {
        let s = state.borrow();
        if s.loaded.is_some() {
            return Ok(());
        }
        (s.mesh.clone(), s.cookie)
    };
    let loaded = match cookie {
        None => None,
        Some(id) => match mesh.get(&id).await {
            Ok(doc) => Some((
                Loaded {
                    id: Some(id),
                    version: doc.version,
                    served_by: doc.served_by().to_owned(),
                },
                doc.to_map(),
            )),
            Err(Error::NotFound) => None,
            Err(error) => return Err(error),
        },
    };
    let (loaded, data) = loaded.unwrap_or_else(|| {
        let guest = Loaded {
            id: None,
            version: 0,
            served_by: mesh.node_id().to_owned(),
        };
        (guest, Map::new())
    });
    let mut s = state.borrow_mut();
    if s.loaded.is_none() {
        s.current = data;
        s.loaded = Some(loaded);
    }
    Ok(())
}

fn raw(value: &Option<Value>) -> Option<Box<RawValue>> {
    value
        .as_ref()
        .and_then(|v| serde_json::value::to_raw_value(v).ok())
}

/// Applies what the handlers did; the cookie to set, if any.
async fn finish(
    state: &Rc<RefCell<State>>,
) -> Result<Option<actix_web::cookie::Cookie<'static>>, Error> {
    let (mesh, id, version, reads, writes, clear, renew, purge, current, cookie) = {
        let s = state.borrow();
        let Some(loaded) = &s.loaded else {
            return Ok(None);
        };
        // A handler that only read: nothing to apply (the common case).
        if !s.clear && s.writes.is_empty() && !s.renew && !s.purge {
            return Ok(None);
        }
        let reads: Vec<_> = s.reads.iter().map(|(k, v)| (k.clone(), raw(v))).collect();
        let writes: Vec<_> = s.writes.iter().map(|(k, v)| (k.clone(), raw(v))).collect();
        (
            s.mesh.clone(),
            loaded.id,
            loaded.version,
            reads,
            writes,
            s.clear,
            s.renew,
            s.purge,
            s.current.clone(),
            s.cookie,
        )
    };
    let cookies = mesh.node().cookies();
    if purge {
        if let Some(id) = id {
            match mesh.delete(&id, IfMatch::any()).await {
                Ok(()) | Err(Error::NotFound) => {}
                Err(error) => return Err(error),
            }
        }
        return Ok((id.is_some() || cookie.is_some()).then(|| cookies.removal()));
    }
    let changed = clear || !writes.is_empty();
    let Some(id) = id else {
        // No session yet: one starts when the handler stored something.
        if !changed || current.is_empty() {
            return Ok(None);
        }
        let doc = mesh.create(&current, None).await?;
        return Ok(Some(cookies.cookie(&doc.id)));
    };
    if changed {
        mesh.commit(&id, version, reads, writes, clear).await?;
    }
    if renew {
        let doc = mesh.renew(&id).await?;
        return Ok(Some(cookies.cookie(&doc.id)));
    }
    Ok(None)
}

/// The request's session, in a handler. Extracting it reads the session
/// (once per request); its methods are then synchronous, and the changes are
/// applied when the handler returns (see the module doc).
///
/// Requires [`SessionMiddleware`] around the route; without it, extraction
/// fails with a 500 that says so.
///
/// ```
/// use actix_web::{HttpResponse, Result};
/// use sessionmesh::actix::Session;
///
/// async fn login(session: Session) -> Result<HttpResponse> {
///     session.clear();
///     session.insert("user", "ada")?;
///     session.renew(); // a new id at login: no session fixation
///     Ok(HttpResponse::Ok().finish())
/// }
///
/// async fn whoami(session: Session) -> Result<String> {
///     Ok(match session.get::<String>("user")? {
///         Some(user) => format!("{user}, served by {}", session.served_by()),
///         None => "a guest".to_owned(),
///     })
/// }
///
/// async fn logout(session: Session) -> HttpResponse {
///     session.purge(); // deleted, cookie expired
///     HttpResponse::Ok().finish()
/// }
/// ```
pub struct Session(Rc<RefCell<State>>);

impl Session {
    /// The value of field `key` as a `T`; `Ok(None)` when there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let mut s = self.0.borrow_mut();
        s.read(key);
        match s.current.get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| Error::InvalidData(format!("field {key:?}: {e}"))),
        }
    }

    /// Sets field `key` to `value` (serialised as JSON).
    pub fn insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|e| Error::InvalidData(e.to_string()))?;
        let key = key.into();
        let mut s = self.0.borrow_mut();
        s.current.insert(key.clone(), value.clone());
        s.writes.insert(key, Some(value));
        Ok(())
    }

    /// Removes field `key`; its value, if it had one.
    pub fn remove(&self, key: &str) -> Option<Value> {
        let mut s = self.0.borrow_mut();
        s.read(key);
        s.writes.insert(key.to_owned(), None);
        s.current.remove(key)
    }

    /// Removes every field; the session itself stays (see [`Session::purge`]).
    pub fn clear(&self) {
        let mut s = self.0.borrow_mut();
        s.current.clear();
        s.writes.clear();
        s.clear = true;
    }

    /// Moves the session to a new id (the old one is deleted), keeping its
    /// data: do it at login, against session fixation. The new cookie is set
    /// on the response.
    pub fn renew(&self) {
        self.0.borrow_mut().renew = true;
    }

    /// Deletes the session and expires its cookie (logout).
    pub fn purge(&self) {
        let mut s = self.0.borrow_mut();
        s.purge = true;
        s.current.clear();
    }

    /// The session's id; `None` before it was first stored.
    pub fn id(&self) -> Option<SessionId> {
        self.0.borrow().loaded.as_ref().and_then(|l| l.id)
    }

    /// Whether there is a stored session (the visitor is not a guest).
    pub fn exists(&self) -> bool {
        self.id().is_some()
    }

    /// The id of the node that served the session (its owner, or the replica
    /// that took over); this node for a guest.
    pub fn served_by(&self) -> String {
        self.0
            .borrow()
            .loaded
            .as_ref()
            .map(|l| l.served_by.clone())
            .unwrap_or_default()
    }
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Session, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let handle = req.extensions().get::<Handle>().cloned();
        Box::pin(async move {
            let Some(Handle(state)) = handle else {
                return Err(actix_web::error::ErrorInternalServerError(
                    "the Session extractor needs sessionmesh::actix::SessionMiddleware around the route",
                ));
            };
            load(&state).await.map_err(ApiError::from)?;
            Ok(Session(state))
        })
    }
}
