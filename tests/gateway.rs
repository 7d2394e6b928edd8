//! Gateway mode with real applications: three `sessionmesh` nodes (child
//! processes, real gossip and HTTP on loopback), each with `--upstream`
//! pointing at its own instance of an application of `examples/gateway/`
//! (Flask, Express), used as a browser would use them.
//!
//! The applications need `python3` with Flask and `node` with Express
//! (`.ci/run` installs them: Debian's `node-express`, Flask from PyPI).

mod common;

use std::collections::HashSet;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use common::{client, header, set_cookie, wait_for, ChildNode, Secrets, WAIT};
use serde_json::{json, Value};

/// An application instance, a child process on a port-0 listener.
struct App {
    child: Child,
    port: u16,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Framework {
    Flask,
    Express,
}

impl App {
    /// Starts one instance and waits for its `listening on <port>` line.
    fn start(framework: Framework) -> App {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut command = match framework {
            Framework::Flask => {
                let mut c = Command::new("python3");
                c.arg(format!("{root}/examples/gateway/flask/app.py"));
                c
            }
            Framework::Express => {
                let mut c = Command::new("node");
                c.arg(format!("{root}/examples/gateway/express/app.js"));
                // Debian's node-express lives here.
                c.env("NODE_PATH", "/usr/share/nodejs");
                c
            }
        };
        let mut child = command
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{framework:?} application does not start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok());
        match (read, port) {
            (Ok(_), Some(port)) => App { child, port },
            _ => {
                let _ = child.kill();
                panic!(
                    "the {framework:?} application did not start (is {} installed? .ci/run installs it); it said {line:?}",
                    match framework {
                        Framework::Flask => "python3-flask",
                        Framework::Express => "node-express",
                    }
                );
            }
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Three nodes, each in front of its own application instance.
struct Gateways {
    nodes: Vec<Option<ChildNode>>,
    _apps: Vec<App>,
    http: reqwest::Client,
}

impl Gateways {
    async fn start(framework: Framework, extra: &[&str]) -> Gateways {
        let apps: Vec<App> = (0..3).map(|_| App::start(framework)).collect();
        let upstreams: Vec<String> = apps.iter().map(App::url).collect();
        Gateways::start_on(&upstreams, apps, extra).await
    }

    /// One node for each of `upstreams`.
    async fn start_on(upstreams: &[String], apps: Vec<App>, extra: &[&str]) -> Gateways {
        let secrets = Secrets::new();
        let mut nodes: Vec<Option<ChildNode>> = Vec::new();
        for (i, upstream) in upstreams.iter().enumerate() {
            let seeds: Vec<String> = nodes
                .iter()
                .flatten()
                .map(|n| n.gossip.to_string())
                .collect();
            let mut flags = vec!["--upstream", upstream.as_str()];
            flags.extend_from_slice(extra);
            let node = tokio::task::block_in_place(|| {
                ChildNode::spawn(&format!("node{}", i + 1), &secrets, &seeds, &flags)
            });
            nodes.push(Some(node));
        }
        let gateways = Gateways {
            nodes,
            _apps: apps,
            http: client(),
        };
        gateways.wait_ring(upstreams.len()).await;
        gateways
    }

    fn url(&self, i: usize, path: &str) -> String {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node{} is not running", i + 1))
            .url(path)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Waits until every live node's ring (at `/_sessionmesh/api/cluster`)
    /// has `n` members and they agree.
    async fn wait_ring(&self, n: usize) {
        wait_for(&format!("a ring of {n} on every node"), WAIT, || async {
            let mut prints = HashSet::new();
            for i in self.live() {
                let url = self.url(i, "/_sessionmesh/api/cluster");
                let view: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
                if view["ring"]["nodes"].as_array()?.len() != n {
                    return None;
                }
                prints.insert(view["ring"]["fingerprint"].as_str()?.to_owned());
            }
            (prints.len() == 1).then_some(())
        })
        .await
    }

    async fn get(&self, i: usize, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(i, path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("the node answers")
    }

    /// `GET /` on node `i` with `cookie`: the greeting.
    async fn greeting(&self, i: usize, cookie: Option<&str>) -> String {
        let response = self.get(i, "/", cookie).await;
        assert_eq!(response.status(), 200, "GET / on node{}", i + 1);
        response.text().await.unwrap()
    }
}

/// The `X-Sessionmesh-*` request headers the application saw, lower case, sorted.
fn seen_headers(whoami: &Value) -> Vec<String> {
    let mut seen: Vec<String> = whoami["seen"]
        .as_array()
        .expect("a list of headers")
        .iter()
        .map(|h| h.as_str().unwrap().to_ascii_lowercase())
        .collect();
    seen.sort();
    seen
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(value.to_string())
}

/// The story of the issue, with one framework: login on node1, greeted by
/// name on node2 and node3, forged session headers ignored, a server error's
/// session change not applied, kill -9 of the session's owner and the session
/// continues, logout everywhere.
async fn login_greet_forge_kill_logout(framework: Framework) {
    let mut cluster = Gateways::start(framework, &[]).await;

    // A guest: no session, no cookie set.
    let guest = cluster.get(1, "/", None).await;
    assert_eq!(guest.status(), 200);
    assert!(set_cookie(&guest, "SESSION").is_none());
    assert!(guest.text().await.unwrap().starts_with("Hello, Guest"));

    // 1. Login on node1.
    let login = cluster.get(0, "/login?name=Ada%20Lovelace", None).await;
    assert_eq!(login.status(), 200);
    let cookie = set_cookie(&login, "SESSION").expect("login sets the session cookie");
    if let Framework::Flask = framework {
        // The application's own cookie comes through beside the session's.
        let own = set_cookie(&login, "last_login").expect("the application's cookie");
        assert_eq!(own, format!("last_login={}", hex("Ada Lovelace")));
    }
    assert!(!login
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("x-sessionmesh-")));
    assert!(login.text().await.unwrap().contains("Login successful."));

    // 2. Greeted by name on node2 and node3 (entering there), the session
    // served by its owner.
    let mut owners = HashSet::new();
    for i in [1, 2, 0] {
        let response = cluster.get(i, "/", Some(&cookie)).await;
        assert_eq!(response.status(), 200);
        owners.insert(header(&response, "x-served-by").unwrap());
        let text = response.text().await.unwrap();
        assert!(
            text.starts_with("Hello, Ada Lovelace"),
            "node{}: {text}",
            i + 1
        );
        assert!(
            text.contains(&format!("entered at node{}", i + 1)),
            "{text}"
        );
    }
    assert_eq!(owners.len(), 1, "one owner serves the session: {owners:?}");
    let owner = owners.into_iter().next().unwrap();

    // The application sees the forwarding headers, its own cookies, and only
    // the session headers the node set.
    let whoami: Value = cluster
        .get(1, "/whoami", Some(&format!("{cookie}; theme=dark")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["session"], json!({"name": "Ada Lovelace"}));
    assert_eq!(whoami["entry_node"], "node2");
    assert_eq!(whoami["forwarded_for"], "127.0.0.1");
    let cookies = whoami["cookie_header"].as_str().unwrap();
    assert!(
        cookies.contains("theme=dark") && cookies.contains(&cookie),
        "{cookies}"
    );

    // 3. Forged session headers never reach the application: a guest stays a
    // guest, and a session keeps its own data.
    for i in 0..3 {
        let forged = cluster
            .http
            .get(cluster.url(i, "/whoami"))
            .header("x-sessionmesh-id", whoami["id"].as_str().unwrap())
            .header("X-Sessionmesh-Data", b64(&json!({"name": "Mallory"})))
            .header("x-sessionmesh-version", "99")
            .header("x-sessionmesh-entry-node", "evil")
            .send()
            .await
            .unwrap();
        let seen: Value = forged.json().await.unwrap();
        assert_eq!(seen["id"], Value::Null, "node{}: {seen}", i + 1);
        assert_eq!(seen["session"], json!({}), "node{}: {seen}", i + 1);
        assert_eq!(seen["entry_node"], format!("node{}", i + 1));
        assert_eq!(
            seen_headers(&seen),
            ["x-sessionmesh-data", "x-sessionmesh-entry-node"]
        );
    }
    let forged = cluster
        .http
        .get(cluster.url(2, "/"))
        .header("cookie", &cookie)
        .header("x-sessionmesh-data", b64(&json!({"name": "Mallory"})))
        .send()
        .await
        .unwrap();
    assert!(forged
        .text()
        .await
        .unwrap()
        .starts_with("Hello, Ada Lovelace"));

    // A server error that asks for a session change changes nothing.
    let broken = cluster.get(2, "/broken", Some(&cookie)).await;
    assert_eq!(broken.status(), 500);
    assert!(set_cookie(&broken, "SESSION").is_none());
    assert!(cluster
        .greeting(0, Some(&cookie))
        .await
        .starts_with("Hello, Ada Lovelace"));

    // 4. kill -9 of the session's owner: the session continues on the others.
    let owner_index: usize = owner
        .strip_prefix("node")
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a node name")
        - 1;
    let mut killed = cluster.nodes[owner_index].take().unwrap();
    killed.signal("KILL");
    killed.wait_exit(WAIT).await;
    // At once, before the others noticed: a form post (a small body, sent
    // again to the entry node's application when the owner is unreachable)
    // writes the session on each surviving node in turn. Until the replica
    // may take over writes, the answer is a 503 with Retry-After (a client
    // retries it), never a lost or foreign session.
    for (n, i) in cluster.live().into_iter().enumerate() {
        let visits = wait_for(&format!("a visit through node{}", i + 1), WAIT, || async {
            let response = cluster
                .http
                .post(cluster.url(i, "/visits"))
                .header("cookie", &cookie)
                .form(&[("from", "the test")])
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => Some(response.json::<Value>().await.unwrap()["visits"].clone()),
                503 => {
                    assert!(response.headers().contains_key("retry-after"));
                    let body: Value = response.json().await.unwrap();
                    assert_ne!(body["error"], "owner_unavailable", "{body}");
                    None
                }
                other => panic!("node{}: {other}", i + 1),
            }
        })
        .await;
        assert_eq!(visits, n + 1, "node{}", i + 1);
    }
    for i in cluster.live() {
        // Until the others notice the crash, a request may get a 503 with
        // Retry-After (a client retries it); a 200 is always the session.
        let text = wait_for(
            &format!("node{} to serve the session", i + 1),
            WAIT,
            || async {
                let response = cluster.get(i, "/", Some(&cookie)).await;
                match response.status().as_u16() {
                    200 => Some(response.text().await.unwrap()),
                    503 | 502 => None,
                    other => panic!("node{}: {other}", i + 1),
                }
            },
        )
        .await;
        assert!(
            text.starts_with("Hello, Ada Lovelace"),
            "node{}: {text}",
            i + 1
        );
    }

    // 5. Logout on one node: a guest everywhere.
    let first = cluster.live()[0];
    let logout = cluster
        .http
        .post(cluster.url(first, "/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    assert_eq!(set_cookie(&logout, "SESSION").as_deref(), Some("SESSION="));
    for i in cluster.live() {
        let text = cluster.greeting(i, Some(&cookie)).await;
        assert!(text.starts_with("Hello, Guest"), "node{}: {text}", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_login_greet_forge_kill_logout() {
    login_greet_forge_kill_logout(Framework::Flask).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn express_login_greet_forge_kill_logout() {
    login_greet_forge_kill_logout(Framework::Express).await;
}

/// sessionmesh's own routes move under `/_sessionmesh/`; every other path,
/// `/healthz` included, is the application's.
#[tokio::test(flavor = "multi_thread")]
async fn own_routes_live_under_the_prefix() {
    let cluster = Gateways::start(Framework::Flask, &[]).await;
    let health = cluster.get(0, "/_sessionmesh/healthz", None).await;
    assert_eq!(health.status(), 200);
    let app_404 = cluster.get(0, "/healthz", None).await;
    assert_eq!(app_404.status(), 404);
    assert!(header(&app_404, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let unknown = cluster.get(0, "/_sessionmesh/nothing-here", None).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "no_route");

    // HEAD answers the head of GET.
    let head = cluster.http.head(cluster.url(1, "/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let length: usize = header(&head, "content-length").unwrap().parse().unwrap();
    assert_eq!(length, "Hello, Guest (entered at node2)\n".len());

    // An invalid session header is a 502, and changes nothing.
    let garbled = cluster.get(0, "/garbled", None).await;
    assert_eq!(garbled.status(), 502);
    assert!(set_cookie(&garbled, "SESSION").is_none());
    let body: Value = garbled.json().await.unwrap();
    assert_eq!(body["error"], "bad_session_header");

    // The session API reads the session the application wrote.
    let login = cluster.get(2, "/login?name=Grace", None).await;
    let cookie = set_cookie(&login, "SESSION").unwrap();
    let doc: Value = cluster
        .get(1, "/_sessionmesh/api/session", Some(&cookie))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["data"], json!({"name": "Grace"}));
}

/// The image's health check (`sessionmesh healthcheck --ready`) probes under
/// the prefix when the container is in gateway mode (`SESSIONMESH_UPSTREAM`).
#[tokio::test(flavor = "multi_thread")]
async fn the_healthcheck_follows_the_prefix() {
    let cluster = Gateways::start(Framework::Flask, &[]).await;
    let node = cluster.url(0, "");
    let probe = |env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessionmesh"));
        command.args(["healthcheck", "--ready", "--node", &node]);
        command.env_remove("SESSIONMESH_UPSTREAM");
        if let Some(upstream) = env {
            command.env("SESSIONMESH_UPSTREAM", upstream);
        }
        command.output().unwrap()
    };
    let gateway = probe(Some("http://127.0.0.1:5000"));
    assert!(gateway.status.success(), "{gateway:?}");
    // Without it, /readyz is the application's (a 404 there).
    let plain = probe(None);
    assert!(!plain.status.success(), "{plain:?}");
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("404"),
        "{plain:?}"
    );
}

/// Merge patches from the application, a large upload streamed through two
/// hops, and a session over the header budget handed by URL.
#[tokio::test(flavor = "multi_thread")]
async fn patches_uploads_and_large_sessions() {
    let cluster = Gateways::start(Framework::Flask, &[]).await;
    let login = cluster.get(0, "/login?name=Ada", None).await;
    let cookie = set_cookie(&login, "SESSION").unwrap();
    for (n, i) in [0usize, 1, 2, 0].into_iter().enumerate() {
        let visits: Value = cluster
            .http
            .post(cluster.url(i, "/visits"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(visits["visits"], n + 1);
    }
    assert!(cluster
        .greeting(1, Some(&cookie))
        .await
        .starts_with("Hello, Ada"));

    // 8 MiB, on every node (so through a hop to the owner on two of them).
    let body = vec![b'x'; 8 * 1024 * 1024];
    for i in 0..3 {
        let answer: Value = cluster
            .http
            .post(cluster.url(i, "/upload"))
            .header("cookie", &cookie)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["bytes"], body.len(), "node{}", i + 1);
    }

    // A chunked answer of 4 MiB, streamed back through a hop.
    let download = cluster.get(1, "/download?kib=4096", Some(&cookie)).await;
    assert_eq!(download.status(), 200);
    assert!(header(&download, "content-length").is_none());
    assert_eq!(download.bytes().await.unwrap().len(), 4 * 1024 * 1024);
    // A chunked upload (no Content-Length): streamed, not buffered.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 16 * 1024])));
    let answer: Value = cluster
        .http
        .post(cluster.url(2, "/upload"))
        .header("cookie", &cookie)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["bytes"], 64 * 16 * 1024);

    // Over the budget: the application gets a URL of the session instead.
    let big = "é".repeat(6000);
    let doc: Value = cluster
        .http
        .put(cluster.url(0, "/_sessionmesh/api/session"))
        .header("cookie", &cookie)
        .json(&json!({"name": "Ada", "notes": big}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["data"]["notes"].as_str().unwrap().len(), big.len());
    let whoami: Value = cluster
        .get(2, "/whoami", Some(&cookie))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        seen_headers(&whoami).contains(&"x-sessionmesh-data-url".to_owned()),
        "{whoami}"
    );
    assert!(!seen_headers(&whoami).contains(&"x-sessionmesh-data".to_owned()));
    assert_eq!(
        whoami["session"],
        json!({}),
        "no data header: nothing truncated"
    );
}

/// Concurrent requests that read and write the same field never lose an
/// update: each succeeds with its own count, or gets 409 `session_conflict`
/// (nothing written), and the session ends at the number of successes.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_lose_no_update() {
    let cluster = Gateways::start(Framework::Flask, &[]).await;
    let login = cluster.get(0, "/login?name=Ada", None).await;
    let cookie = set_cookie(&login, "SESSION").unwrap();
    let requests = (0..30).map(|n| {
        let request = cluster
            .http
            .post(cluster.url(n % 3, "/visits"))
            .header("cookie", &cookie)
            .send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut counts = Vec::new();
    for (status, body) in &answers {
        match status {
            200 => counts.push(body["visits"].as_u64().unwrap()),
            409 => assert_eq!(body["error"], "session_conflict", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    counts.sort();
    let expected: Vec<u64> = (1..=counts.len() as u64).collect();
    assert_eq!(counts, expected, "each success wrote its own count");
    let whoami: Value = cluster
        .get(2, "/whoami", Some(&cookie))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["session"]["visits"], counts.len());
    assert_eq!(whoami["session"]["name"], "Ada");
}

/// An application that is down gets a JSON 502, a slow one a JSON 504; the
/// session does not change.
#[tokio::test(flavor = "multi_thread")]
async fn down_or_slow_upstream() {
    let secrets = Secrets::new();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let down = tokio::task::block_in_place(|| {
        ChildNode::spawn("down", &secrets, &[], &["--upstream", &closed])
    });
    let http = client();
    let answer = http.get(down.url("/login?name=x")).send().await.unwrap();
    assert_eq!(answer.status(), 502);
    assert!(set_cookie(&answer, "SESSION").is_none());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");

    let app = App::start(Framework::Flask);
    let upstream = app.url();
    let slow = tokio::task::block_in_place(|| {
        ChildNode::spawn(
            "slow",
            &secrets,
            &[],
            &["--upstream", &upstream, "--upstream-timeout", "500ms"],
        )
    });
    let login = http.get(slow.url("/login?name=Ada")).send().await.unwrap();
    let cookie = set_cookie(&login, "SESSION").unwrap();
    let answer = http
        .get(slow.url("/slow?seconds=3"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 504);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    let greeting = http
        .get(slow.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(greeting.text().await.unwrap().starts_with("Hello, Ada"));
}

/// A WebSocket application (tokio-tungstenite): its first message says which
/// instance it is and the session headers of the upgrade request, then it
/// echoes every message.
async fn websocket_app(name: &'static str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = serde_json::Map::new();
                // tungstenite's callback type, as its API has it.
                #[allow(clippy::result_large_err)]
                let capture = |request: &Request, response: Response| {
                    for (name, value) in request.headers() {
                        if name.as_str().starts_with("x-sessionmesh-") {
                            seen.insert(
                                name.as_str().to_owned(),
                                value.to_str().unwrap_or_default().into(),
                            );
                        }
                    }
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, capture).await else {
                    return;
                };
                let hello = json!({"app": name, "headers": seen}).to_string();
                if ws.send(hello.into()).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// WebSocket upgrades pass through to the application next to the session's
/// owner, with the session headers, from whichever node they enter.
#[tokio::test(flavor = "multi_thread")]
async fn websockets_reach_the_owners_application() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let mut upstreams = Vec::new();
    for name in ["app1", "app2", "app3"] {
        upstreams.push(websocket_app(name).await);
    }
    let cluster = Gateways::start_on(&upstreams, Vec::new(), &[]).await;
    // A session started on node1 (through the session API): node1 owns it.
    let started = cluster
        .http
        .patch(cluster.url(0, "/_sessionmesh/api/session"))
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&started, "SESSION").expect("a session cookie");
    let doc: Value = started.json().await.unwrap();
    assert_eq!(doc["owner"], "node1");

    for i in 0..3 {
        let node = cluster.nodes[i].as_ref().unwrap();
        let mut request = format!("ws://{}/chat", node.public)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        request.headers_mut().insert(
            "x-sessionmesh-data",
            b64(&json!({"name": "Mallory"})).parse().unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(node.public).await.unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .unwrap_or_else(|e| panic!("node{}: {e}", i + 1));
        assert_eq!(response.headers()["x-served-by"], "node1");
        let hello: Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(hello["app"], "app1", "the owner's application: {hello}");
        let headers = &hello["headers"];
        assert_eq!(
            headers["x-sessionmesh-entry-node"],
            format!("node{}", i + 1)
        );
        let data = base64::engine::general_purpose::URL_SAFE
            .decode(headers["x-sessionmesh-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&data).unwrap(),
            json!({"name": "Ada"})
        );

        for text in ["ping", "pong", "é 名前 🎉"] {
            ws.send(Message::text(text)).await.unwrap();
            let echo = ws.next().await.unwrap().unwrap();
            assert_eq!(echo.to_text().unwrap(), text);
        }
        let big: Vec<u8> = (0..256 * 1024).map(|n| (n % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_data().as_ref(), big.as_slice());
        ws.close(None).await.unwrap();
    }
}
