//! The drop-in stores for actix-session and tower-sessions, served through the
//! crates' own middleware on three real nodes.
//!
//! Each test starts a cluster of three in-process nodes (real gossip, real
//! peer links) and, beside each node, an application of its own on a port-0
//! listener: actix-web with actix-session's `SessionMiddleware`, or axum with
//! tower-sessions' `SessionManagerLayer`, each on the store of its node. The
//! client carries cookies by hand, as a browser does, and checks what the
//! cluster holds through the nodes' JSON API.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime};

use actix_session::config::{BrowserSession, CookieContentSecurity, TtlExtensionPolicy};
use actix_session::storage::{LoadError, SessionKey, SessionStore as _};
use actix_web::cookie::{Cookie, CookieJar, Key};
use actix_web::dev::ServerHandle;
use axum::http::StatusCode as AxumStatus;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sessionmesh::{Mesh, SessionId};
use tower_sessions::session::{Id, Record};
use tower_sessions::{Expiry, SessionManagerLayer, SessionStore as _};

use common::{client, set_cookie, wait_for, Cluster, WAIT};

// ---------------------------------------------------------------------------
// The applications
// ---------------------------------------------------------------------------

/// The session TTL of an actix-session application and when it is extended.
#[derive(Clone, Copy)]
struct ActixTtl {
    ttl: Duration,
    on_every_request: bool,
}

impl ActixTtl {
    /// actix-session's default: a day, extended when the state changes.
    fn default_policy() -> ActixTtl {
        ActixTtl {
            ttl: Duration::from_secs(24 * 3600),
            on_every_request: false,
        }
    }
}

/// An actix-web application using actix-session on one node's store.
struct ActixApp {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl ActixApp {
    fn start(mesh: &Mesh, key: &Key, ttl: ActixTtl) -> ActixApp {
        use actix_session::{Session, SessionMiddleware};
        use actix_web::{web, App, HttpServer};

        async fn count(session: Session) -> actix_web::Result<String> {
            let n: u64 = session.get("count")?.unwrap_or(0) + 1;
            session.insert("count", n)?;
            Ok(n.to_string())
        }
        async fn peek(session: Session) -> actix_web::Result<String> {
            let count: Option<u64> = session.get("count")?;
            let user: Option<String> = session.get("user")?;
            Ok(json!({"count": count, "user": user}).to_string())
        }
        async fn login(session: Session, user: web::Path<String>) -> actix_web::Result<String> {
            session.renew();
            session.insert("user", user.into_inner())?;
            Ok("welcome".to_owned())
        }
        async fn logout(session: Session) -> &'static str {
            session.purge();
            "bye"
        }

