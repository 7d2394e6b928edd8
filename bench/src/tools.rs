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
