//! The scenarios of the examples that put a session crate on the cluster
//! (`actix_session_from_redis`, `axum_tower_sessions`): the same application
//! (`GET /`, `POST /login`, `POST /count`, `POST /logout`, a cookie `id`) on
//! another framework and store. Each example's module runs them all
//! (`counter_app_tests!("<example>")`).

use serde_json::{json, Value};

use crate::common::{wait_for, WAIT};
use crate::harness::{Answer, Browser, ExampleCluster};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// The session cookie of both applications (the crates' default name).
const COOKIE: &str = "id";

async fn login(browser: &Browser, node: &str, user: &str, password: &str) -> Answer {
    let credentials = json!({ "user": user, "password": password });
    browser.post(node, "/login", credentials).await
}

async fn count(browser: &Browser, node: &str) -> Answer {
    browser.post(node, "/count", json!({})).await
}

/// A visitor counts, logs in through node1, counts through every node in turn
/// and logs out through node2; every node sees the same session at every
/// step:
/// 1. a guest looking gets no cookie; the first count starts the session;
/// 2. a wrong password is a 401 and changes nothing;
/// 3. login moves the session to a new id and keeps the counter; the old
///    cookie names no session on any node;
/// 4. the session (user, counter) is the same on node1, node2 and node3;
/// 5. counts through node2, node3, node1, ... add up exactly, each answer
///    one more than the last;
/// 6. logout expires the cookie, and the session is gone on every node.
pub async fn a_session_follows_its_visitor_across_nodes(example: &str) {
    let cluster = ExampleCluster::start(example, 3, &[]).await;
    let visitor = Browser::new(&cluster, COOKIE);

    // 1. Looking starts no session; the first count does.
    let home = visitor.get("node1", "/").await;
    assert_eq!(home.status, 200, "{home:?}");
    assert_eq!(
        (&home.body["user"], &home.body["count"]),
        (&Value::Null, &json!(0))
    );
    assert_eq!(home.served_by.as_deref(), Some("node1"));
    assert_eq!(
        visitor.cookie(),
        None,
        "a guest who only looks gets no cookie"
    );
    let first = count(&visitor, "node1").await;
    assert_eq!(
        (first.status.as_u16(), &first.body["count"]),
        (200, &json!(1))
    );
    let guest_cookie = visitor.cookie().expect("the first count sets the cookie");

    // 2. A wrong password changes nothing.
    let wrong = login(&visitor, "node1", "ada", "babbage").await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(visitor.cookie().as_deref(), Some(guest_cookie.as_str()));

    // 3. Login through node1: a new id, the counter kept, the old id gone.
    let welcome = login(&visitor, "node1", "ada", "lovelace").await;
    assert_eq!(welcome.status, 200, "{welcome:?}");
    assert_eq!(welcome.body["user"], "ada");
    let cookie = visitor.cookie().expect("login sets the cookie");
    // (actix-session's cookie is encrypted: what shows that the id changed
    // is that the old cookie names no session any more, below.)
    assert_ne!(cookie, guest_cookie, "login sets a new cookie");
    let old = Browser::with_cookie(&cluster, COOKIE, Some(guest_cookie));

    // 4. The same session on every node.
    for node in NODES {
        let home = visitor.get(node, "/").await;
        assert_eq!(home.status, 200, "through {node}: {home:?}");
        assert_eq!(home.body["user"], "ada", "through {node}");
        assert_eq!(home.body["count"], 1, "through {node}");
        assert_eq!(home.body["node"], node);
        assert_eq!(home.served_by.as_deref(), Some(node));
        let stale = old.get(node, "/").await;
        assert_eq!(
            (&stale.body["user"], &stale.body["count"]),
            (&Value::Null, &json!(0)),
            "the pre-login cookie through {node}"
        );
    }

    // 5. Counts round robin add up exactly.
    for i in 2..=10u64 {
        let node = NODES[(i as usize) % NODES.len()];
        let counted = count(&visitor, node).await;
        assert_eq!(counted.status, 200, "count {i} through {node}: {counted:?}");
        assert_eq!(counted.body["count"], i, "count {i} through {node}");
        assert_eq!(counted.served_by.as_deref(), Some(node));
    }
    for node in NODES {
        let home = visitor.get(node, "/").await;
        assert_eq!(
            (&home.body["user"], &home.body["count"]),
            (&json!("ada"), &json!(10)),
            "after 10 counts, through {node}"
        );
    }

    // 6. Logout: the cookie expired, the session gone everywhere.
    let last = visitor.cookie().expect("the session's cookie");
    let bye = visitor.post("node2", "/logout", json!({})).await;
    assert_eq!(bye.status, 200, "{bye:?}");
    assert_eq!(visitor.cookie(), None, "logout expires the cookie");
    // (actix-session encrypts its cookie anew at each change: the last one
    // is the cookie of the session now.)
    let kept = Browser::with_cookie(&cluster, COOKIE, Some(last));
    for node in NODES {
        let home = kept.get(node, "/").await;
        assert_eq!(
            (&home.body["user"], &home.body["count"]),
            (&Value::Null, &json!(0)),
            "the logged-out cookie through {node}"
        );
    }
}

