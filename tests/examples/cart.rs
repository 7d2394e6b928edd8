//! The cart example (`examples/cart.rs`) on three nodes, used through all of
//! them as a round-robin load balancer would: the session and the cart follow
//! the shopper from node to node, login moves the session to a new id, bad
//! input changes nothing, concurrent adds lose nothing, and the cart outlives
//! the node that owned it (kill -9) or left (SIGTERM).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{wait_for, WAIT};
use crate::harness::{Answer, Browser, ExampleCluster};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Prices of the example's catalogue, in cents.
const TEA: u64 = 650;
const MUG: u64 = 1200;
const BISCUITS: u64 = 395;

/// The cart lines of an answer.
trait CartLines {
    /// The answer's cart lines as `(sku, quantity)`.
    fn lines(&self) -> Vec<(String, u64)>;
}

impl CartLines for Answer {
    fn lines(&self) -> Vec<(String, u64)> {
        self.body["lines"]
            .as_array()
            .unwrap_or_else(|| panic!("no lines in {}", self.body))
            .iter()
            .map(|line| {
                let sku = line["sku"].as_str().unwrap_or_default().to_owned();
                (sku, line["quantity"].as_u64().unwrap_or_default())
            })
            .collect()
    }
}

fn lines(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut lines: Vec<(String, u64)> = expected.iter().map(|(s, q)| (s.to_string(), *q)).collect();
    lines.sort();
    lines
}

/// A shopper's browser: keeps the `SESSION` cookie the nodes set (and drop).
struct Shopper(Browser);

impl std::ops::Deref for Shopper {
    type Target = Browser;

    fn deref(&self) -> &Browser {
        &self.0
    }
}

impl Shopper {
    fn new(cluster: &ExampleCluster) -> Shopper {
        Shopper::with_cookie(cluster, None)
    }

    fn with_cookie(cluster: &ExampleCluster, cookie: Option<String>) -> Shopper {
        Shopper(Browser::with_cookie(cluster, "SESSION", cookie))
    }

    async fn add(&self, node: &str, sku: &str, quantity: u64) -> Answer {
        let item = json!({ "sku": sku, "quantity": quantity });
        self.post(node, "/cart/items", item).await
    }

    async fn login(&self, node: &str, user: &str, password: &str) -> Answer {
        let credentials = json!({ "user": user, "password": password });
        self.post(node, "/login", credentials).await
    }

