//! The external tools the harness drives: `redis-server`/`redis-cli` (the peer's
//! store) and `wrk` (the load generator of DESIGN.md's reference figures).
//!
//! Missing ones are installed from Debian's packages when running as root with
//! apt-get (one `apt-get update`, then `apt-get install -y`); otherwise the harness
//! stops and says what to install.

use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// (command, Debian package)
const TOOLS: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("wrk", "wrk"),
];

fn found(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure every tool is on PATH, installing the missing ones if it can.
pub fn ensure() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(command, _)| !found(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && found("apt-get")) {
        bail!(
            "missing tools; install the Debian packages: apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("bench: installing {} (apt-get)", missing.join(" "));
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("apt-get {args:?}"))?;
        if !status.success() {
            bail!("apt-get {args:?} failed: {status}");
        }
        Ok(())
    };
    run(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    run(&install)?;
    for (command, package) in TOOLS {
        if !found(command) {
            bail!("{command} still missing after installing {package}");
        }
    }
    Ok(())
}

/// One line naming a tool's version, for the report.
pub fn version(command: &str, arg: &str) -> String {
    Command::new(command)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Where the gateway benchmark's Flask application lives (`bench/flask/`).
pub fn flask_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flask")
}

/// Checks that `python` has exactly the versions of `requirements` (lines
/// `name==version`), and installs them with its pip when it has not.
pub fn ensure_python_packages(python: &str, requirements: &std::path::Path) -> anyhow::Result<()> {
    // Exit status 0 when every pinned version is the installed one.
    const CHECK: &str = r##"
import sys, importlib.metadata as m
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name} {have} (want {want})")
print("; ".join(bad))
sys.exit(1 if bad else 0)
"##;
    let check = || {
        Command::new(python)
            .args(["-c", CHECK])
            .arg(requirements)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {python}"))
    };
    let first = check()?;
    if first.status.success() {
        return Ok(());
    }
    eprintln!(
        "bench: installing {} with pip ({})",
        requirements.display(),
        String::from_utf8_lossy(&first.stdout).trim()
    );
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if is_root() {
        pip.arg("--root-user-action=ignore");
    }
    let status = pip
        .arg("-r")
        .arg(requirements)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{python} -m pip install"))?;
    if !status.success() {
        bail!(
            "{python} -m pip install -r {} failed: {status}",
            requirements.display()
        );
    }
    let again = check()?;
    if !again.status.success() {
        bail!(
            "after pip install, still: {}",
            String::from_utf8_lossy(&again.stdout).trim()
        );
    }
    Ok(())
}

/// The Python interpreter's version and those of the gateway part's packages,
/// for the report.
pub fn python_versions(python: &str) -> String {
    const SHOW: &str = r#"
import sys, importlib.metadata as m
names = ["Flask", "Flask-Session", "redis", "msgspec", "gunicorn"]
print("; ".join(["Python " + sys.version.split()[0]] + [n + " " + m.version(n) for n in names]))
"#;
    Command::new(python)
        .args(["-c", SHOW])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