        let store = sessionmesh::actix_session::MeshSessionStore::new(mesh.clone());
        let key = key.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let policy = match ttl.on_every_request {
                true => TtlExtensionPolicy::OnEveryRequest,
                false => TtlExtensionPolicy::OnStateChanges,
            };
            let lifecycle = BrowserSession::default()
                .state_ttl(ttl.ttl.try_into().unwrap())
                .state_ttl_extension_policy(policy);
            let sessions = SessionMiddleware::builder(store.clone(), key.clone())
                .cookie_secure(false)
                // Signed, not encrypted: the test reads the session key in the cookie.
                .cookie_content_security(CookieContentSecurity::Signed)
                .session_lifecycle(lifecycle)
                .build();
            App::new()
                .wrap(sessions)
                .route("/count", web::get().to(count))
                .route("/peek", web::get().to(peek))
                .route("/login/{user}", web::post().to(login))
                .route("/logout", web::post().to(logout))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        ActixApp { addr, handle }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ActixApp {
    fn drop(&mut self) {
        // Sends the stop command; the server task ends once it is done.
        drop(self.handle.stop(false));
    }
}

/// One actix-session application per node of `cluster`, sharing one cookie key.
fn actix_apps(cluster: &Cluster, ttl: ActixTtl) -> (Vec<ActixApp>, Key) {
    let key = Key::generate();
    let apps = cluster
        .nodes
        .iter()
        .map(|node| ActixApp::start(node.mesh(), &key, ttl))
        .collect();
    (apps, key)
}

/// The session key inside an actix-session cookie `id=<signature><key>`.
fn actix_key(cookie: &str) -> String {
    let value = cookie.strip_prefix("id=").expect("an id cookie");
    // A signed cookie's value is the base64 HMAC (percent-encoded in the
    // header), then the value: a session key of 22 URL-safe characters.
    let at = value.len().checked_sub(22).expect("a signed value");
    value[at..].to_owned()
}

/// An `id` cookie signed with `key`, as actix-session would sign `value`.
fn signed_cookie(key: &Key, value: &str) -> String {
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(Cookie::new("id", value.to_owned()));
    let signed = jar.get("id").expect("the cookie just added");
    // As the header carries it (and a browser sends it back).
    signed.encoded().to_string()
}

/// The tower-sessions expiry of an axum application, and whether it saves the
/// session on every request.
#[derive(Clone, Copy)]
struct TowerTtl {
    inactivity: Duration,
    always_save: bool,
}

impl TowerTtl {
    fn minutes(n: u64) -> TowerTtl {
        TowerTtl {
            inactivity: Duration::from_secs(60 * n),
            always_save: false,
        }
    }
}

/// An axum application using tower-sessions on one node's store.
struct AxumApp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AxumApp {
    async fn start(mesh: &Mesh, ttl: TowerTtl) -> AxumApp {
        use axum::extract::Path;
        use axum::routing::{get, post};
        use tower_sessions::Session;

        fn e500(error: impl std::fmt::Display) -> (AxumStatus, String) {
            (AxumStatus::INTERNAL_SERVER_ERROR, error.to_string())
        }
        async fn count(session: Session) -> Result<String, (AxumStatus, String)> {
            let n = session
                .get::<u64>("count")
                .await
                .map_err(e500)?
                .unwrap_or(0)
                + 1;
            session.insert("count", n).await.map_err(e500)?;
            Ok(n.to_string())
        }
        async fn peek(session: Session) -> Result<String, (AxumStatus, String)> {
            let count = session.get::<u64>("count").await.map_err(e500)?;
            let user = session.get::<String>("user").await.map_err(e500)?;
            Ok(json!({"count": count, "user": user}).to_string())
        }
        async fn login(
            session: Session,
            Path(user): Path<String>,
        ) -> Result<&'static str, (AxumStatus, String)> {
            session.cycle_id().await.map_err(e500)?;
            session.insert("user", user).await.map_err(e500)?;
            Ok("welcome")
        }
        async fn logout(session: Session) -> Result<&'static str, (AxumStatus, String)> {
            session.flush().await.map_err(e500)?;
            Ok("bye")
        }