    /// Sends until the answer is not a retryable refusal (409 `session_conflict`,
    /// or 503 while a dead node's replica takes over), at most `WAIT`; the
    /// next try goes to the next node of `nodes`. Returns the answer and the
    /// number of tries.
    async fn until_acknowledged(
        &self,
        nodes: &[&str],
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (Answer, usize) {
        let deadline = Instant::now() + WAIT;
        for tries in 1.. {
            let node = nodes[(tries - 1) % nodes.len()];
            let answer = self.call(node, method.clone(), path, body.clone()).await;
            let retry = answer.status == StatusCode::CONFLICT
                || answer.status == StatusCode::SERVICE_UNAVAILABLE;
            if !retry {
                return (answer, tries);
            }
            assert!(
                Instant::now() < deadline,
                "{method} {path}: still refused after {tries} tries: {answer:?}"
            );
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                // Paces the retries while the cluster notices the dead node.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        unreachable!("the loop returns or panics")
    }
}

/// The session id in a `SESSION=<id>.<signature>` cookie.
fn session_id(cookie: &str) -> &str {
    let value = cookie.split_once('=').map_or(cookie, |(_, v)| v);
    value.split_once('.').map_or(value, |(id, _)| id)
}

/// A shopper fills a cart as a guest, logs in, shops through every node, checks
/// out and logs out; every node sees the same session at every step:
/// 1. a guest looking around gets no session; their first add starts one;
/// 2. bad input (unknown product, bad quantity, broken JSON, wrong password)
///    answers a JSON error and changes nothing;
/// 3. login moves the session to a new id with the cart; the old cookie is a
///    guest on every node;
/// 4. adds through node2, node3 and node1 make one cart, the same on every node;
/// 5. remove, checkout (the order has the lines, the cart is then empty);
/// 6. page views count across nodes;
/// 7. logout: the session is gone on every node, for the new and old cookie.
#[tokio::test(flavor = "multi_thread")]
async fn a_shoppers_cart_follows_them_across_nodes() {
    let cluster = ExampleCluster::start("cart", 3, &[]).await;
    let shopper = Shopper::new(&cluster);

    // 1. Looking around starts no session.
    let home = shopper.get("node1", "/").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.body["user"], Value::Null);
    assert_eq!(home.served_by.as_deref(), Some("node1"));
    assert_eq!(
        shopper.cookie(),
        None,
        "a guest who only looks gets no cookie"
    );
    let catalogue = shopper.get("node2", "/products").await;
    assert_eq!(catalogue.body.as_array().map(Vec::len), Some(4));

    let added = shopper.add("node2", "tea", 2).await;
    assert_eq!(added.status, 200, "{:?}", added);
    assert_eq!(added.lines(), lines(&[("tea", 2)]));
    assert_eq!(added.body["total_cents"], 2 * TEA);
    let guest_cookie = shopper
        .cookie()
        .expect("the first add sets the session cookie");

    // 2. Bad input: a JSON error, nothing changed.
    let unknown = shopper.add("node3", "caviar", 1).await;
    assert_eq!(
        (unknown.status, unknown.error()),
        (StatusCode::NOT_FOUND, "unknown_product")
    );
    for quantity in [0, 98, 1_000_000, u64::from(u32::MAX) + 1] {
        let refused = shopper.add("node1", "tea", quantity).await;
        assert_eq!(refused.status, 400, "quantity {quantity}: {refused:?}");
        assert!(
            ["bad_quantity", "bad_request"].contains(&refused.error()),
            "{refused:?}"
        );
    }
    let broken = cluster
        .http
        .post(cluster.url("node2", "/cart/items"))
        .header(reqwest::header::COOKIE, &guest_cookie)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"sku\": \"tea\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    let broken: Value = broken.json().await.expect("a JSON error");
    assert_eq!(broken["error"], "bad_request");
    let wrong = shopper.login("node1", "ada", "babbage").await;
    assert_eq!(
        (wrong.status, wrong.error()),
        (StatusCode::UNAUTHORIZED, "bad_credentials")
    );
    let no_order = shopper.post("node3", "/checkout", json!({})).await;
    assert_eq!(
        (no_order.status, no_order.error()),
        (StatusCode::UNAUTHORIZED, "not_logged_in")
    );
    assert_eq!(shopper.cookie().as_deref(), Some(guest_cookie.as_str()));
    for node in NODES {
        let cart = shopper.get(node, "/cart").await;
        assert_eq!(cart.status, 200);
        assert_eq!(cart.body["user"], Value::Null, "{node}");
        assert_eq!(cart.lines(), lines(&[("tea", 2)]), "{node}");
    }

    // 3. Login: a new session id, the cart comes along, the old id is a guest.
    let login = shopper.login("node1", "ada", "lovelace").await;
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(login.body["user"], "ada");
    let cookie = shopper.cookie().expect("login sets the session cookie");
    assert_ne!(
        session_id(&cookie),
        session_id(&guest_cookie),
        "login renews the id"
    );
    let old = Shopper::with_cookie(&cluster, Some(guest_cookie.clone()));
    for node in NODES {
        let cart = old.get(node, "/cart").await;
        assert_eq!(cart.body["user"], Value::Null, "the old cookie on {node}");
        assert_eq!(cart.lines(), lines(&[]), "the old cookie on {node}");
        let cart = shopper.get(node, "/cart").await;
        assert_eq!(cart.body["user"], "ada", "{node}");
        assert_eq!(cart.lines(), lines(&[("tea", 2)]), "{node}");
    }

    // 4. Shopping round robin: one cart, the same everywhere.
    for (node, sku) in [("node2", "mug"), ("node3", "biscuits"), ("node1", "tea")] {
        let added = shopper.add(node, sku, 1).await;
        assert_eq!(added.status, 200, "{sku} through {node}: {added:?}");
        assert_eq!(added.served_by.as_deref(), Some(node));
    }
    let expected = lines(&[("tea", 3), ("mug", 1), ("biscuits", 1)]);
    let mut holders = Vec::new();
    for node in NODES {
        let cart = shopper.get(node, "/cart").await;
        assert_eq!(cart.lines(), expected, "the cart through {node}");
        assert_eq!(cart.body["total_cents"], 3 * TEA + MUG + BISCUITS);
        assert_eq!(cart.body["node"], node);
        holders.push(cart.body["session_node"].clone());
    }
    assert!(
        holders.iter().all(|h| *h == holders[0]),
        "every node reads the session from its one owner: {holders:?}"
    );
    let owner = cluster.owner("node2", &cookie).await;
    assert_eq!(holders[0], owner.as_str());

    // 5. Remove a line, check out.
    let removed = shopper
        .call("node2", Method::DELETE, "/cart/items/biscuits", None)
        .await;
    assert_eq!(removed.lines(), lines(&[("tea", 3), ("mug", 1)]));
    assert_eq!(shopper.get("node3", "/cart").await.lines(), removed.lines());
    let order = shopper.post("node3", "/checkout", json!({})).await;
    assert_eq!(order.status, 201, "{order:?}");
    assert_eq!(order.lines(), lines(&[("tea", 3), ("mug", 1)]));
    assert_eq!(order.body["total_cents"], 3 * TEA + MUG);
    assert_eq!(order.body["user"], "ada");
    for node in NODES {
        let cart = shopper.get(node, "/cart").await;
        assert_eq!(cart.lines(), lines(&[]), "after checkout, through {node}");
        assert_eq!(cart.body["user"], "ada", "still logged in, through {node}");
    }
    let again = shopper.post("node1", "/checkout", json!({})).await;
    assert_eq!(
        (again.status, again.error()),
        (StatusCode::BAD_REQUEST, "empty_cart")
    );

    // 6. Page views count on the session, whichever node serves the page.
    for (i, node) in NODES.iter().enumerate() {
        let home = shopper.get(node, "/").await;
        assert_eq!(home.body["user"], "ada");
        assert_eq!(
            home.body["views"],
            i as u64 + 1,
            "view {} through {node}",
            i + 1
        );
    }

    // 7. Logout: the cookie is dropped and the session is gone everywhere.
    let logout = shopper.post("node2", "/logout", json!({})).await;
    assert_eq!(logout.status, 200);
    assert_eq!(shopper.cookie(), None, "logout expires the cookie");
    let kept = Shopper::with_cookie(&cluster, Some(cookie.clone()));
    for node in NODES {
        let home = kept.get(node, "/").await;
        assert_eq!(
            home.body["user"],
            Value::Null,
            "the logged-out cookie on {node}"
        );
        assert_eq!(home.body["views"], 0);
        let cart = old.get(node, "/cart").await;
        assert_eq!(
            cart.body["user"],
            Value::Null,
            "the pre-login cookie on {node}"
        );
    }
}

/// Ten clients (a shopper's tabs) add to one cart at once, through the three
/// nodes in turn. Two adds that read the same cart conflict: one is answered
/// 409 and retried by its client. At the end the cart holds exactly the
/// acknowledged adds: none lost, none counted twice.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_adds_to_one_cart_lose_nothing() {
    const CLIENTS: usize = 10;
    const ADDS: usize = 3;
    let cluster = ExampleCluster::start("cart", 3, &[]).await;
    let shopper = Shopper::new(&cluster);
    assert_eq!(shopper.login("node1", "grace", "hopper").await.status, 200);
    let cookie = shopper.cookie().expect("login sets the cookie");

