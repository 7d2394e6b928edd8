//! The deployment files, checked without running them: the Kubernetes manifests
//! against the Kubernetes API schemas (`kubernetes-validate`, from PyPI, offline) and
//! against each other (names, ports, probes, grace periods), and every
//! `SESSIONMESH_*` variable that the deployment files set against the keys the binary
//! knows (an unknown one stops a node at start-up).
//!
//! `kubernetes-validate` is installed by `.ci/run`; where it is missing the schema
//! test says so and passes, unless `CONTAINER_TESTS_REQUIRED=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Kubernetes versions the manifests are checked against: the oldest and the
/// newest schemas the validator ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // kustomize's own file is no Kubernetes resource: no schema exists for it.
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// Runs the validator on `files`; `None` when it is not installed.
fn validate(files: &[PathBuf], version: &str) -> Option<(bool, String)> {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

/// Every manifest validates strictly (no unknown fields, right types, required
/// fields present), and the validator really rejects a broken copy of each kind of
/// mistake, so a pass means something.
#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "services.yaml",
        "statefulset.yaml",
        "poddisruptionbudget.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is missing: {names:?}"
        );
    }
    let Some((ok, text)) = validate(&files, KUBERNETES_VERSIONS[0]) else {
        let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return;
    };
    assert!(ok, "the manifests do not validate:\n{text}");
    let (ok, newest) = validate(&files, KUBERNETES_VERSIONS[1]).unwrap();
    assert!(ok, "the manifests do not validate:\n{newest}");
    // One pass line per resource: nothing was skipped for want of a schema.
    let resources: usize = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().filter(|l| l.starts_with("kind: ")).count()
        })
        .sum();
    assert!(resources >= 5, "{resources} resources in {names:?}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        resources,
        "{text}"
    );

    let statefulset =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/statefulset.yaml"))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("sessionmesh-deploy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = [
        ("a misspelt field", "  replicas: 3", "  replicaz: 3"),
        ("a wrong type", "  replicas: 3", "  replicas: three"),
        ("a misspelt probe field", "path: /readyz", "paht: /readyz"),
        (
            "a missing required field",
            "      containers:\n        - name: sessionmesh\n",
            "      containers:\n        -\n",
        ),
    ];
    for (what, from, to) in broken {
        assert!(
            statefulset.contains(from),
            "the mutation for {what} no longer applies"
        );
        let file = dir.join("broken.yaml");
        std::fs::write(&file, statefulset.replacen(from, to, 1)).unwrap();
        let (ok, text) = validate(&[file], KUBERNETES_VERSIONS[1]).unwrap();
        assert!(!ok, "the validator accepted {what}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The keys documented in the example config file: exactly what the binary accepts.
fn config_keys() -> Vec<String> {
    let example =
        std::fs::read_to_string(Path::new(ROOT).join("config/sessionmesh.example.toml")).unwrap();
    example
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

/// `SESSIONMESH_*` names in a file, outside `#` comment lines.
fn env_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("SESSIONMESH_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

/// The gateway-mode sidecar example (deploy/kubernetes/gateway/) against the
/// same schemas: one pod holds the application and a sessionmesh node.
#[test]
fn gateway_sidecar_manifest_matches_the_api_schemas() {
    let file = Path::new(ROOT).join("deploy/kubernetes/gateway/sidecar.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("SESSIONMESH_UPSTREAM"),
        "no upstream in the sidecar"
    );
    assert!(
        text.contains("path: /_sessionmesh/readyz"),
        "probes outside the prefix"
    );
    for version in KUBERNETES_VERSIONS {
        let Some((ok, text)) = validate(std::slice::from_ref(&file), version) else {
            let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
            assert!(!required, "kubernetes-validate is not installed");
            eprintln!("SKIPPED: kubernetes-validate is not installed");
            return;
        };
        assert!(ok, "the sidecar manifest does not validate:\n{text}");
        assert_eq!(text.matches(" passed for resource ").count(), 3, "{text}");
    }
}

/// A misspelt variable in a deployment file would stop every node with exit code 2:
/// each one the files pass to a node names a real key.
#[test]
fn deployment_files_set_only_known_variables() {
    let keys = config_keys();
    assert!(
        keys.iter().any(|k| k == "cluster_secret_file"),
        "parsed keys: {keys:?}"
    );
    // Variables the files use for themselves rather than pass to a node.
    let not_for_nodes = [
        "SESSIONMESH_IMAGE",
        "SESSIONMESH_LB_IMAGE",
        "SESSIONMESH_APP_IMAGE",
    ];
    for file in [
        "Dockerfile",
        "compose.yaml",
        "compose.gateway.yaml",
        "deploy/kubernetes/statefulset.yaml",
        "deploy/kubernetes/gateway/sidecar.yaml",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
        let names = env_names(&text);
        assert!(!names.is_empty(), "{file} sets no SESSIONMESH_* variable");
        for name in names {
            if not_for_nodes.contains(&name.as_str()) {
                continue;
            }
            let key = name["SESSIONMESH_".len()..].to_ascii_lowercase();
            assert!(
                key == "config" || keys.contains(&key),
                "{file} sets {name}, which is no config key (known: {keys:?})"
            );
        }
    }
}

/// What the schemas cannot see: the manifests agree with each other and with how
/// sessionmesh leaves. Checked by a short Python program with PyYAML (a dependency
/// of kubernetes-validate), skipped like the schema test when it is missing.
const CROSS_CHECK: &str = r#"
import sys, yaml
docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]
kind = lambda k: [d for d in docs if d["kind"] == k]
sts, = kind("StatefulSet")
services = {s["metadata"]["name"]: s for s in kind("Service")}
secret, = kind("Secret")
pod = sts["spec"]["template"]["spec"]
c, = pod["containers"]
env = {e["name"]: e.get("value") for e in c["env"]}
def check(ok, what):
    if not ok:
        sys.exit("cross-check failed: " + what)
headless = services.get(sts["spec"]["serviceName"])
check(headless is not None, "serviceName names no Service")
check(headless["spec"].get("clusterIP") == "None", "the StatefulSet's service is not headless")
check(headless["spec"].get("publishNotReadyAddresses") is True, "the seed service hides pods that are not ready yet")
check(env["SESSIONMESH_SEEDS"].split(":")[0] == headless["metadata"]["name"], "the seeds are not the headless service")
check(pod.get("enableServiceLinks") is False, "service links would inject unknown SESSIONMESH_* variables")
check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness is not /readyz")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness is not /healthz")
ports = {p["name"] for p in c["ports"]}
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    check(c[probe]["httpGet"]["port"] in ports, probe + " names no container port")
for s in services.values():
    for p in s["spec"]["ports"]:
        check(p["targetPort"] in ports, s["metadata"]["name"] + " targets no container port")
secs = lambda text: int(text.rstrip("s"))
pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
leave = secs(env["SESSIONMESH_SHUTDOWN_GRACE"])
check(pod["terminationGracePeriodSeconds"] > pre_stop + leave, "no room for the preStop and the leave before SIGKILL")
vol, = [v for v in pod["volumes"] if v["name"] == "secrets"]
check(vol["secret"]["secretName"] == secret["metadata"]["name"], "the pods mount another secret than the example")
mount, = [m for m in c["volumeMounts"] if m["name"] == "secrets"]
for key in ("cookie_secret", "cluster_secret"):
    check(env["SESSIONMESH_%s_FILE" % key.upper()] == mount["mountPath"] + "/" + key, key + " is not read from the secret")
    check(key in secret["stringData"], "the example secret has no " + key)
print("cross-check passed")
"#;

#[test]
fn kubernetes_manifests_agree_with_each_other() {
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_yaml {
        let required = std::env::var("CONTAINER_TESTS_REQUIRED").is_ok_and(|v| v == "1");
        assert!(!required, "python3 with PyYAML is missing");
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: python3 with PyYAML is missing");
        return;
    }
    let files = manifests();
    let out = Command::new("python3")
        .args(["-c", CROSS_CHECK])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it does catch a mistake: a seed service that hides starting pods.
    let dir = std::env::temp_dir().join(format!("sessionmesh-cross-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let copy = dir.join(file.file_name().unwrap());
        std::fs::write(
            &copy,
            text.replace(
                "publishNotReadyAddresses: true",
                "publishNotReadyAddresses: false",
            ),
        )
        .unwrap();
        broken.push(copy);
    }
    let out = Command::new("python3")
        .args(["-c", CROSS_CHECK])
        .args(&broken)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the cross-check missed a hidden seed service"
    );
    let _ = std::fs::remove_dir_all(dir);
}