        let store = sessionmesh::tower_sessions::MeshSessionStore::new(mesh.clone());
        let inactivity = time::Duration::try_from(ttl.inactivity).unwrap();
        let sessions = SessionManagerLayer::new(store)
            .with_secure(false)
            .with_expiry(Expiry::OnInactivity(inactivity))
            .with_always_save(ttl.always_save);
        let app = axum::Router::new()
            .route("/count", get(count))
            .route("/peek", get(peek))
            .route("/login/{user}", post(login))
            .route("/logout", post(logout))
            .layer(sessions);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AxumApp { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for AxumApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn axum_apps(cluster: &Cluster, ttl: TowerTtl) -> Vec<AxumApp> {
    let mut apps = Vec::new();
    for node in &cluster.nodes {
        apps.push(AxumApp::start(node.mesh(), ttl).await);
    }
    apps
}

/// The session id in a tower-sessions cookie `id=<id>`.
fn tower_id(cookie: &str) -> String {
    cookie.strip_prefix("id=").expect("an id cookie").to_owned()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// What a request got back.
struct Answer {
    status: StatusCode,
    /// The `id=<value>` pair of its `Set-Cookie`, if it set one.
    cookie: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `method url` with the session cookie `cookie`, as a browser would.
async fn send(method: Method, url: &str, cookie: Option<&str>) -> Answer {
    let mut request = client().request(method, url);
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = request.send().await.expect("the application answers");
    let status = response.status();
    let cookie = set_cookie(&response, "id");
    let body = response.text().await.expect("a body");
    Answer {
        status,
        cookie,
        body,
    }
}

async fn get(url: &str, cookie: Option<&str>) -> Answer {
    send(Method::GET, url, cookie).await
}

async fn post(url: &str, cookie: Option<&str>) -> Answer {
    send(Method::POST, url, cookie).await
}

/// The session `id` as node `i`'s JSON API shows it; `None` when it answers 404.
async fn api_session(cluster: &Cluster, i: usize, id: &str) -> Option<Value> {
    let answer = get(&cluster.url(i, &format!("/api/sessions/{id}")), None).await;
    match answer.status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(answer.json()),
        other => panic!("the JSON API answered {other}: {}", answer.body),
    }
}

/// The `expiry_date` a store wrote in a session's data.
fn expiry_date(doc: &Value) -> SystemTime {
    let text = doc["data"]["expiry_date"]
        .as_str()
        .unwrap_or_else(|| panic!("no expiry_date in {doc}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until the session `id` is still in the cluster but past the
/// `expiry_date` its store wrote (the JSON API's reads keep it there).
async fn wait_past_expiry_date(cluster: &Cluster, id: &str) {
    wait_for("the session's expiry_date to pass", WAIT, || async {
        let doc = api_session(cluster, 0, id)
            .await
            .expect("the session is held");
        (expiry_date(&doc) < SystemTime::now()).then_some(())
    })
    .await
}

/// `expected` within a second of `actual`.
fn about(actual: SystemTime, expected: SystemTime) -> bool {
    let off = match actual.duration_since(expected) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    off <= Duration::from_secs(1)
}

// ---------------------------------------------------------------------------
// actix-session
// ---------------------------------------------------------------------------

/// A session written through one node's application is read and written
/// through the others', under one key that the first node owns.
///
/// 1. `/count` on node 1's application: 1, and a session cookie;
/// 2. with that cookie, `/count` on node 2's (2) and node 3's (3): the cookie
///    keeps its key;
/// 3. `/peek` on node 1's: 3;
/// 4. node 3's JSON API shows the state as actix-session encodes it, the
///    expiry date a day ahead, and node 1 as the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_a_session_is_shared_by_the_applications_of_all_nodes() {
    let cluster = Cluster::start(3).await;
    let (apps, _) = actix_apps(&cluster, ActixTtl::default_policy());

    let first = get(&apps[0].url("/count"), None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let cookie = first.cookie.expect("a session cookie");
    let key = actix_key(&cookie);
    assert!(SessionId::parse(&key).is_some(), "{key}");
    for (i, expected) in [(1, "2"), (2, "3")] {
        let answer = get(&apps[i].url("/count"), Some(&cookie)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, expected)
        );
        let again = answer
            .cookie
            .expect("actix-session sets the cookie on changes");
        assert_eq!(actix_key(&again), key, "an update keeps the key");
    }
    let peek = get(&apps[0].url("/peek"), Some(&cookie)).await;
    assert_eq!(peek.json(), json!({"count": 3, "user": null}));

    let doc = api_session(&cluster, 2, &key).await.expect("the session");
    assert_eq!(doc["data"]["state"], json!({"count": "3"}));
    let day = SystemTime::now() + Duration::from_secs(24 * 3600);
    assert!(about(expiry_date(&doc), day), "{doc}");
    assert_eq!(doc["owner"], cluster.id(0), "{doc}");
    cluster.shutdown().await;
}

/// A login renews the key and a logout purges the session: the old cookie
/// then names no session on any node.
///
/// 1. `/count` on node 1's application: cookie A;
/// 2. `/login/ada` with A on node 2's: a new cookie B;
/// 3. `/peek` with B on node 3's: ada, and the count carried over;
/// 4. `/peek` with A on node 1's: an empty session; the JSON API has no A;
/// 5. `/logout` with B on node 3's: the cookie is removed; `/peek` with B on
///    node 1's: an empty session; the JSON API has no B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_renew_and_purge_leave_the_old_cookie_naming_no_session() {
    let cluster = Cluster::start(3).await;
    let (apps, _) = actix_apps(&cluster, ActixTtl::default_policy());

    let a = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("cookie A");
    let login = post(&apps[1].url("/login/ada"), Some(&a)).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let b = login.cookie.expect("cookie B");
    assert_ne!(actix_key(&a), actix_key(&b), "a renewal changes the key");

    let peek = get(&apps[2].url("/peek"), Some(&b)).await;
    assert_eq!(peek.json(), json!({"count": 1, "user": "ada"}));
    let old = get(&apps[0].url("/peek"), Some(&a)).await;
    assert_eq!(old.json(), json!({"count": null, "user": null}));
    assert!(api_session(&cluster, 1, &actix_key(&a)).await.is_none());
    assert!(api_session(&cluster, 1, &actix_key(&b)).await.is_some());

    let logout = post(&apps[2].url("/logout"), Some(&b)).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    assert_eq!(
        logout.cookie.as_deref(),
        Some("id="),
        "the cookie is removed"
    );
    let after = get(&apps[0].url("/peek"), Some(&b)).await;
    assert_eq!(after.json(), json!({"count": null, "user": null}));
    assert!(api_session(&cluster, 2, &actix_key(&b)).await.is_none());
    cluster.shutdown().await;
}

/// With actix-session's default policy the TTL runs from the last change:
/// reads do not extend it, and an expired session is an empty one.
///
/// 1. applications with a 2 s state TTL; `/count` on node 1's: cookie C;
/// 2. `/peek` with C on node 2's, again and again, until it finds no count:
///    that happens, and not before 2 s after the write;
/// 3. the JSON API no longer has the session;
/// 4. `/count` with C on node 3's: 1, under a new key (what actix-session
///    does on Redis when the key has expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_a_session_expires_its_ttl_after_the_last_change_whatever_the_reads() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(2);
    let (apps, _) = actix_apps(
        &cluster,
        ActixTtl {
            ttl,
            on_every_request: false,
        },
    );

    let written = Instant::now();
    let c = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("cookie C");
    let reads = Cell::new(0);
    wait_for("the session to expire", WAIT, || async {
        reads.set(reads.get() + 1);
        let peek = get(&apps[1].url("/peek"), Some(&c)).await;
        assert_eq!(peek.status, StatusCode::OK, "{}", peek.body);
        peek.json()["count"].is_null().then_some(())
    })
    .await;
    let expired_after = written.elapsed();
    assert!(expired_after >= ttl, "expired after {expired_after:?}");
    assert!(reads.get() > 1, "read while it was alive");
    assert!(api_session(&cluster, 0, &actix_key(&c)).await.is_none());

    let fresh = get(&apps[2].url("/count"), Some(&c)).await;
    assert_eq!(fresh.body, "1");
    let new = fresh.cookie.expect("a new session cookie");
    assert_ne!(actix_key(&new), actix_key(&c));
    cluster.shutdown().await;
}

/// With `TtlExtensionPolicy::OnEveryRequest`, every request extends the TTL
/// (the store's `update_ttl`), and the session expires a TTL after the last.
///
/// 1. applications with a 2 s state TTL extended on every request;
///    `/count` on node 1's;
/// 2. `/peek` on nodes 2's and 3's in turn for 4 s: the count is there every
///    time;
/// 3. then no more requests: the session expires (watched through the store,
///    not requests), not before 2 s after the last request, and `/peek` then
///    finds an empty session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_a_ttl_extended_on_every_request_keeps_a_used_session() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(2);
    let (apps, _) = actix_apps(
        &cluster,
        ActixTtl {
            ttl,
            on_every_request: true,
        },
    );

    let started = Instant::now();
    let c = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("a cookie");
    let turn = Cell::new(0);
    let last = Cell::new(Instant::now());
    wait_for("2 TTLs of requests", WAIT, || async {
        turn.set(turn.get() + 1);
        last.set(Instant::now());
        let peek = get(&apps[1 + turn.get() % 2].url("/peek"), Some(&c)).await;
        assert_eq!(
            peek.json()["count"],
            1,
            "alive after {:?}",
            started.elapsed()
        );
        (started.elapsed() > 2 * ttl).then_some(())
    })
    .await;
    let extended = last.get();
    // Watched through the store, whose loads extend nothing (a request would).
    let store = sessionmesh::actix_session::MeshSessionStore::new(cluster.nodes[0].mesh().clone());
    let key = session_key(&actix_key(&c));
    wait_for("the session to expire", WAIT, || async {
        store.load(&key).await.unwrap().is_none().then_some(())
    })
    .await;
    let idle = extended.elapsed();
    assert!(idle >= ttl, "expired {idle:?} after the last request");
    let peek = get(&apps[0].url("/peek"), Some(&c)).await;
    assert_eq!(peek.json(), json!({"count": null, "user": null}));
    cluster.shutdown().await;
}

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn session_key(text: &str) -> SessionKey {
    SessionKey::try_from(text.to_owned()).unwrap()
}

/// The store's calls, as actix-session's middleware makes them, answer as the
/// Redis store does; keys that name no session load as none, through the
/// middleware too.
///
/// 1. unknown, malformed and Redis-style keys load as none; deleting or
///    extending them is no error;
/// 2. `save` on node 1, `load` on node 2, `update` on node 3 (same key),
///    `load` on node 1 sees the update;
/// 3. a session past its TTL but still held (the JSON API's reads keep it):
///    `update` saves the state under a new key and the old one loads as
///    none, and `update_ttl` of the old key does not bring it back;
/// 4. a TTL that is not positive: `save` fails, `update_ttl` deletes;
/// 5. a session the JSON API created is no actix-session state: `load`
///    fails to deserialise, and the middleware serves an empty session;
/// 6. through the middleware, cookies with a garbage key, an unknown id or
///    no valid signature give an empty session, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_store_calls_answer_as_the_redis_store() {
    use sessionmesh::actix_session::MeshSessionStore;
    let cluster = Cluster::start(3).await;
    let stores: Vec<MeshSessionStore> = cluster
        .nodes
        .iter()
        .map(|n| MeshSessionStore::new(n.mesh().clone()))
        .collect();
    let minute = actix_web::cookie::time::Duration::minutes(1);

    // 1.
    let unknown = SessionId::random().to_string();
    for key in [unknown.as_str(), "garbage", &"a".repeat(64), ""] {
        assert_eq!(
            stores[0].load(&session_key(key)).await.unwrap(),
            None,
            "{key:?}"
        );
        stores[1].delete(&session_key(key)).await.unwrap();
        stores[2]
            .update_ttl(&session_key(key), &minute)
            .await
            .unwrap();
        assert_eq!(
            stores[0].load(&session_key(key)).await.unwrap(),
            None,
            "{key:?}"
        );
    }

    // 2.
    let saved = state(&[("user", "\"ada\""), ("n", "1")]);
    let key = stores[0].save(saved.clone(), &minute).await.unwrap();
    assert_eq!(stores[1].load(&key).await.unwrap(), Some(saved));
    let changed = state(&[("user", "\"ada\""), ("n", "2")]);
    let same = stores[2]
        .update(session_key(key.as_ref()), changed.clone(), &minute)
        .await
        .unwrap();
    assert_eq!(same, key);
    assert_eq!(stores[0].load(&key).await.unwrap(), Some(changed));

    // 3.
    let short = actix_web::cookie::time::Duration::milliseconds(300);
    let doomed = stores[0].save(state(&[("n", "1")]), &short).await.unwrap();
    wait_past_expiry_date(&cluster, doomed.as_ref()).await;
    let later = state(&[("n", "2")]);
    let renewed = stores[1]
        .update(session_key(doomed.as_ref()), later.clone(), &minute)
        .await
        .unwrap();
    assert_ne!(
        renewed, doomed,
        "an update of an expired key saves a new one"
    );
    assert_eq!(stores[2].load(&doomed).await.unwrap(), None);
    assert_eq!(stores[2].load(&renewed).await.unwrap(), Some(later));
    stores[0].update_ttl(&doomed, &minute).await.unwrap();
    assert_eq!(stores[1].load(&doomed).await.unwrap(), None);
    assert!(api_session(&cluster, 0, doomed.as_ref()).await.is_none());

    // 4.
    let zero = actix_web::cookie::time::Duration::ZERO;
    assert!(stores[0].save(state(&[("n", "1")]), &zero).await.is_err());
    stores[2].update_ttl(&renewed, &zero).await.unwrap();
    assert_eq!(stores[0].load(&renewed).await.unwrap(), None);

    // 5.
    let created = post(&cluster.url(0, "/api/sessions"), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let foreign = created.json()["id"].as_str().unwrap().to_owned();
    let loaded = stores[1].load(&session_key(&foreign)).await;
    assert!(
        matches!(loaded, Err(LoadError::Deserialization(_))),
        "{loaded:?}"
    );
    let (apps, cookie_key) = actix_apps(&cluster, ActixTtl::default_policy());
    let peek = get(
        &apps[2].url("/peek"),
        Some(&signed_cookie(&cookie_key, &foreign)),
    )
    .await;
    assert_eq!(peek.status, StatusCode::OK, "{}", peek.body);
    assert_eq!(peek.json(), json!({"count": null, "user": null}));

    // 6.
    for cookie in [
        signed_cookie(&cookie_key, "garbage"),
        signed_cookie(&cookie_key, &SessionId::random().to_string()),
        signed_cookie(&Key::generate(), key.as_ref()),
        format!("id={}", key.as_ref()),
    ] {
        let peek = get(&apps[1].url("/peek"), Some(&cookie)).await;
        assert_eq!(peek.status, StatusCode::OK, "{cookie}: {}", peek.body);
        assert_eq!(
            peek.json(),
            json!({"count": null, "user": null}),
            "{cookie}"
        );
    }
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------
// tower-sessions
// ---------------------------------------------------------------------------

/// A session written through one node's axum application is read and
/// written through the others', under one id that the first node owns.
///
/// 1. `/count` on node 1's application: 1, and a session cookie whose value
///    is a cluster session id;
/// 2. with it, `/count` on node 2's (2) and node 3's (3);
/// 3. `/peek` on node 1's: 3;
/// 4. node 2's JSON API shows the record's data as JSON values, its expiry
///    date ten minutes ahead, and node 1 as the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_session_is_shared_by_the_applications_of_all_nodes() {
    let cluster = Cluster::start(3).await;
    let apps = axum_apps(&cluster, TowerTtl::minutes(10)).await;

    let first = get(&apps[0].url("/count"), None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let cookie = first.cookie.expect("a session cookie");
    let id = tower_id(&cookie);
    assert!(SessionId::parse(&id).is_some(), "{id}");
    for (i, expected) in [(1, "2"), (2, "3")] {
        let answer = get(&apps[i].url("/count"), Some(&cookie)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, expected)
        );
        if let Some(again) = answer.cookie {
            assert_eq!(again, cookie, "a save keeps the id");
        }
    }
    let peek = get(&apps[0].url("/peek"), Some(&cookie)).await;
    assert_eq!(peek.json(), json!({"count": 3, "user": null}));

    let doc = api_session(&cluster, 1, &id).await.expect("the session");
    assert_eq!(doc["data"]["data"], json!({"count": 3}));
    let ten = SystemTime::now() + Duration::from_secs(600);
    assert!(about(expiry_date(&doc), ten), "{doc}");
    assert_eq!(doc["owner"], cluster.id(0), "{doc}");
    cluster.shutdown().await;
}

/// `cycle_id` on login and `flush` on logout leave the old cookie naming no
/// session on any node.
///
/// 1. `/count` on node 1's application: cookie A;
/// 2. `/login/ada` with A on node 2's: a new cookie B;
/// 3. `/peek` with B on node 3's: ada, and the count carried over;
/// 4. `/peek` with A on node 1's: an empty session; the JSON API has no A;
/// 5. `/logout` with B on node 3's: the cookie is removed; `/peek` with B on
///    node 1's: an empty session; the JSON API has no B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_cycle_id_and_flush_leave_the_old_cookie_naming_no_session() {
    let cluster = Cluster::start(3).await;
    let apps = axum_apps(&cluster, TowerTtl::minutes(10)).await;

    let a = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("cookie A");
    let login = post(&apps[1].url("/login/ada"), Some(&a)).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let b = login.cookie.expect("cookie B");
    assert_ne!(a, b, "cycle_id changes the id");

    let peek = get(&apps[2].url("/peek"), Some(&b)).await;
    assert_eq!(peek.json(), json!({"count": 1, "user": "ada"}));
    let old = get(&apps[0].url("/peek"), Some(&a)).await;
    assert_eq!(old.json(), json!({"count": null, "user": null}));
    assert!(api_session(&cluster, 1, &tower_id(&a)).await.is_none());
    assert!(api_session(&cluster, 1, &tower_id(&b)).await.is_some());

    let logout = post(&apps[2].url("/logout"), Some(&b)).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    assert_eq!(
        logout.cookie.as_deref(),
        Some("id="),
        "the cookie is removed"
    );
    let after = get(&apps[0].url("/peek"), Some(&b)).await;
    assert_eq!(after.json(), json!({"count": null, "user": null}));
    assert!(api_session(&cluster, 2, &tower_id(&b)).await.is_none());
    cluster.shutdown().await;
}

/// A record expires at the `expiry_date` its last save wrote: reads that do
/// not save do not extend it, and an expired session is an empty one.
///
/// 1. applications with a 2 s inactivity expiry (saved on changes only);
///    `/count` on node 1's: cookie C;
/// 2. `/peek` with C on node 2's until it finds no count: that happens, and
///    not before 2 s after the write;
/// 3. the JSON API no longer has the session;
/// 4. `/count` with C on node 3's: 1, under a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_a_session_expires_at_its_expiry_date_whatever_the_reads() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(2);
    let apps = axum_apps(
        &cluster,
        TowerTtl {
            inactivity: ttl,
            always_save: false,
        },
    )
    .await;

