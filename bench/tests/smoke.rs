//! The benchmark harness cannot rot: a short run (`bench --smoke`: one round of
//! one-second runs, 2,000 sessions, a 3-node join and one kill -9) must produce a
//! table with every contender (the applications on sessionmesh of `bench-app`
//! included, and the gateway part's Flask applications) and no errors. Real
//! redis-server, wrk, the peer, the sessionmesh binary, bench-app, gunicorn with
//! Flask (the harness installs the pinned Python packages of
//! `bench/flask/requirements.txt` when missing), all on loopback; about a minute
//! and a half on a 2-core machine. The full run (`scripts/bench.sh`) is not part
//! of the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

const SCENARIOS: [&str; 16] = [
    "plain",
    "peer_read",
    "peer_rr_read",
    "peer_login",
    "sm_owner_read",
    "sm_forwarded_read",
    "sm_rr_read",
    "sm_login_rf2",
    "app_owner_read",
    "app_forwarded_read",
    "app_rr_read",
    "app_login_rf2",
    "store_owner_read",
    "store_forwarded_read",
    "store_rr_read",
    "store_login_rf2",
];

/// The gateway part's (issue 15).
const GATEWAY_SCENARIOS: [&str; 6] = [
    "flask_redis_rr_read",
    "flask_redis_rr_login",
    "gw_rr_read",
    "gw_rr_login",
    "flask_none_rr_read",
    "flask_none_rr_login",
];

/// Every scenario of `keys` is in the table and the JSON's `part`, served
/// requests, had no error and has a p99.
fn assert_measured(markdown: &str, json: &serde_json::Value, part: &str, keys: &[&str], log: &str) {
    let scenarios = json[part]["scenarios"]
        .as_array()
        .unwrap_or_else(|| panic!("no {part} scenarios in the JSON"));
    for key in keys {
        assert!(
            markdown.contains(&format!("`{key}`")),
            "{key} missing from the table"
        );
        let s = scenarios
            .iter()
            .find(|s| s["key"] == *key)
            .unwrap_or_else(|| panic!("{key} missing from the JSON"));
        assert!(
            s["median_rps"].as_f64().unwrap() > 0.0,
            "{key} served nothing"
        );
        let errors: u64 = ["connect", "read", "write", "status", "timeout"]
            .iter()
            .map(|k| s["errors"][k].as_u64().unwrap())
            .sum();
        assert_eq!(errors, 0, "{key} had errors:\n{log}");
        assert!(
            s["latency"]["p99_us"].as_u64().is_some(),
            "{key} has no p99"
        );
    }
}

/// The `sessionmesh` binary of the same profile as this test's binaries, built
/// if it is not there yet.
fn sessionmesh_bin() -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_bench"))
        .parent()
        .expect("a profile directory")
        .to_path_buf();
    let bin = profile_dir.join("sessionmesh");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "sessionmesh", "--bin", "sessionmesh"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building sessionmesh failed");
    }
    bin
}

#[test]
fn a_smoke_run_measures_every_contender_without_errors() {
    let out = std::env::temp_dir().join(format!("sessionmesh-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--smoke")
        .arg("--sessionmesh-bin")
        .arg(sessionmesh_bin())
        .arg("--peer-bin")
        .arg(env!("CARGO_BIN_EXE_bench-peer"))
        .arg("--app-bin")
        .arg(env!("CARGO_BIN_EXE_bench-app"))
        .arg("--out")
        .arg(&out)
        .arg("--criterion-dir")
        .arg(out.join("no-criterion"))
        .output()
        .expect("the harness starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the harness failed:\n{stderr}");

    let markdown = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
            .expect("results.json");
    assert_measured(&markdown, &json, "throughput", &SCENARIOS, &stderr);
    assert_measured(&markdown, &json, "gateway", &GATEWAY_SCENARIOS, &stderr);
    // The gateway's CPU is split between its nodes and the application.
    let gw = json["gateway"]["scenarios"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["key"] == "gw_rr_read"))
        .expect("gw_rr_read");
    assert!(gw["cpu_split"]
        .as_array()
        .is_some_and(|parts| parts.iter().any(|p| p["what"] == "sessionmesh nodes")));
    assert!(markdown.contains("## Gateway mode (issue 15)"));
    let memory = &json["memory"];
    assert_eq!(memory["sessions"], 2_000);
    assert!(
        memory["sessionmesh_rss"]["bytes_per_session"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        memory["redis_used_memory"]["bytes_per_session"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let dynamics = &json["dynamics"];
    assert!(dynamics["join"][0]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(dynamics["kill"][0]["detection_median_ms"].as_f64().unwrap() > 0.0);
    assert!(markdown.contains("## Targets"));
    let _ = std::fs::remove_dir_all(&out);
}
