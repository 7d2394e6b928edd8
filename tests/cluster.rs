//! Multi-node scenarios: real nodes, real gossip over UDP, real HTTP between them.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use common::{header, set_cookie, wait_for, Cluster, WAIT};
use serde_json::{json, Value};

/// Three nodes seeded with the first converge on one ring.
///
/// 1. start node1, node2 (seed node1), node3 (seed node1);
/// 2. wait until every node's ring has the three of them with one fingerprint;
/// 3. `/api/cluster` on each node reports the same fingerprint and three live, ready members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_on_one_ring() {
    let started = Instant::now();
    let cluster = Cluster::start(3).await;
    eprintln!("3-node convergence: {:?}", started.elapsed());
    let mut prints = HashSet::new();
    for i in 0..3 {
        let view: Value = wait_for("all members live in /api/cluster", WAIT, || async {
            let v: Value = cluster
                .http
                .get(cluster.url(i, "/api/cluster"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let members = v["members"].as_array()?;
            (members.len() == 3
                && members
                    .iter()
                    .all(|m| m["live"] == true && m["status"] == "ready"))
            .then_some(v)
        })
        .await;
        assert_eq!(view["node_id"], cluster.id(i));
        assert_eq!(view["ring"]["replication_factor"], 2);
        assert!(view["ring"]["vnodes_per_node"].as_u64().unwrap() >= 128);
        for m in view["members"].as_array().unwrap() {
            for key in [
                "node_id",
                "generation",
                "public_addr",
                "internal_addr",
                "gossip_addr",
            ] {
                assert!(!m[key].is_null(), "member lacks {key}: {m}");
            }
        }
        prints.insert(view["ring"]["fingerprint"].as_str().unwrap().to_owned());
        let ready = cluster
            .http
            .get(cluster.url(i, "/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let health = cluster
            .http
            .get(cluster.url(i, "/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    assert_eq!(prints.len(), 1, "converged nodes report one fingerprint");
    cluster.shutdown().await;
}

/// The Ktor example's flow across nodes.
///
/// 1. `GET /login?name=Ada` on node1: `Login successful.` and a signed cookie;
/// 2. `GET /` with that cookie on node2 and node3: `Hello, Ada`, served by one
///    node (the owner, node1, which minted an id it owns) and marked as forwarded;
/// 3. `POST /logout` on node3; then every node greets a Guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_on_one_node_is_greeted_on_the_others() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let login = http
        .get(cluster.url(0, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(
        header(&login, "x-served-by").as_deref(),
        Some("node1"),
        "creation needs no forward"
    );
    let cookie = set_cookie(&login, "SESSION").expect("a session cookie");
    let raw = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Lax") && raw.contains("Path=/"),
        "{raw}"
    );
    assert_eq!(login.text().await.unwrap(), "Login successful.");

    let mut served_by = HashSet::new();
    for i in 0..3 {
        let page = http
            .get(cluster.url(i, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        served_by.insert(header(&page, "x-served-by").unwrap());
        if i > 0 {
            assert_eq!(
                header(&page, "x-entry-node"),
                Some(cluster.id(i)),
                "forwarded from the entry node"
            );
        } else {
            assert_eq!(header(&page, "x-entry-node"), None);
        }
        assert!(page.text().await.unwrap().contains("Hello, Ada"));
    }
    assert_eq!(served_by, HashSet::from(["node1".to_owned()]));

    let logout = http
        .post(cluster.url(2, "/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303, "logout leads back to the home page");
    assert_eq!(header(&logout, "location").as_deref(), Some("/"));
    let cleared = logout.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("SESSION=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for i in 0..3 {
        let page = http
            .get(cluster.url(i, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(
            page.text().await.unwrap().contains("Hello, Guest"),
            "logged out everywhere"
        );
    }
    // A POST login through the form redirects home with a cookie.
    let form = http
        .post(cluster.url(1, "/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Grace+Hopper")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert_eq!(header(&form, "location").as_deref(), Some("/"));
    let cookie = set_cookie(&form, "SESSION").unwrap();
    let page = http
        .get(cluster.url(2, "/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("Hello, Grace Hopper"));
    cluster.shutdown().await;
}

/// 300 sessions created through rotating entry nodes read back identically
/// through every node, and their owners are spread over all three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_created_anywhere_read_back_identically_everywhere() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let mut created = Vec::new();
    for i in 0..300 {
        let entry = i % 3;
        let response = http
            .post(cluster.url(entry, "/api/sessions"))
            .json(&json!({"user": format!("u{i}"), "n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(
            header(&response, "x-served-by"),
            Some(cluster.id(entry)),
            "created where it entered"
        );
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["data"], json!({"user": format!("u{i}"), "n": i}));
        created.push(doc);
    }
    let mut owners: HashMap<String, usize> = HashMap::new();
    for doc in &created {
        let id = doc["id"].as_str().unwrap();
        let mut seen = Vec::new();
        for entry in 0..3 {
            let response = http
                .get(cluster.url(entry, &format!("/api/sessions/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let served_by = header(&response, "x-served-by").unwrap();
            let mut doc: Value = response.json().await.unwrap();
            assert_eq!(doc["owner"].as_str(), Some(served_by.as_str()));
            // Reads slide the expiry; everything else is identical.
            doc.as_object_mut().unwrap().remove("expires_at");
            seen.push(doc);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "same document through every node: {seen:?}"
        );
        assert_eq!(seen[0]["data"], doc["data"]);
        *owners
            .entry(seen[0]["owner"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(owners.len(), 3, "owners spread over all nodes: {owners:?}");
    assert!(
        owners.values().all(|&n| n == 100),
        "each entry node owns what it created: {owners:?}"
    );
    cluster.shutdown().await;
}

/// The id API through non-owner nodes, with optimistic concurrency.
///
/// 1. create on node1; 2. PUT through node2 with `If-Match: "1"` → version 2;
/// 3. PATCH (merge) through node3; 4. a stale `If-Match` → 412 and no change;
/// 5. DELETE through node2 → 204, then 404 everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_id_api_works_through_non_owners() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions?ttl_seconds=600"))
        .json(&json!({"cart": ["apple"], "user": "ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    assert_eq!(doc["owner"], "node1");
    assert_eq!(doc["replicas"].as_array().unwrap().len(), 1);
    let path = format!("/api/sessions/{id}");

    let put = http
        .put(cluster.url(1, &path))
        .header("if-match", "\"1\"")
        .json(&json!({"cart": ["pear"], "user": "ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(header(&put, "x-served-by").as_deref(), Some("node1"));
    assert_eq!(header(&put, "etag").as_deref(), Some("\"2\""));
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["version"], 2);

    let patch: Value = http
        .patch(cluster.url(2, &path))
        .json(&json!({"user": null, "theme": "dark"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patch["version"], 3);
    assert_eq!(patch["data"], json!({"cart": ["pear"], "theme": "dark"}));

    let stale = http
        .put(cluster.url(2, &path))
        .header("if-match", "\"2\"")
        .json(&json!({"overwritten": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let error: Value = stale.json().await.unwrap();
    assert_eq!(error["error"], "version_mismatch");
    let now: Value = http
        .get(cluster.url(1, &path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["version"], 3, "a refused write changes nothing");
    assert_eq!(now["data"], json!({"cart": ["pear"], "theme": "dark"}));

    let deleted = http.delete(cluster.url(1, &path)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    for i in 0..3 {
        let gone = http.get(cluster.url(i, &path)).send().await.unwrap();
        assert_eq!(gone.status(), 404);
        assert!(header(&gone, "x-served-by").is_some());
        let body: Value = gone.json().await.unwrap();
        assert_eq!(body["error"], "no_session");
    }
    cluster.shutdown().await;
}

/// The cookie-addressed API: PUT starts a session and sets the cookie, PATCH
/// merges through another node, a tampered cookie is nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_api_and_tampered_cookies() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let created = http
        .put(cluster.url(1, "/api/session"))
        .json(&json!({"theme": "light"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let cookie = set_cookie(&created, "SESSION").unwrap();
    let patched: Value = http
        .patch(cluster.url(2, "/api/session"))
        .header("cookie", &cookie)
        .json(&json!({"lang": "fr"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["data"], json!({"theme": "light", "lang": "fr"}));
    assert_eq!(patched["version"], 2);

    // Flip one character of the signature, then of the id.
    let value = cookie.strip_prefix("SESSION=").unwrap();
    let (id, sig) = value.split_once('.').unwrap();
    let flip = |s: &str| {
        let mut chars: Vec<char> = s.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    for tampered in [
        format!("SESSION={id}.{}", flip(sig)),
        format!("SESSION={}.{sig}", flip(id)),
        "SESSION=garbage".to_owned(),
    ] {
        for i in 0..3 {
            let page = http
                .get(cluster.url(i, "/"))
                .header("cookie", &tampered)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            assert!(page.text().await.unwrap().contains("Hello, Guest"));
            let api = http
                .get(cluster.url(i, "/api/session"))
                .header("cookie", &tampered)
                .send()
                .await
                .unwrap();
            assert_eq!(api.status(), 404);
        }
    }
    let deleted = http
        .delete(cluster.url(0, "/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(cluster.url(2, "/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    cluster.shutdown().await;
}

/// Bad input gets a clear JSON error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_json_errors() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"keep": "me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/api/sessions/{}", doc["id"].as_str().unwrap());

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(cluster.url(1, "/api/sessions")).body("{not json"),
            400,
            "malformed_json",
        ),
        (
            http.post(cluster.url(1, "/api/sessions")).body("[1, 2]"),
            400,
            "not_an_object",
        ),
        (
            http.put(cluster.url(1, &path)).body("{\"a\":"),
            400,
            "malformed_json",
        ),
        (
            http.put(cluster.url(2, &path)).body("\"text\""),
            400,
            "not_an_object",
        ),
        (
            http.patch(cluster.url(2, &path)).body(vec![0xff, 0xfe]),
            400,
            "malformed_json",
        ),
        (
            http.put(cluster.url(1, &path))
                .body(format!("{{\"big\":\"{}\"}}", "x".repeat(70 * 1024))),
            413,
            "payload_too_large",
        ),
        (
            http.post(cluster.url(1, "/api/sessions?ttl_seconds=99999999999"))
                .body("{}"),
            400,
            "bad_ttl",
        ),
        (
            http.post(cluster.url(1, "/api/sessions?ttl_seconds=-1"))
                .body("{}"),
            400,
            "bad_query",
        ),
        (
            http.put(cluster.url(1, &path))
                .header("if-match", "yesterday")
                .body("{}"),
            400,
            "bad_if_match",
        ),
        (http.get(cluster.url(1, "/no/such/route")), 404, "no_route"),
        (
            http.get(cluster.url(1, "/api/sessions/not-an-id")),
            404,
            "no_session",
        ),
        (
            http.post(cluster.url(1, &path)).body("{}"),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url());
        let response = http.execute(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert!(header(&response, "x-served-by").is_some(), "{what}");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let after: Value = http
        .get(cluster.url(2, &path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["version"], 1, "nothing changed");
    assert_eq!(after["data"], json!({"keep": "me"}));
    cluster.shutdown().await;
}

/// The demo pages behave like a site: `/login` opened in a browser shows the
/// form, a form sent empty (or with a name too long) shows the form again with
/// a message and stores nothing, the pages carry their own inline stylesheet,
/// and logging out leads back to `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pages_behave_like_a_site() {
    let cluster = Cluster::start(1).await;
    let http = &cluster.http;
    let sessions = || cluster.nodes[0].node().store().len();
    let form = http.get(cluster.url(0, "/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(header(&form, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let text = form.text().await.unwrap();
    assert!(
        text.contains(r#"<form method="post" action="/login">"#),
        "{text}"
    );
    assert!(
        text.contains("<style>") && !text.contains("<link"),
        "inline style only"
    );
    for (body, message) in [
        ("name=", "Please enter a name"),
        ("name=+++", "Please enter a name"),
        ("", "Please enter a name"),
        (
            &*format!("name={}", "x".repeat(300)),
            "at most 256 characters",
        ),
    ] {
        let refused = http
            .post(cluster.url(0, "/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body:?}");
        assert!(header(&refused, "content-type")
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(set_cookie(&refused, "SESSION"), None);
        let text = refused.text().await.unwrap();
        assert!(text.contains(message), "{body:?}: {text}");
        assert!(text.contains(r#"action="/login""#), "the form again");
    }
    let refused = http
        .get(cluster.url(0, "/login?name="))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(sessions(), 0, "no refused login stored anything");

    let login = http
        .post(cluster.url(0, "/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ada")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(header(&login, "location").as_deref(), Some("/"));
    let cookie = set_cookie(&login, "SESSION").unwrap();
    for method in ["GET", "POST"] {
        let logout = http
            .request(method.parse().unwrap(), cluster.url(0, "/logout"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let expected = if method == "POST" { 303 } else { 200 };
        assert_eq!(logout.status(), expected, "{method} /logout");
        if method == "POST" {
            assert_eq!(header(&logout, "location").as_deref(), Some("/"));
        }
        assert_eq!(set_cookie(&logout, "SESSION").as_deref(), Some("SESSION="));
    }
    cluster.shutdown().await;
}

/// Every public route answers a method it does not serve with a JSON 405 and
/// an `Allow` header, and every GET route answers HEAD as load balancers probe:
/// the GET's status and headers, no body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_get_405_with_allow_and_head_works_like_get() {
    let cluster = Cluster::start(2).await;
    let http = &cluster.http;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = format!("/api/sessions/{}", doc["id"].as_str().unwrap());
    let whereis = format!("/api/cluster/whereis/{}", doc["id"].as_str().unwrap());
    let get_routes = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/dashboard",
        "/api/cluster",
        "/api/cluster/overview",
        &whereis,
        &session,
    ];
    for path in get_routes {
        for method in ["POST", "PUT", "DELETE"] {
            if path == session && method != "POST" {
                continue; // the session resource serves PUT and DELETE
            }
            let response = http
                .request(method.parse().unwrap(), cluster.url(1, path))
                .send()
                .await
                .unwrap();
            let what = format!("{method} {path}");
            assert_eq!(response.status(), 405, "{what}");
            let allow = header(&response, "allow").unwrap_or_default();
            assert!(
                allow.contains("GET") && allow.contains("HEAD") && !allow.contains(method),
                "{what}: Allow: {allow:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed", "{what}");
        }
        let get = http.get(cluster.url(1, path)).send().await.unwrap();
        let head = http.head(cluster.url(1, path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert_eq!(get.status(), 200, "GET {path}");
        assert_eq!(
            header(&head, "content-type"),
            header(&get, "content-type"),
            "HEAD {path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    for (method, path, allow) in [
        ("GET", "/api/sessions", "POST"),
        ("PUT", "/login", "GET, POST"),
        ("DELETE", "/logout", "GET, POST"),
        ("POST", "/api/session", "GET, HEAD, PUT, PATCH, DELETE"),
        ("GET", "/api/admin/leave", "POST"),
    ] {
        let response = http
            .request(method.parse().unwrap(), cluster.url(0, path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(header(&response, "allow").as_deref(), Some(allow));
    }
    cluster.shutdown().await;
}

/// The internal listener serves peers only; the public one has no internal routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_listener_refuses_strangers() {
    let cluster = Cluster::start(3).await;
    let http = &cluster.http;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"secret": 42}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fwd = format!("/fwd/api/sessions/{}", doc["id"].as_str().unwrap());
    let forged = [
        None,
        Some("v1.0.node2.AAAA".to_owned()),
        Some(format!(
            "v1.{}.node2.{}",
            sessionmesh::testing::session::now_millis(),
            "A".repeat(43)
        )),
    ];
    for auth in forged {
        for path in [
            fwd.as_str(),
            "/internal/ping",
            "/fwd/",
            sessionmesh::testing::link::LINK_PATH,
            "/anything",
        ] {
            let mut request = http
                .get(cluster.internal_url(0, path))
                .header("x-entry-node", "node2");
            if let Some(auth) = &auth {
                request = request.header("x-sessionmesh-auth", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} with {auth:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
    // A node of another cluster secret is a stranger too.
    let stranger = sessionmesh::testing::auth::Signer::new(sessionmesh::config::Secret::random());
    let response = http
        .get(cluster.internal_url(0, &fwd))
        .header(
            "x-sessionmesh-auth",
            stranger.sign("node2", "GET", &fwd, b""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A peer with the secret is served.
    let peer = sessionmesh::testing::auth::Signer::new(cluster.secrets.cluster.clone());
    let response = http
        .get(cluster.internal_url(0, &fwd))
        .header("x-sessionmesh-auth", peer.sign("node2", "GET", &fwd, b""))
        .header("x-entry-node", "node2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Internal routes are not on the public listener.
    for path in [fwd.as_str(), "/internal/ping"] {
        assert_eq!(
            http.get(cluster.url(0, path))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "{path}"
        );
    }
    cluster.shutdown().await;
}

/// Five nodes: every node serves every session, and a node that stops leaves
/// every ring while its peers keep serving.
///
/// 1. start 5 nodes; 2. create sessions through each node; read each through
///    all five; 3. stop node5 gracefully; 4. wait until the four others' rings
///    no longer hold it; 5. sessions owned by others still read through all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_serve_everything_and_a_stopped_node_leaves_every_ring() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5).await;
    eprintln!("5-node convergence: {:?}", started.elapsed());
    let http = cluster.http.clone();
    let mut ids = Vec::new();
    for entry in 0..5 {
        for _ in 0..4 {
            let doc: Value = http
                .post(cluster.url(entry, "/api/sessions"))
                .json(&json!({"entry": entry}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push((
                doc["id"].as_str().unwrap().to_owned(),
                doc["owner"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for (id, owner) in &ids {
        for entry in 0..5 {
            let r = http
                .get(cluster.url(entry, &format!("/api/sessions/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-served-by").as_ref(), Some(owner));
        }
    }

    let leaving = cluster.nodes.pop().unwrap();
    let left_at = Instant::now();
    leaving.shutdown().await;
    eprintln!("graceful leave of node5: {:?}", left_at.elapsed());
    cluster.wait_converged(4).await;
    for node in &cluster.nodes {
        assert!(!node.node().view().ring.contains("node5"));
    }
    for (id, owner) in ids.iter().filter(|(_, owner)| owner != "node5") {
        for entry in 0..4 {
            let r = http
                .get(cluster.url(entry, &format!("/api/sessions/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "session owned by {owner} after node5 left");
        }
    }
    cluster.shutdown().await;
}

/// A node that announced `leaving` takes no copy from a peer: its last handoff
/// pass may be over, and it would stop with the copy (a write acknowledged
/// through it would then be on fewer nodes than the replication factor; the
/// replication core's simulation found it). A writer that has not seen the
/// leave yet is told `leaving`, counts a failed delivery and sends its copy
/// to a stand-in instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_takes_no_copy() {
    let cluster = Cluster::start(3).await;
    let leaver = cluster.nodes[2].mesh().clone();
    let leave = tokio::spawn(async move { leaver.leave().await });
    let node3 = cluster.nodes[2].node();
    wait_for("node3 to see itself leaving", WAIT, || async {
        let view = node3.view();
        view.member(node3.id())
            .is_some_and(|m| m.status.as_str() == "leaving")
            .then_some(())
    })
    .await;

    // A write's copy from node1, which has not seen the leave (as far as the
    // copy's sender goes: it is signed as node1's).
    let id = sessionmesh::testing::session::SessionId::random();
    let now = sessionmesh::testing::session::now_millis();
    let body = format!(
        r#"{{"from":"node1","records":[{{"id":"{id}","version":1,"updated_at":{now},"created_at":{now},"expires_at":{},"ttl_ms":60000,"data":{{"n":1}},"write":true}}]}}"#,
        now + 60_000
    );
    let refused_before = node3
        .replication()
        .stats()
        .copies_refused_leaving
        .load(std::sync::atomic::Ordering::Relaxed);
    let ack = cluster.replicate_as(2, "node1", body).await;
    assert_eq!(
        (&ack["leaving"], &ack["applied"]),
        (&json!(true), &json!(0)),
        "{ack}"
    );
    assert!(
        node3.replication().copy(&id).is_none(),
        "node3 kept the copy"
    );
    let refused = node3
        .replication()
        .stats()
        .copies_refused_leaving
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused - refused_before, 1);
    let metrics = cluster
        .http
        .get(cluster.url(2, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sessionmesh_copies_refused_leaving_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    leave.await.unwrap();
    cluster.shutdown().await;
}
