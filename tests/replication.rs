//! No session lost when nodes crash, join, leave or restart: real `sessionmesh`
//! processes, kill -9 and SIGTERM.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, ChildCluster, WAIT};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// Concurrent requests of the test's own clients.
const PARALLEL: usize = 16;

/// Creates `n` sessions through rotating entry nodes; returns id → data.
async fn create_sessions(cluster: &ChildCluster, n: usize) -> HashMap<String, Value> {
    create_sessions_with_owner(cluster, n)
        .await
        .into_iter()
        .map(|(id, (data, _))| (id, data))
        .collect()
}

/// Creates `n` sessions through rotating entry nodes; returns id → (data, owner).
async fn create_sessions_with_owner(
    cluster: &ChildCluster,
    n: usize,
) -> HashMap<String, (Value, String)> {
    let urls = cluster.urls();
    let http = cluster.http.clone();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let url = format!("{}/api/sessions", urls[i % urls.len()]);
            let http = http.clone();
            async move {
                let data = json!({"user": format!("user{i}"), "counter": 0});
                // A ring flap on a loaded machine may refuse it for a moment.
                let doc = until_accepted(&format!("create through {url}"), 201, None, || {
                    http.post(&url).json(&data)
                })
                .await;
                let owner = doc["owner"].as_str().unwrap().to_owned();
                (doc["id"].as_str().unwrap().to_owned(), (data, owner))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

/// Sends the request `send` builds until it is answered `expected`, and
/// returns that answer's JSON. A 503 with Retry-After is retried, as a client
/// would (and counted in `refused`); any other answer fails the test.
async fn until_accepted(
    what: &str,
    expected: u16,
    refused: Option<&AtomicU64>,
    send: impl Fn() -> reqwest::RequestBuilder,
) -> Value {
    wait_for(what, WAIT, || async {
        let r = send().send().await.ok()?;
        let status = r.status();
        if status.as_u16() == expected {
            return r.json().await.ok();
        }
        if status == 503 && r.headers().contains_key("retry-after") {
            if let Some(refused) = refused {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        panic!("{what}: {status} {:?}", r.text().await)
    })
    .await
}

/// Reads every session through every live node; returns the mismatches.
async fn check_all(cluster: &ChildCluster, expected: &HashMap<String, Value>) -> Vec<String> {
    let urls = cluster.urls();
    let http = cluster.http.clone();
    let jobs: Vec<(String, String, Value)> = expected
        .iter()
        .flat_map(|(id, data)| {
            urls.iter()
                .map(move |u| (u.clone(), id.clone(), data.clone()))
        })
        .collect();
    futures_util::stream::iter(jobs)
        .map(|(url, id, data)| {
            let http = http.clone();
            async move {
                let t = Instant::now();
                let r = match http.get(format!("{url}/api/sessions/{id}")).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Some(format!("{id} via {url}: {e:?} after {:?}", t.elapsed()))
                    }
                };
                if r.status() != 200 {
                    let by = common::header(&r, "x-served-by");
                    return Some(format!(
                        "{id} via {url}: status {} from {by:?} {:?}",
                        r.status(),
                        r.text().await
                    ));
                }
                let doc: Value = r.json().await.ok()?;
                (doc["data"] != data).then(|| format!("{id} via {url}: {} != {data}", doc["data"]))
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Waits until every session reads back with its data through every live node.
async fn wait_all_readable(
    cluster: &ChildCluster,
    expected: &HashMap<String, Value>,
    step: &str,
) -> Duration {
    let started = Instant::now();
    let mut last = Vec::new();
    let mut first_failures: Vec<String> = Vec::new();
    let mut first = true;
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = check_all(cluster, expected).await;
            if first {
                first_failures = last.clone();
                first = false;
            }
            if last.is_empty() {
                return;
            }
            // Paces the poll; the condition above decides.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{step}: sessions still unreadable after 60 s, e.g. {:?}",
        &last[..last.len().min(5)]
    );
    // A session that is missing or wrong is a failure at once; only the test
    // client's own transport hiccups may be retried.
    let wrong: Vec<&String> = first_failures
        .iter()
        .filter(|f| f.contains("status") || f.contains("!="))
        .collect();
    assert!(
        wrong.is_empty(),
        "{step}: {} sessions missing or wrong on the first read, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    started.elapsed()
}

/// Waits until no live node's ring holds `node_id`.
async fn wait_dropped(cluster: &ChildCluster, node_id: &str) -> Duration {
    let started = Instant::now();
    wait_for(
        &format!("{node_id} to leave every ring"),
        Duration::from_secs(30),
        || async {
            let views = cluster.views().await?;
            views
                .iter()
                .all(|v| {
                    !v["ring"]["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|n| n == node_id)
                })
                .then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// With replication factor 2: a few thousand sessions survive, in turn, a
/// kill -9, a join, a SIGTERM and a restart under an old id.
///
/// 1. start node1..node4; create 2000 sessions through rotating entry nodes;
/// 2. kill -9 node2: every session reads back through the three others at once
///    (replicas take over), node2 leaves the rings, then every session is on 2 nodes again;
/// 3. node5 joins: it takes its share; reads and full replication again;
/// 4. SIGTERM node3: it hands off and exits 0; reads and full replication again;
/// 5. node2 restarts under its old id: it regains its share; reads and full replication again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_crash_join_leave_and_restart() {
    let mut cluster = ChildCluster::start(4, &["--replication-factor", "2"]).await;
    let created = create_sessions_with_owner(&cluster, 2000).await;
    let expected: HashMap<String, Value> = created
        .iter()
        .map(|(id, (data, _))| (id.clone(), data.clone()))
        .collect();
    let total = expected.len() as u64;
    let t = cluster.wait_fully_replicated(total, 2).await;
    eprintln!("initial: fully replicated after {t:?}");

    // kill -9: the sessions node2 owned are served by their replicas at once.
    let of_node2: HashMap<String, Value> = created
        .iter()
        .filter(|(_, (_, owner))| owner == "node2")
        .map(|(id, (data, _))| (id.clone(), data.clone()))
        .collect();
    assert!(of_node2.len() > 200, "node2 owns a share");
    let killed_at = Instant::now();
    let mut victim = cluster.take("node2");
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(10)).await;
    let bad = check_all(&cluster, &of_node2).await;
    let takeover = killed_at.elapsed();
    assert!(
        bad.is_empty(),
        "node2's sessions right after the kill: {:?}",
        &bad[..bad.len().min(5)]
    );
    wait_dropped(&cluster, "node2").await;
    let detected = killed_at.elapsed();
    cluster.wait_ring(3).await;
    let replicated = cluster.wait_fully_replicated(total, 2).await;
    eprintln!(
        "kill -9 node2: its {} sessions read through the 3 others right away (checked {takeover:?} after the kill); \
         node2 dropped from every ring {detected:?} after the kill; 2 copies of everything again {:?} after the kill",
        of_node2.len(),
        killed_at.elapsed()
    );
    let _ = replicated;
    wait_all_readable(&cluster, &expected, "after node2 left the rings").await;

    // join
    let joined_at = Instant::now();
    cluster.spawn("node5");
    cluster.wait_ring(4).await;
    let ring_time = joined_at.elapsed();
    let replicated = cluster.wait_fully_replicated(total, 2).await;
    let readable = wait_all_readable(&cluster, &expected, "after node5 joined").await;
    let moved: u64 = cluster
        .views()
        .await
        .unwrap()
        .iter()
        .map(|v| v["handoff"]["moved"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "join node5: in every ring after {ring_time:?}; handoff of {moved} copies done {replicated:?} later; \
         all reads checked {readable:?} later"
    );
    let views = cluster.views().await.unwrap();
    let node5 = views.iter().find(|v| v["node_id"] == "node5").unwrap();
    assert!(
        node5["sessions"]["owned"].as_u64().unwrap() > total / 8,
        "node5 took a share: {}",
        node5["sessions"]
    );

    // SIGTERM
    let left_at = Instant::now();
    cluster.node("node3").signal("TERM");
    let mut leaving = cluster.take("node3");
    let status = leaving.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "node3 exit status {status:?}");
    let exit_time = left_at.elapsed();
    cluster.wait_ring(3).await;
    let replicated = cluster.wait_fully_replicated(total, 2).await;
    wait_all_readable(&cluster, &expected, "after node3 left").await;
    eprintln!("SIGTERM node3: exited after {exit_time:?}; 2 copies again {replicated:?} later");

    // restart under the old id
    let restarted_at = Instant::now();
    cluster.spawn("node2");
    let started = restarted_at.elapsed();
    cluster.wait_ring(4).await;
    eprintln!(
        "restart node2: ready after {started:?}, in every ring after {:?}",
        restarted_at.elapsed()
    );
    let replicated = cluster.wait_fully_replicated(total, 2).await;
    wait_all_readable(&cluster, &expected, "after node2 restarted").await;
    eprintln!(
        "restart node2: 2 copies of everything again {replicated:?} after it was in every ring"
    );
    let views = cluster.views().await.unwrap();
    let node2 = views.iter().find(|v| v["node_id"] == "node2").unwrap();
    assert!(
        node2["sessions"]["owned"].as_u64().unwrap() > total / 8,
        "node2 regained a share: {}",
        node2["sessions"]
    );
}

/// The same steps while a writer keeps updating sessions through the live
/// nodes: no acknowledged write is lost or reverted.
///
/// Each write sets `{"counter": k}` with k increasing per session; after each
/// step (once every session is on 2 nodes again), every session must read back
/// with a counter at least its last acknowledged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_while_nodes_come_and_go() {
    let mut cluster = ChildCluster::start(4, &["--replication-factor", "2"]).await;
    let ids: Vec<String> = create_sessions(&cluster, 600).await.into_keys().collect();
    let total = ids.len() as u64;
    let acked: Arc<Mutex<HashMap<String, u64>>> =
        Arc::new(Mutex::new(ids.iter().map(|id| (id.clone(), 0)).collect()));
    let urls = Arc::new(Mutex::new(cluster.urls()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Four writers, each over its own quarter of the sessions (so each knows
    // the order of its own writes).
    let writers: Vec<_> = ids
        .chunks(ids.len().div_ceil(4))
        .map(|mine| {
            let (acked, urls, stop, ok, failed) = (
                acked.clone(),
                urls.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            let ids = mine.to_vec();
            let http = cluster.http.clone();
            tokio::spawn(async move {
                let mut counters: HashMap<String, u64> = HashMap::new();
                let mut i = 0usize;
                // Bounded: at most 100k writes each, or until the test says stop.
                while !stop.load(Ordering::Relaxed) && i < 100_000 {
                    let id = &ids[i % ids.len()];
                    let url = {
                        let urls = urls.lock();
                        urls[i % urls.len()].clone()
                    };
                    i += 1;
                    let k = counters.entry(id.clone()).or_default();
                    *k += 1;
                    let result = http
                        .patch(format!("{url}/api/sessions/{id}"))
                        .json(&json!({"counter": *k}))
                        .send()
                        .await;
                    match result {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let mut acked = acked.lock();
                            let a = acked.entry(id.clone()).or_default();
                            *a = (*a).max(*k);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    async fn verify(cluster: &ChildCluster, acked: &Mutex<HashMap<String, u64>>, step: &str) {
        let snapshot = acked.lock().clone();
        let url = cluster.urls()[0].clone();
        let http = cluster.http.clone();
        let bad: Vec<String> = futures_util::stream::iter(snapshot)
            .map(|(id, k)| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    // A 503 with Retry-After is an answer to retry, as a client
                    // would (bounded); anything else is the session's state.
                    let mut r = None;
                    for _ in 0..100 {
                        let answer = http
                            .get(format!("{url}/api/sessions/{id}"))
                            .send()
                            .await
                            .ok()?;
                        if answer.status() == 503 && answer.headers().contains_key("retry-after") {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        r = Some(answer);
                        break;
                    }
                    let r = r?;
                    let status = r.status();
                    let doc: Value = r.json().await.ok()?;
                    let counter = doc["data"]["counter"].as_u64().unwrap_or(0);
                    (status != 200 || counter < k)
                        .then(|| format!("{id}: status {status}, counter {counter} < acked {k}"))
                }
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        assert!(
            bad.is_empty(),
            "{step}: {} lost or stale acknowledged writes, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        eprintln!("{step}: no lost or stale acknowledged write");
    }

    // Wait until the writer made progress.
    wait_for(
        "the writer to get going",
        Duration::from_secs(30),
        || async { (ok.load(Ordering::Relaxed) > 200).then_some(()) },
    )
    .await;

    let mut victim = cluster.take("node2");
    *urls.lock() = cluster.urls();
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(10)).await;
    wait_dropped(&cluster, "node2").await;
    cluster.wait_fully_replicated(total, 2).await;
    verify(&cluster, &acked, "after kill -9").await;

    cluster.spawn("node5");
    cluster.wait_ring(4).await;
    *urls.lock() = cluster.urls();
    cluster.wait_fully_replicated(total, 2).await;
    verify(&cluster, &acked, "after a join").await;

    // The leaving node stops taking the writer's requests first.
    let mut leaving = cluster.take("node3");
    *urls.lock() = cluster.urls();
    leaving.signal("TERM");
    assert!(leaving.wait_exit(Duration::from_secs(30)).await.success());
    cluster.wait_ring(3).await;
    cluster.wait_fully_replicated(total, 2).await;
    verify(&cluster, &acked, "after a leave").await;

    cluster.spawn("node2");
    cluster.wait_ring(4).await;
    *urls.lock() = cluster.urls();
    cluster.wait_fully_replicated(total, 2).await;
    verify(&cluster, &acked, "after a restart").await;

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    verify(&cluster, &acked, "at the end").await;
    eprintln!(
        "writes acknowledged: {}, refused or failed (not acknowledged): {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}

/// A graceful leave (SIGTERM) under writes through the nodes that stay up: each
/// write is acknowledged, or refused with a 503 and Retry-After that the writer
/// retries; none fails with an unknown outcome (a 502 `owner_failed`, what a
/// link closed under its in-flight writes gave), and none is lost.
///
/// A third of the sessions are the leaving node's, so their writes travel over
/// the links to it while it hands off and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_fails_no_write_through_the_nodes_that_stay_up() {
    let mut cluster = ChildCluster::start(3, &["--replication-factor", "2"]).await;
    let ids: Vec<String> = create_sessions(&cluster, 300).await.into_keys().collect();
    let mut leaving = cluster.take("node3");
    let stayers = cluster.urls();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = ids
        .chunks(ids.len().div_ceil(PARALLEL))
        .map(|mine| {
            let (acked, stop, ok, refused) =
                (acked.clone(), stop.clone(), ok.clone(), refused.clone());
            let (ids, stayers, http) = (mine.to_vec(), stayers.clone(), cluster.http.clone());
            tokio::spawn(async move {
                // Bounded: at most 10k writes each, or until the test says stop.
                for i in 0..10_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = &ids[i % ids.len()];
                    let k = (i / ids.len() + 1) as u64;
                    let url = format!("{}/api/sessions/{id}", stayers[i % stayers.len()]);
                    until_accepted(&format!("write {k} of {id}"), 200, Some(&refused), || {
                        http.patch(&url).json(&json!({ "counter": k }))
                    })
                    .await;
                    ok.fetch_add(1, Ordering::Relaxed);
                    acked.lock().insert(id.clone(), k);
                }
            })
        })
        .collect();
    let progress = |past: u64| {
        let ok = ok.clone();
        async move { (ok.load(Ordering::Relaxed) >= past).then_some(()) }
    };
    wait_for("the writers to get going", WAIT, || progress(300)).await;
    leaving.signal("TERM");
    assert!(leaving.wait_exit(Duration::from_secs(30)).await.success());
    let after = ok.load(Ordering::Relaxed) + 1000;
    wait_for("1000 more writes after the leave", WAIT, || progress(after)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer
            .await
            .expect("no write failed with anything but a 503 to retry");
    }
    cluster.wait_ring(2).await;
    let http = cluster.http.clone();
    let acked = acked.lock().clone();
    for (id, k) in acked {
        let doc: Value = until_accepted(&format!("read {id}"), 200, None, || {
            http.get(format!("{}/api/sessions/{id}", stayers[0]))
        })
        .await;
        assert_eq!(
            doc["data"]["counter"], k,
            "{id}: the last acknowledged write"
        );
    }
    eprintln!(
        "writes acknowledged: {}, refused with 503 and retried: {}",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
}

/// With replication factor 1 a graceful leave hands every session over first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_with_replication_factor_1_loses_nothing() {
    let mut cluster = ChildCluster::start(3, &["--replication-factor", "1"]).await;
    let expected = create_sessions(&cluster, 900).await;
    let views = cluster.views().await.unwrap();
    let node3 = views.iter().find(|v| v["node_id"] == "node3").unwrap();
    assert!(
        node3["sessions"]["owned"].as_u64().unwrap() > 100,
        "node3 owns sessions before it leaves"
    );
    let started = Instant::now();
    cluster.node("node3").signal("TERM");
    let mut leaving = cluster.take("node3");
    assert!(leaving.wait_exit(Duration::from_secs(30)).await.success());
    let exited = started.elapsed();
    cluster.wait_ring(2).await;
    assert!(
        check_all(&cluster, &expected).await.is_empty(),
        "every session survived the leave"
    );
    eprintln!(
        "rf=1 leave: exited after {exited:?}, all {} sessions readable",
        expected.len()
    );
}

/// `/api/cluster` of the node at `url`.
async fn view_of(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(format!("{url}/api/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// A frozen node (SIGSTOP) is dropped from the others' rings and its sessions
/// are written through them; when it thaws (SIGCONT) it still holds the old
/// copies and may for a moment still take itself for their owner. It must
/// neither serve nor build on them: the very first read through it shows the
/// newer data, a write through it follows it (or is refused, never acknowledged
/// on top of the old copy), and it reports the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_node_neither_serves_nor_builds_on_its_old_copies() {
    let mut cluster = ChildCluster::start(3, &["--replication-factor", "2"]).await;
    let created = create_sessions_with_owner(&cluster, 240).await;
    let owned: Vec<String> = created
        .iter()
        .filter(|(_, (_, owner))| owner == "node1")
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!owned.is_empty(), "node1 owns some of 240 sessions");
    let http = cluster.http.clone();
    let thawed = cluster.node("node1").url("");
    let others = [cluster.node("node2").url(""), cluster.node("node3").url("")];

    cluster.node("node1").signal("STOP");
    let frozen_at = Instant::now();
    wait_for("node1 out of the other rings", WAIT, || async {
        for url in &others {
            let view = view_of(&http, url).await?;
            if view["ring"]["nodes"]
                .as_array()?
                .iter()
                .any(|n| n == "node1")
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    let dropped_after = frozen_at.elapsed();
    for id in &owned {
        until_accepted(
            &format!("write {id} while node1 is frozen"),
            200,
            None,
            || {
                http.patch(format!("{}/api/sessions/{id}", others[0]))
                    .json(&json!({"counter": 1}))
            },
        )
        .await;
    }

    cluster.node("node1").signal("CONT");
    let thawed_at = Instant::now();
    // At once: every read through the thawed node has the newer data.
    for id in &owned {
        let r = http
            .get(format!("{thawed}/api/sessions/{id}"))
            .send()
            .await
            .unwrap();
        let by = common::header(&r, "x-served-by");
        assert_eq!(r.status(), 200, "read {id} through the thawed node");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(
            doc["data"]["counter"], 1,
            "{id} read through the thawed node (served by {by:?}) lacks the write made while it was frozen"
        );
    }
    let reads_done = thawed_at.elapsed();
    // Writes through it build on the newer data; a refusal is allowed (the
    // client retries), an acknowledged write on the old copy is not.
    let refused = AtomicU64::new(0);
    for id in &owned {
        let doc = until_accepted(
            &format!("write {id} through node1"),
            200,
            Some(&refused),
            || {
                http.patch(format!("{thawed}/api/sessions/{id}"))
                    .json(&json!({"by_thawed": true}))
            },
        )
        .await;
        assert_eq!(doc["data"]["counter"], 1, "{id}: written on the old copy");
    }
    for url in others.iter().chain([&thawed]) {
        for id in &owned {
            let doc: Value = http
                .get(format!("{url}/api/sessions/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                doc["data"],
                json!({"user": created[id].0["user"], "counter": 1, "by_thawed": true}),
                "{id} via {url}"
            );
        }
    }
    let view = view_of(&http, &thawed).await.unwrap();
    assert!(
        view["replication"]["pauses"].as_u64() >= Some(1),
        "the thawed node reports its pause: {}",
        view["replication"]
    );
    eprintln!(
        "{} sessions of node1: dropped from the rings {dropped_after:?} after SIGSTOP; \
         all read right through it {reads_done:?} after SIGCONT; {refused} writes through it refused; \
         replication stats of node1: {}",
        owned.len(),
        view["replication"],
        refused = refused.load(Ordering::Relaxed),
    );
}
