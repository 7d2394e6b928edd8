//! TLS on both listeners, as users and operators see it: HTTPS for browsers and
//! services, mutual TLS between nodes, the command-line tools over HTTPS, and
//! nodes whose certificate the cluster's CA did not issue kept out.
//!
//! Every test makes its own throwaway CA and certificates (rcgen) for
//! `localhost` and 127.0.0.1, binds port 0 and waits on conditions.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pki::{Ca, CertFiles, PemDir};
use common::{header, set_cookie, wait_for, ChildCluster, ChildNode, Cluster, WAIT};
use serde_json::{json, Value};
use sessionmesh::config::Config;
use sessionmesh::testing::tls::{InternalTls, PublicTls};

const HOSTS: &[&str] = &["localhost", "127.0.0.1"];

/// One cluster's CA, as a file, and the directory of its certificates.
struct ClusterPki {
    dir: PemDir,
    ca: Ca,
    ca_file: PathBuf,
}

impl ClusterPki {
    fn new() -> ClusterPki {
        let dir = PemDir::new("tls-test");
        let ca = Ca::new("sessionmesh test cluster CA");
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        ClusterPki { dir, ca, ca_file }
    }

    /// A certificate for `name` on loopback, issued by the cluster's CA.
    fn node(&self, name: &str) -> CertFiles {
        CertFiles::issue(&self.dir, &self.ca, name, HOSTS)
    }

    /// Puts TLS on both listeners of `config`, with a certificate of its own.
    fn secure(&self, config: &mut Config) {
        let files = self.node(&config.node_id);
        config.public_tls = Some(PublicTls::from_pem_files(&files.cert, &files.key).unwrap());
        config.internal_tls =
            Some(InternalTls::from_pem_files(&files.cert, &files.key, &self.ca_file).unwrap());
    }
}