    let skus = ["tea", "mug", "biscuits"];
    let clients = (0..CLIENTS).map(|client| {
        let tab = Shopper::with_cookie(&cluster, Some(cookie.clone()));
        async move {
            let mut acknowledged = Vec::new();
            let mut conflicts = 0;
            for add in 0..ADDS {
                let sku = skus[(client + add) % skus.len()];
                // Each client starts on another node and moves on at each try.
                let start = (client + add) % NODES.len();
                let nodes: Vec<&str> = (0..NODES.len())
                    .map(|i| NODES[(start + i) % NODES.len()])
                    .collect();
                let item = json!({ "sku": sku, "quantity": 1 });
                let (answer, tries) = tab
                    .until_acknowledged(&nodes, Method::POST, "/cart/items", Some(item))
                    .await;
                assert_eq!(answer.status, 200, "client {client}: {answer:?}");
                let has = |line: &(String, u64)| line.0 == sku && line.1 >= 1;
                assert!(answer.lines().iter().any(has), "the answer shows the add");
                acknowledged.push(sku);
                conflicts += tries - 1;
            }
            (acknowledged, conflicts)
        }
    });
    let results = futures_util::future::join_all(clients).await;

    let mut expected = std::collections::BTreeMap::<&str, u64>::new();
    for sku in results.iter().flat_map(|(acked, _)| acked) {
        *expected.entry(sku).or_default() += 1;
    }
    let conflicts: usize = results.iter().map(|(_, c)| c).sum();
    eprintln!(
        "{} adds acknowledged after {conflicts} conflicts",
        CLIENTS * ADDS
    );
    let expected: Vec<(&str, u64)> = expected.into_iter().collect();
    for node in NODES {
        let cart = shopper.get(node, "/cart").await;
        if cart.lines() != lines(&expected) {
            // What replication saw, for the diagnosis (stale_writes: a write
            // re-applied after a replica answered with a newer copy).
            let mut stats = String::new();
            for node in NODES {
                let url = cluster.url(node, "/api/cluster");
                let view: Value = cluster
                    .http
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                stats.push_str(&format!("\n{node}: {}", view["replication"]));
            }
            panic!(
                "the cart through {node} is {:?}, the acknowledged adds {expected:?}; replication:{stats}",
                cart.lines()
            );
        }
    }
}