    let written = Instant::now();
    let c = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("cookie C");
    let reads = Cell::new(0);
    wait_for("the session to expire", WAIT, || async {
        reads.set(reads.get() + 1);
        let peek = get(&apps[1].url("/peek"), Some(&c)).await;
        assert_eq!(peek.status, StatusCode::OK, "{}", peek.body);
        peek.json()["count"].is_null().then_some(())
    })
    .await;
    let expired_after = written.elapsed();
    assert!(expired_after >= ttl, "expired after {expired_after:?}");
    assert!(reads.get() > 1, "read while it was alive");
    assert!(api_session(&cluster, 0, &tower_id(&c)).await.is_none());

    let fresh = get(&apps[2].url("/count"), Some(&c)).await;
    assert_eq!(fresh.body, "1");
    let new = fresh.cookie.expect("a new session cookie");
    assert_ne!(new, c);
    cluster.shutdown().await;
}

/// With `with_always_save(true)` and an inactivity expiry, every request saves
/// the record with a later `expiry_date`, and the session expires that long
/// after the last request.
///
/// 1. applications with a 2 s inactivity expiry, saved on every request;
///    `/count` on node 1's;
/// 2. `/peek` on nodes 2's and 3's in turn for 4 s: the count is there every
///    time;
/// 3. then no more requests: the session expires (watched through the store,
///    not requests), not before 2 s after the last request, and `/peek` then
///    finds an empty session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_saving_on_every_request_keeps_a_used_session() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(2);
    let apps = axum_apps(
        &cluster,
        TowerTtl {
            inactivity: ttl,
            always_save: true,
        },
    )
    .await;

