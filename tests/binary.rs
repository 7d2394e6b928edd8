//! The real `sessionmesh` binary as a child process: configuration errors and a
//! graceful leave on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{header, wait_for, ChildNode, Cluster, WAIT};
use serde_json::{json, Value};

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad values and unknown keys stop the program with exit code 2 and a message
/// naming the key, before anything is bound.
#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("sessionmesh-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "node_id = \"a\"\nreplication_factr = 2\n").unwrap();
    let file = file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--session-ttl", "banana"], vec![], "session_ttl"),
        (
            vec!["--replication-factor", "0"],
            vec![],
            "replication_factor",
        ),
        (vec!["--public-addr", "nowhere"], vec![], "public_addr"),
        (vec!["--config", file], vec![], "replication_factr"),
        (
            vec![],
            vec![("SESSIONMESH_GOSSIP_INTERVAL", "fast")],
            "gossip_interval",
        ),
        (
            vec![],
            vec![("SESSIONMESH_NO_SUCH_KEY", "1")],
            "SESSIONMESH_NO_SUCH_KEY",
        ),
        (
            vec!["--seed", "127.0.0.1:7999"],
            vec![],
            "_secret is required",
        ),
    ];
    for (args, env, key) in cases {
        let (code, stderr) = run_binary(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{args:?} {env:?}: message should name {key}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM makes a node leave: it gossips `leaving` (so `/readyz` turns 503 and
/// peers drop it from their rings), finishes, and exits 0 within a bounded time.
///
/// 1. start two in-process nodes and the binary seeded with them;
/// 2. wait for a ring of three everywhere; read a session through the child;
/// 3. SIGTERM the child; watch its /readyz turn 503 while it drains;
/// 4. it exits 0; both peers' rings drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_cluster_and_exits_cleanly() {
    let cluster = Cluster::start(2).await;
    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    // A longer gossip interval widens the drain window that the test watches.
    let mut child = ChildNode::spawn(
        "child",
        &cluster.secrets,
        &seeds,
        &["--gossip-interval", "300ms"],
    );
    let fingerprint = cluster.wait_converged(3).await;
    let http = common::client();
    wait_for("the child to be ready with the same ring", WAIT, || async {
        let r = http.get(child.url("/readyz")).send().await.ok()?;
        let view: Value = http
            .get(child.url("/api/cluster"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r.status() == 200 && view["ring"]["fingerprint"] == fingerprint.as_str()).then_some(())
    })
    .await;
    let doc: Value = http
        .post(cluster.url(0, "/api/sessions"))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read = http
        .get(child.url(&format!("/api/sessions/{}", doc["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "x-served-by").as_deref(), Some("node1"));
    assert_eq!(header(&read, "x-entry-node").as_deref(), Some("child"));

    let sent = Instant::now();
    child.signal("TERM");
    wait_for("the child's /readyz to turn 503", WAIT, || async {
        let r = http.get(child.url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let status = child.wait_exit(Duration::from_secs(15)).await;
    let exited = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    cluster.wait_converged(2).await;
    eprintln!(
        "SIGTERM to exit: {exited:?}; dropped from every ring after {:?}",
        sent.elapsed()
    );
    for node in &cluster.nodes {
        assert!(!node.node().view().ring.contains("child"));
    }
    cluster.shutdown().await;
}

/// Drops the ANSI escape sequences of `line` (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The binary with logs in `format` and `--gossip-interval 1s` (a wide window
/// between announcing `ready` and being ready), its stderr on a pipe; the lines
/// on a channel.
fn spawn_logger(
    node_id: &str,
    secrets: &common::Secrets,
    format: &str,
) -> (common::KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let child = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
        .args([
            "--node-id",
            node_id,
            "--cluster-id",
            "test",
            "--workers",
            "1",
        ])
        .args([
            "--public-addr",
            "127.0.0.1:0",
            "--internal-addr",
            "127.0.0.1:0",
        ])
        .args(["--gossip-addr", "127.0.0.1:0", "--gossip-interval", "1s"])
        .args(["--log-format", format])
        .envs(secrets.env())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// The public URL in a `node ready: open http://...` line.
fn ready_url(line: &str) -> Option<String> {
    let url = line
        .split("node ready: open ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some(url.trim_end_matches('/').to_owned())
}

/// Logs written to a pipe (a file, `docker logs`) are plain text, a node logs no
/// membership change about itself, and it logs `node ready` once it is ready.
///
/// 1. start the binary with text logs, stderr on a pipe;
/// 2. on its `node ready` line, `/readyz` already answers 200;
/// 3. SIGTERM; it exits 0;
/// 4. no line it wrote holds an ESC byte, and no `member joined/gone/status
///    changed/restarted` line names the node itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_off_a_terminal_are_plain_and_tell_the_nodes_own_story_in_order() {
    let secrets = common::Secrets::new();
    let (mut child, lines) = spawn_logger("loner", &secrets, "text");
    let mut seen: Vec<String> = Vec::new();
    let url = loop {
        let line = tokio::task::block_in_place(|| lines.recv_timeout(WAIT))
            .unwrap_or_else(|_| panic!("no `node ready` line; it wrote:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Some(url) = ready_url(&strip_ansi(&line)) {
            break url;
        }
    };
    // The line came out: the node must be ready now, not a gossip round later.
    let ready = common::client()
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "/readyz right after `node ready`");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_for("the node to exit", WAIT, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    seen.extend(lines.try_iter());
    let log = seen.join("\n");
    assert!(log.contains("left the cluster"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log written to a pipe:\n{log:?}"
    );
    for line in &seen {
        let line = strip_ansi(line);
        let about_itself = line.contains("node=loner");
        let membership = [
            "member joined",
            "member gone",
            "member status changed",
            "member restarted",
        ]
        .iter()
        .any(|m| line.contains(m));
        assert!(
            !(about_itself && membership),
            "a membership line about the node itself: {line}\n{log}"
        );
    }
}

/// On a terminal, the text log is coloured, unless `NO_COLOR` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_a_terminal_are_coloured_unless_no_color() {
    let secrets = common::Secrets::new();
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let (master, slave) = pty();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessionmesh"));
        command
            .args(["--node-id", "tty", "--cluster-id", "test", "--workers", "1"])
            .args([
                "--public-addr",
                "127.0.0.1:0",
                "--internal-addr",
                "127.0.0.1:0",
            ])
            .args(["--gossip-addr", "127.0.0.1:0", "--gossip-interval", "100ms"])
            .envs(secrets.env())
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(slave);
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let mut child = common::KillOnDrop(command.spawn().unwrap());
        // Our copy of the terminal's other end went to the child only.
        drop(command);
        let (tx, chunks) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut master = master;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = master.read(&mut buffer) {
                if n == 0 || tx.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut output = Vec::new();
        while !String::from_utf8_lossy(&output).contains("node ready") {
            let chunk =
                tokio::task::block_in_place(|| chunks.recv_timeout(WAIT)).unwrap_or_else(|_| {
                    panic!(
                        "no `node ready` on the terminal: {}",
                        String::from_utf8_lossy(&output)
                    )
                });
            output.extend(chunk);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            output.contains(&0x1b),
            coloured,
            "NO_COLOR={no_color:?}: {:?}",
            String::from_utf8_lossy(&output)
        );
    }
}

/// A pseudo-terminal: (our end, the end a child writes to).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors, which we own from here on.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// `--log-format json` writes one JSON object per line, from start to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let secrets = common::Secrets::new();
    let (mut child, lines) = spawn_logger("jsonlog", &secrets, "json");
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|l| l.contains("node ready")) {
        let line = tokio::task::block_in_place(|| lines.recv_timeout(WAIT))
            .unwrap_or_else(|_| panic!("no `node ready` line; it wrote:\n{}", seen.join("\n")));
        seen.push(line);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_for("the node to exit", WAIT, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    seen.extend(lines.try_iter());
    assert!(
        seen.iter().any(|l| l.contains("left the cluster")),
        "{seen:?}"
    );
    for line in &seen {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(event.is_object() && event["message"].is_string(), "{line}");
        assert!(!line.contains('\x1b'), "{line:?}");
    }
}