/// kill -9 of the node that owns a shopper's session: the session and the
/// cart continue through the other nodes (a replica takes over), and the
/// shopper can keep shopping and check out.
#[tokio::test(flavor = "multi_thread")]
async fn the_cart_outlives_its_owner_killed() {
    let mut cluster = ExampleCluster::start("cart", 3, &[]).await;
    let shopper = Shopper::new(&cluster);
    assert_eq!(shopper.login("node1", "alan", "turing").await.status, 200);
    assert_eq!(shopper.add("node2", "tea", 1).await.status, 200);
    assert_eq!(shopper.add("node3", "mug", 2).await.status, 200);
    let cookie = shopper.cookie().expect("a session");
    let owner = cluster.owner("node3", &cookie).await;
    let cart = shopper.get("node2", "/cart").await;
    assert_eq!(cart.body["session_node"], owner.as_str());

    cluster.kill(&owner).await;
    let survivors = cluster.node_ids();
    let survivors: Vec<&str> = survivors.iter().map(String::as_str).collect();
    for node in &survivors {
        let cart = wait_for(
            &format!("the cart through {node} after {owner} was killed"),
            WAIT,
            || async {
                let cart = shopper.get(node, "/cart").await;
                (cart.status == 200).then_some(cart)
            },
        )
        .await;
        assert_eq!(cart.body["user"], "alan", "through {node}");
        assert_eq!(
            cart.lines(),
            lines(&[("tea", 1), ("mug", 2)]),
            "through {node}"
        );
        assert_ne!(cart.body["session_node"], owner.as_str());
    }

    let item = json!({ "sku": "biscuits", "quantity": 3 });
    let (added, _) = shopper
        .until_acknowledged(&survivors, Method::POST, "/cart/items", Some(item))
        .await;
    assert_eq!(added.status, 200, "{added:?}");
    let expected = lines(&[("tea", 1), ("mug", 2), ("biscuits", 3)]);
    for node in &survivors {
        assert_eq!(shopper.get(node, "/cart").await.lines(), expected, "{node}");
    }
    let (order, _) = shopper
        .until_acknowledged(&survivors, Method::POST, "/checkout", Some(json!({})))
        .await;
    assert_eq!(order.status, 201, "{order:?}");
    assert_eq!(order.body["total_cents"], TEA + 2 * MUG + 3 * BISCUITS);
    assert_eq!(shopper.cookie().as_deref(), Some(cookie.as_str()));
}

/// SIGTERM of the node that owns a session, with one copy of each session
/// (replication factor 1: no replica to take over): the node hands the
/// session to another before it exits (status 0), and the cart continues.
#[tokio::test(flavor = "multi_thread")]
async fn the_cart_moves_when_its_owner_leaves() {
    let mut cluster = ExampleCluster::start("cart", 3, &["--replication-factor", "1"]).await;
    let shopper = Shopper::new(&cluster);
    assert_eq!(shopper.add("node2", "teapot", 1).await.status, 200);
    assert_eq!(shopper.login("node3", "ada", "lovelace").await.status, 200);
    let cookie = shopper.cookie().expect("a session");
    let owner = cluster.owner("node1", &cookie).await;

    cluster.leave(&owner).await;
    let survivors = cluster.node_ids();
    for node in &survivors {
        let cart = shopper.get(node, "/cart").await;
        assert_eq!(cart.status, 200, "through {node}: {cart:?}");
        assert_eq!(cart.body["user"], "ada", "through {node}");
        assert_eq!(cart.lines(), lines(&[("teapot", 1)]), "through {node}");
    }
}
