//! A mesh's life: every task and thread it starts, and every socket it
//! binds, ends with it, whether it is shut down, dropped, or fails to start.
//!
//! One test function on purpose: it counts the threads of the whole process,
//! which other tests running beside it would change.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use common::{test_config, wait_for, Secrets, WAIT};
use sessionmesh::Mesh;

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// A free loopback port for TCP and one for UDP.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    (tcp, udp)
}

/// Whether nothing listens on either address any more.
fn released(internal: SocketAddr, gossip: SocketAddr) -> bool {
    TcpListener::bind(internal).is_ok() && UdpSocket::bind(gossip).is_ok()
}

/// Waits until the process is back to `threads` threads, the runtime to
/// `tasks` tasks, and both addresses are free.
async fn back_to(
    what: &str,
    threads_then: usize,
    tasks_then: usize,
    addrs: (SocketAddr, SocketAddr),
) {
    wait_for(what, WAIT, || async {
        let now = (threads(), alive_tasks(), released(addrs.0, addrs.1));
        (now == (threads_then, tasks_then, true)).then_some(())
    })
    .await;
}

/// 1. a started mesh that served operations is shut down: its threads, tasks,
///    listener and gossip socket are gone;
/// 2. another is dropped without `shutdown` (its clones too): the same;
/// 3. a start that fails after gossip began, after replication began, and
///    after the internal listener began serving: an error, and nothing of it
///    is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_leaves_nothing_running_when_stopped_dropped_or_failed() {
    let secrets = Secrets::new();
    let threads_before = threads();
    let tasks_before = alive_tasks();
    let config_at = |name: &str| {
        let (internal, gossip) = free_ports();
        let mut config = test_config(name, &secrets, vec![]);
        config.internal_addr = internal;
        config.gossip_addr = gossip;
        (config, (internal, gossip))
    };

    // 1. Shut down.
    let (config, addrs) = config_at("stopped");
    let mesh = Mesh::start(config).await.expect("starts");
    assert!(threads() > threads_before && alive_tasks() > tasks_before);
    let doc = mesh
        .create(serde_json::json!({"n": 1}), None)
        .await
        .unwrap();
    assert_eq!(mesh.get(&doc.id).await.unwrap().version, 1);
    mesh.shutdown().await;
    drop(mesh);
    back_to(
        "a shut-down mesh to be gone",
        threads_before,
        tasks_before,
        addrs,
    )
    .await;

    // 2. Dropped.
    let (config, addrs) = config_at("dropped");
    let mesh = Mesh::start(config).await.expect("starts");
    let clone = mesh.clone();
    let doc = clone
        .create(serde_json::json!({"n": 2}), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        mesh.get(&doc.id).await.unwrap().get::<u64>("n").unwrap(),
        Some(2)
    );
    drop(mesh);
    assert!(!released(addrs.0, addrs.1), "a clone keeps it running");
    drop(clone);
    back_to(
        "a dropped mesh to be gone",
        threads_before,
        tasks_before,
        addrs,
    )
    .await;

    // 3. Failed halfway.
    for step in [
        "gossip started",
        "replication started",
        "internal listener serving",
    ] {
        let (config, addrs) = config_at("failing");
        let error = Mesh::builder(config)
            .fail_after(step)
            .start()
            .await
            .expect_err("asked to fail");
        assert!(error.to_string().contains(step), "{error}");
        back_to(
            &format!("a start failed after {step} to be gone"),
            threads_before,
            tasks_before,
            addrs,
        )
        .await;
    }
}