/// kill -9 of the node that owns a visitor's session (the cluster's only
/// one; `/api/cluster` says which node owns it): once the cluster has
/// noticed, the session is on each survivor with its user and counter, and
/// counting goes on from there.
pub async fn the_session_outlives_its_owner_killed(example: &str) {
    let mut cluster = ExampleCluster::start(example, 3, &[]).await;
    let visitor = Browser::new(&cluster, COOKIE);
    assert_eq!(
        login(&visitor, "node1", "grace", "hopper").await.status,
        200
    );
    for node in NODES {
        assert_eq!(
            count(&visitor, node).await.status,
            200,
            "count through {node}"
        );
    }
    // The only session of the cluster: its owner is the node that counts one.
    let owner = cluster.owner_of_only_session().await;

    cluster.kill(&owner).await;
    let survivors = cluster.node_ids();
    for node in &survivors {
        let home = wait_for(
            &format!("the session through {node} after {owner} was killed"),
            WAIT,
            || async {
                let home = visitor.get(node, "/").await;
                (home.status == 200).then_some(home)
            },
        )
        .await;
        assert_eq!(home.body["user"], "grace", "through {node}");
        assert_eq!(home.body["count"], 3, "through {node}");
    }

    // Counting goes on through the survivors, from 3.
    for (i, node) in survivors.iter().enumerate() {
        let counted = count(&visitor, node).await;
        assert_eq!(counted.status, 200, "through {node}: {counted:?}");
        assert_eq!(counted.body["count"], 4 + i as u64, "through {node}");
    }
    for node in &survivors {
        let home = visitor.get(node, "/").await;
        assert_eq!(home.body["count"], 5, "through {node}");
    }
}

/// SIGTERM of the node that owns a visitor's session, with one copy of each
/// session (replication factor 1: no replica to take over): the node hands
/// the session to another, stops its servers and exits with status 0, and the
/// session goes on through the others.
pub async fn the_session_moves_when_its_owner_leaves(example: &str) {
    let mut cluster = ExampleCluster::start(example, 3, &["--replication-factor", "1"]).await;
    let visitor = Browser::new(&cluster, COOKIE);
    assert_eq!(login(&visitor, "node2", "alan", "turing").await.status, 200);
    assert_eq!(count(&visitor, "node3").await.status, 200);
    let owner = cluster.owner_of_only_session().await;

    cluster.leave(&owner).await;
    let survivors = cluster.node_ids();
    for node in &survivors {
        let home = visitor.get(node, "/").await;
        assert_eq!(home.status, 200, "through {node}: {home:?}");
        assert_eq!(
            (&home.body["user"], &home.body["count"]),
            (&json!("alan"), &json!(1)),
            "through {node}"
        );
    }
    let counted = count(&visitor, &survivors[0]).await;
    assert_eq!(
        (counted.status.as_u16(), &counted.body["count"]),
        (200, &json!(2))
    );
}

/// The tests of one counter app: `counter_app_tests!("<example>")` in its
/// module.
macro_rules! counter_app_tests {
    ($example:literal) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn a_session_follows_its_visitor_across_nodes() {
            $crate::counter_apps::a_session_follows_its_visitor_across_nodes($example).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn the_session_outlives_its_owner_killed() {
            $crate::counter_apps::the_session_outlives_its_owner_killed($example).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn the_session_moves_when_its_owner_leaves() {
            $crate::counter_apps::the_session_moves_when_its_owner_leaves($example).await;
        }
    };
}
pub(crate) use counter_app_tests;