    let started = Instant::now();
    let c = get(&apps[0].url("/count"), None)
        .await
        .cookie
        .expect("a cookie");
    let turn = Cell::new(0);
    let last = Cell::new(Instant::now());
    wait_for("2 TTLs of requests", WAIT, || async {
        turn.set(turn.get() + 1);
        last.set(Instant::now());
        let peek = get(&apps[1 + turn.get() % 2].url("/peek"), Some(&c)).await;
        assert_eq!(
            peek.json()["count"],
            1,
            "alive after {:?}",
            started.elapsed()
        );
        (started.elapsed() > 2 * ttl).then_some(())
    })
    .await;
    let extended = last.get();
    // Watched through the store, whose loads extend nothing (a request would).
    let store = sessionmesh::tower_sessions::MeshSessionStore::new(cluster.nodes[0].mesh().clone());
    let id: Id = tower_id(&c).parse().unwrap();
    wait_for("the session to expire", WAIT, || async {
        store.load(&id).await.unwrap().is_none().then_some(())
    })
    .await;
    let idle = extended.elapsed();
    assert!(idle >= ttl, "expired {idle:?} after the last request");
    let peek = get(&apps[0].url("/peek"), Some(&c)).await;
    assert_eq!(peek.json(), json!({"count": null, "user": null}));
    cluster.shutdown().await;
}