/// A client that trusts only `ca` (PEM), and presents `identity` (PEM
/// certificate then key) when given.
fn https_client(ca: &str, identity: Option<&CertFiles>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20));
    if let Some(files) = identity {
        let mut pem = std::fs::read(&files.cert).unwrap();
        pem.extend(std::fs::read(&files.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Runs the `sessionmesh` binary to its end, off the runtime's threads, killing
/// it after [`WAIT`]: (exit code, stdout, stderr).
async fn run_binary(args: Vec<String>, env: Vec<(String, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let child = Command::new(env!("CARGO_BIN_EXE_sessionmesh"))
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if finished.recv_timeout(WAIT).is_err() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = done.send(());
        let _ = watchdog.join();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 1. three in-process nodes, HTTPS on both listeners, one certificate each;
/// 2. log in over HTTPS on node1;
/// 3. nodes 2 and 3 greet the user: forwarded to node1 over mutual TLS;
/// 4. the replica holds its copy; after node1 leaves, the others still greet;
/// 5. the dashboard gathers every node over internal TLS;
/// 6. plain HTTP to either TLS port fails, the internal port wants a client
///    certificate of the CA, and the header limit still answers 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_forwards_and_replicates_over_tls() {
    let pki = ClusterPki::new();
    let mut cluster = Cluster::start_with(3, |config| pki.secure(config)).await;
    cluster.http = https_client(&pki.ca.cert_pem, None);
    let http = &cluster.http;
    assert!(cluster.url(0, "/").starts_with("https://127.0.0.1:"));

    let login = http
        .get(cluster.url(0, "/login?name=Ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(header(&login, "x-served-by").as_deref(), Some("node1"));
    let cookie = set_cookie(&login, "SESSION").expect("a session cookie");
    assert_eq!(login.text().await.unwrap(), "Login successful.");

    for i in 1..3 {
        let page = http
            .get(cluster.url(i, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(header(&page, "x-served-by").as_deref(), Some("node1"));
        assert_eq!(header(&page, "x-entry-node"), Some(cluster.id(i)));
        assert!(page.text().await.unwrap().contains("Hello, Ada"));
    }

    // The write was acknowledged after its replica applied it, over internal TLS.
    let doc: Value = http
        .get(cluster.url(1, "/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["owner"], "node1");
    let replica = doc["replicas"][0].as_str().expect("one replica").to_owned();
    let r = (0..3).find(|&i| cluster.id(i) == replica).unwrap();
    let view: Value = http
        .get(cluster.url(r, "/api/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["sessions"]["replica"], 1, "{view}");

    // The dashboard's overview asks every peer over internal TLS.
    let overview: Value = http
        .get(cluster.url(2, "/api/cluster/overview"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nodes = overview["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["ok"] == true), "{overview}");

    // Plain HTTP to a TLS port gets no answer; neither does TLS without a
    // client certificate on the internal port. A certificate of the CA passes
    // TLS, and then the request still needs the cluster secret's signature.
    let plain = common::client();
    let public = cluster.nodes[0].addrs().public;
    let internal = cluster.nodes[0].addrs().internal;
    let healthz = plain.get(format!("http://{public}/healthz")).send().await;
    assert!(
        healthz.is_err(),
        "plain HTTP on the public TLS port: {healthz:?}"
    );
    let internal_path = format!("/internal/sessions/{}", doc["id"].as_str().unwrap());
    let answer = plain
        .get(format!("http://{internal}{internal_path}"))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "plain HTTP on the internal TLS port: {answer:?}"
    );
    let anonymous = http
        .get(cluster.internal_url(0, &internal_path))
        .send()
        .await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let with_cert = https_client(&pki.ca.cert_pem, Some(&pki.node("operator")));
    let unsigned = with_cert
        .get(cluster.internal_url(0, &internal_path))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned.status(),
        401,
        "TLS passed, the signature is missing"
    );

    let big = http
        .get(cluster.url(1, "/"))
        .header("cookie", format!("SESSION={}", "a".repeat(20 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431, "limits hold on TLS listeners");

    // node1 leaves, handing its sessions over internal TLS; Ada stays logged in.
    let mut nodes = std::mem::take(&mut cluster.nodes);
    nodes.remove(0).shutdown().await;
    cluster.nodes = nodes;
    cluster.wait_converged(2).await;
    for i in 0..2 {
        let page = cluster
            .http
            .get(cluster.url(i, "/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(page.text().await.unwrap().contains("Hello, Ada"));
    }
    cluster.shutdown().await;
}

/// The flags of the real binary, for TLS with the files of `node` and `ca`.
fn tls_flags(node: &CertFiles, ca: &Path, public: bool) -> Vec<String> {
    let mut flags = args(&[
        "--internal-tls-cert-file",
        path(&node.cert),
        "--internal-tls-key-file",
        path(&node.key),
        "--internal-tls-ca-file",
        path(ca),
    ]);
    if public {
        flags.extend(args(&[
            "--public-tls-cert-file",
            path(&node.cert),
            "--public-tls-key-file",
            path(&node.key),
        ]));
    }
    flags
}

/// 1. two `sessionmesh` processes with TLS on both listeners from their flags;
/// 2. a login gets a Secure cookie; a session created on node1 is read through node2;
/// 3. `status`, `whereis` and `healthcheck` work over HTTPS with `--ca-file`,
///    and fail with a clear message without it, with another CA, or over HTTP;
/// 4. `leave` over HTTPS: node2 hands off and exits 0; node1 still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_and_its_commands_speak_https() {
    let pki = ClusterPki::new();
    let node = pki.node("node");
    let flags = tls_flags(&node, &pki.ca_file, true);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let http = https_client(&pki.ca.cert_pem, None);
    let mut cluster = ChildCluster::start_with_client(2, &extra, http.clone()).await;
    let urls = cluster.urls();
    assert!(urls.iter().all(|u| u.starts_with("https://")), "{urls:?}");

    let login = http
        .get(format!("{}/login?name=Ada", urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let raw = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        raw.contains("Secure"),
        "HTTPS makes the cookie Secure: {raw}"
    );

    let doc: Value = http
        .post(format!("{}/api/sessions", urls[0]))
        .json(&json!({"user": "ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    let read = http
        .get(format!("{}/api/sessions/{id}", urls[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["data"]["user"], "ada");

    let ca = path(&pki.ca_file);
    let (code, out, err) = run_binary(
        args(&["status", "--node", &urls[0], "--ca-file", ca]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("every node agrees") && out.contains("node2"),
        "{out}"
    );
    let bare = urls[1].trim_start_matches("https://");
    let (code, out, err) = run_binary(
        args(&["whereis", &id, "--node", bare, "--ca-file", ca]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("owner"), "{out}");
    let (code, _, err) = run_binary(
        args(&["healthcheck", "--ready", "--node", bare, "--ca-file", ca]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = run_binary(args(&["healthcheck", "--node", &urls[0]]), vec![]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--ca-file"), "{err}");
    let other = pki
        .dir
        .write("other-ca.pem", &Ca::new("another CA").cert_pem);
    let (code, _, err) = run_binary(
        args(&["healthcheck", "--node", &urls[0], "--ca-file", path(&other)]),
        vec![],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("TLS failed"), "{err}");
    let plain = urls[0].replace("https://", "http://");
    let (code, _, err) = run_binary(args(&["healthcheck", "--node", &plain]), vec![]).await;
    assert_eq!(code, 1, "plain HTTP to the TLS port: {err}");

    let secret = String::from_utf8(cluster.secrets.cluster.expose().to_vec()).unwrap();
    let (code, out, err) = run_binary(
        args(&["leave", "--node", &urls[1], "--ca-file", ca]),
        vec![("SESSIONMESH_CLUSTER_SECRET".to_owned(), secret)],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let status = cluster.node("node2").wait_exit(WAIT).await;
    assert!(status.success(), "{status:?}");
    cluster.take("node2");
    cluster.wait_ring(1).await;
    let read = http
        .get(format!("{}/api/sessions/{id}", urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "handed off over internal TLS");
}

/// A JSON log line of `node` with this message, once it shows up.
fn logged(node: &mut ChildNode, message: &str, seen: &mut Vec<Value>) -> Option<Value> {
    while let Ok(line) = node.lines.try_recv() {
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            seen.push(event);
        }
    }
    seen.iter().find(|e| e["message"] == message).cloned()
}

/// 1. two TLS nodes; a stranger that knows the cluster secret and trusts the
///    cluster's CA, but whose certificate another CA issued, joins the gossip;
/// 2. node1 challenges it, the handshake fails, and it is refused (logged with
///    the TLS reason); it never enters a ring, and admits nobody itself;
/// 3. a request made with the stranger's certificate fails at the handshake,
///    where one made with a certificate of the CA gets through to the signature check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_is_never_admitted() {
    let pki = ClusterPki::new();
    let node = pki.node("node");
    let flags = tls_flags(&node, &pki.ca_file, false);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = ChildCluster::start(2, &extra).await;

    let rogue_ca = Ca::new("rogue CA");
    let rogue = CertFiles::issue(&pki.dir, &rogue_ca, "rogue", HOSTS);
    let bundle = pki.dir.write(
        "rogue-bundle.pem",
        &format!("{}{}", pki.ca.cert_pem, rogue_ca.cert_pem),
    );
    let rogue_flags = tls_flags(&rogue, &bundle, false);
    let rogue_extra: Vec<&str> = rogue_flags.iter().map(String::as_str).collect();
    let seeds: Vec<String> = cluster.live().map(|c| c.gossip.to_string()).collect();
    let stranger = tokio::task::block_in_place(|| {
        ChildNode::spawn("stranger", &cluster.secrets, &seeds, &rogue_extra)
    });

    let mut seen = Vec::new();
    let refusal = wait_for("node1 to refuse the stranger", WAIT, || {
        let found = logged(
            cluster.node("node1"),
            "member refused: it stays out of the ring",
            &mut seen,
        )
        .filter(|e| e["node"] == "stranger");
        async move { found }
    })
    .await;
    let reason = refusal["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TLS failed"), "{refusal}");

    let plain = common::client();
    wait_for(
        "the stranger to see the cluster and admit nobody",
        WAIT,
        || async {
            let view: Value = plain
                .get(stranger.url("/api/cluster"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let members = view["members"].as_array()?;
            let ring = view["ring"]["nodes"].as_array()?;
            (members.len() >= 3 && ring.len() == 1 && ring[0] == "stranger").then_some(())
        },
    )
    .await;
    let views = cluster.views().await.unwrap();
    for view in &views {
        let ring = view["ring"]["nodes"].as_array().unwrap();
        assert_eq!(ring.len(), 2, "{view}");
        let member = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node_id"] == "stranger")
            .expect("the stranger is a gossip member");
        assert_eq!(member["admitted"], false);
    }

    let internal = cluster.node("node1").internal;
    let url = format!("https://{internal}/internal/admission?nonce=x");
    let as_stranger = https_client(&pki.ca.cert_pem, Some(&rogue))
        .get(&url)
        .send()
        .await;
    assert!(as_stranger.is_err(), "{as_stranger:?}");
    let as_peer = https_client(&pki.ca.cert_pem, Some(&node))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(as_peer.status(), 401);
}

/// Bad TLS settings stop the binary with exit code 2 and a message naming the
/// key, before anything is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_configuration_exits_2_naming_the_key() {
    let pki = ClusterPki::new();
    let node = pki.node("node");
    let other = CertFiles::issue(&pki.dir, &Ca::new("another CA"), "other", HOSTS);
    let garbage = pki
        .dir
        .write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let (cert, key, ca) = (path(&node.cert), path(&node.key), path(&pki.ca_file));
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--public-tls-cert-file", cert], vec![], "`public_tls_key_file` is required"),
        (vec![], vec![("SESSIONMESH_PUBLIC_TLS_KEY_FILE", key)], "`public_tls_cert_file` is required"),
        (
            vec!["--public-tls-cert-file", "/nonexistent/cert.pem", "--public-tls-key-file", key],
            vec![],
            "`public_tls_cert_file` /nonexistent/cert.pem (from --public-tls-cert-file): cannot read it",
        ),
        (
            vec!["--public-tls-cert-file", cert, "--public-tls-key-file", path(&garbage)],
            vec![],
            "`public_tls_key_file`",
        ),
        (
            vec!["--public-tls-cert-file", path(&garbage), "--public-tls-key-file", key],
            vec![],
            "`public_tls_cert_file`",
        ),
        (
            vec!["--public-tls-cert-file", cert, "--public-tls-key-file", path(&other.key)],
            vec![],
            "does not match the certificate",
        ),
        (
            vec!["--internal-tls-cert-file", cert, "--internal-tls-key-file", key],
            vec![],
            "`internal_tls_ca_file` is required",
        ),
        (
            vec![],
            vec![
                ("SESSIONMESH_INTERNAL_TLS_CERT_FILE", path(&other.cert)),
                ("SESSIONMESH_INTERNAL_TLS_KEY_FILE", path(&other.key)),
                ("SESSIONMESH_INTERNAL_TLS_CA_FILE", ca),
            ],
            "`internal_tls_cert_file`",
        ),
        (
            vec!["--internal-tls-cert-file", cert, "--internal-tls-key-file", key, "--internal-tls-ca-file", path(&garbage)],
            vec![],
            "`internal_tls_ca_file`",
        ),
    ];
    for (flags, env, expected) in cases {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (code, _, stderr) = run_binary(args(&flags), env.clone()).await;
        assert_eq!(code, 2, "{flags:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("configuration error") && stderr.contains(expected),
            "{flags:?} {env:?}: should name {expected}: {stderr}"
        );
    }
}