fn record(data: Value, expiry: time::Duration) -> Record {
    let Value::Object(map) = data else {
        panic!("record data is an object")
    };
    Record {
        id: Id::default(),
        data: map.into_iter().collect(),
        expiry_date: time::OffsetDateTime::now_utc() + expiry,
    }
}

/// The store's calls, as tower-sessions makes them, answer as the Redis store
/// does; ids that name no session load as none, through the middleware too.
///
/// 1. an unknown id loads as none; deleting it is no error;
/// 2. `create` on node 1 gives the record an id that node owns; `load` on
///    node 2 gives the record back (data and expiry date); `save` on node 3;
///    `load` on node 1 sees it;
/// 3. `save` of an id with no session writes nothing (`SET … XX`);
/// 4. a session past its expiry date but still held (the JSON API's reads
///    keep it): `save` with a later date does not bring it back, and it
///    loads as none;
/// 5. `save` with a past expiry date deletes; `create` with one stores
///    nothing;
/// 6. a session the JSON API created is no record: `load` fails to decode;
/// 7. through the middleware, a garbage cookie or an unknown id gives an
///    empty session, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_store_calls_answer_as_the_redis_store() {
    use sessionmesh::tower_sessions::MeshSessionStore;
    let cluster = Cluster::start(3).await;
    let stores: Vec<MeshSessionStore> = cluster
        .nodes
        .iter()
        .map(|n| MeshSessionStore::new(n.mesh().clone()))
        .collect();
    let minutes = time::Duration::minutes(5);

    // 1.
    let unknown = Id::default();
    assert_eq!(stores[0].load(&unknown).await.unwrap(), None);
    stores[1].delete(&unknown).await.unwrap();

    // 2.
    let mut created = record(json!({"user": {"name": "ada"}, "n": 1}), minutes);
    let chosen = created.id;
    stores[0].create(&mut created).await.unwrap();
    assert_ne!(
        created.id, chosen,
        "the record takes the id the node minted"
    );
    let doc = api_session(&cluster, 2, &created.id.to_string())
        .await
        .expect("the session");
    assert_eq!(doc["owner"], cluster.id(0), "{doc}");
    assert_eq!(
        stores[1].load(&created.id).await.unwrap(),
        Some(created.clone())
    );
    let mut changed = created.clone();
    changed.data.insert("n".to_owned(), json!(2));
    changed.expiry_date = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    stores[2].save(&changed).await.unwrap();
    assert_eq!(
        stores[0].load(&created.id).await.unwrap(),
        Some(changed.clone())
    );
    let doc = api_session(&cluster, 1, &created.id.to_string())
        .await
        .unwrap();
    let hour = SystemTime::now() + Duration::from_secs(3600);
    assert!(
        about(doc_expires_at(&doc), hour),
        "the cluster's expiry follows: {doc}"
    );

    // 3.
    let nobody = record(json!({"n": 1}), minutes);
    stores[1].save(&nobody).await.unwrap();
    assert_eq!(stores[2].load(&nobody.id).await.unwrap(), None);
    assert!(api_session(&cluster, 0, &nobody.id.to_string())
        .await
        .is_none());

    // 4.
    let mut doomed = record(json!({"n": 1}), time::Duration::milliseconds(300));
    stores[0].create(&mut doomed).await.unwrap();
    wait_past_expiry_date(&cluster, &doomed.id.to_string()).await;
    doomed.expiry_date = time::OffsetDateTime::now_utc() + minutes;
    stores[1].save(&doomed).await.unwrap();
    assert_eq!(stores[2].load(&doomed.id).await.unwrap(), None);
    assert!(api_session(&cluster, 0, &doomed.id.to_string())
        .await
        .is_none());

    // 5.
    changed.expiry_date = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    stores[1].save(&changed).await.unwrap();
    assert_eq!(stores[2].load(&changed.id).await.unwrap(), None);
    assert!(api_session(&cluster, 0, &changed.id.to_string())
        .await
        .is_none());
    let mut stillborn = record(json!({"n": 1}), time::Duration::seconds(-1));
    stores[0].create(&mut stillborn).await.unwrap();
    assert_eq!(stores[1].load(&stillborn.id).await.unwrap(), None);

    // 6.
    let made = post(&cluster.url(0, "/api/sessions"), None).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let foreign: Id = made.json()["id"].as_str().unwrap().parse().unwrap();
    let loaded = stores[1].load(&foreign).await;
    assert!(
        matches!(loaded, Err(tower_sessions::session_store::Error::Decode(_))),
        "{loaded:?}"
    );

    // 7.
    let apps = axum_apps(&cluster, TowerTtl::minutes(10)).await;
    for cookie in [
        "id=garbage".to_owned(),
        format!("id={}", Id::default()),
        format!("id={}", doomed.id),
    ] {
        let peek = get(&apps[1].url("/peek"), Some(&cookie)).await;
        assert_eq!(peek.status, StatusCode::OK, "{cookie}: {}", peek.body);
        assert_eq!(
            peek.json(),
            json!({"count": null, "user": null}),
            "{cookie}"
        );
    }
    cluster.shutdown().await;
}

/// The cluster's own expiry of a session (the JSON API's `expires_at`).
fn doc_expires_at(doc: &Value) -> SystemTime {
    let text = doc["expires_at"].as_str().expect("expires_at");
    humantime::parse_rfc3339(text).unwrap()
}
