//! One wrk run (`wrk -t1 -c<n> -d<d>`), or several at once, each with a generated
//! Lua script that sets the request (path, cookie) and, at the end, prints wrk's
//! whole latency histogram and error counts as one JSON line. Histograms of several
//! runs (rounds, or the three processes of a round-robin entry) then merge exactly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::stats::Histogram;

/// What one wrk process sends.
#[derive(Clone, Debug)]
pub struct WrkSpec {
    /// `http://host:port/path?query`
    pub url: String,
    pub connections: u32,
    pub duration: Duration,
    /// The `Cookie` header: none, one for every request, or several used in turn
    /// (one per request, round robin).
    pub cookies: Vec<String>,
}

/// wrk's socket-level and status errors. `status` counts responses with a status
/// of 400 or more; the others are connect/read/write errors and timeouts.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub status: u64,
    pub timeout: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }

    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.status += o.status;
        self.timeout += o.timeout;
    }
}

/// The outcome of one wrk process.
#[derive(Clone, Debug)]
pub struct WrkRun {
    pub duration: Duration,
    pub requests: u64,
    pub bytes: u64,
    pub errors: Errors,
    pub latency: Histogram,
}

impl WrkRun {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

#[derive(Deserialize)]
struct Dump {
    duration_us: u64,
    requests: u64,
    bytes: u64,
    errors: Errors,
    latency_us: Vec<(u64, u64)>,
}

/// A Lua long-bracket string literal holding `s`.
fn lua_string(s: &str) -> String {
    let mut level = 0;
    while s.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    format!("[{eq}[{s}]{eq}]")
}

fn script(spec: &WrkSpec) -> String {
    let mut lua = String::new();
    match spec.cookies.len() {
        0 => {}
        1 => lua.push_str(&format!(
            "wrk.headers[\"Cookie\"] = {}\n",
            lua_string(&spec.cookies[0])
        )),
        _ => {
            let list: Vec<String> = spec.cookies.iter().map(|c| lua_string(c)).collect();
            lua.push_str(&format!(
                "local cookies = {{{}}}\nlocal turn = 0\n\
                 request = function()\n  turn = turn % #cookies + 1\n  \
                 return wrk.format(nil, nil, {{[\"Cookie\"] = cookies[turn]}})\nend\n",
                list.join(", ")
            ));
        }
    }
    lua.push_str(
        r#"
done = function(summary, latency, requests)
  local parts = {}
  for i = 1, #latency do
    local value, count = latency(i)
    if count > 0 then
      parts[#parts + 1] = string.format("[%d,%d]", value, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
"#,
    );
    lua
}

fn script_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        "wrk-{}-{:016x}.lua",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Starts one wrk process (1 thread) and returns its outcome.
pub async fn run(spec: &WrkSpec, script_dir: &Path) -> anyhow::Result<WrkRun> {
    std::fs::create_dir_all(script_dir)?;
    let path = script_path(script_dir);
    std::fs::write(&path, script(spec))?;
    let seconds = spec.duration.as_secs_f64().ceil().max(1.0) as u64;
    let output = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{}", spec.connections)])
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(&path)
        .arg(&spec.url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk {} failed ({}): {}{}",
            spec.url,
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCHJSON "))
        .with_context(|| format!("wrk printed no result for {}:\n{stdout}", spec.url))?;
    let dump: Dump = serde_json::from_str(line).context("parsing wrk's result")?;
    Ok(WrkRun {
        duration: Duration::from_micros(dump.duration_us),
        requests: dump.requests,
        bytes: dump.bytes,
        errors: dump.errors,
        latency: Histogram::from_pairs(dump.latency_us),
    })
}

/// Runs every spec at the same time (one wrk process each).
pub async fn run_all(specs: &[WrkSpec], script_dir: &Path) -> anyhow::Result<Vec<WrkRun>> {
    let runs = futures_util::future::join_all(specs.iter().map(|s| run(s, script_dir))).await;
    runs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_survive_brackets() {
        assert_eq!(lua_string("a"), "[[a]]");
        assert_eq!(lua_string("x]]y"), "[=[x]]y]=]");
    }

    #[test]
    fn rotating_cookies_get_a_request_function() {
        let spec = WrkSpec {
            url: "http://127.0.0.1:1/".into(),
            connections: 1,
            duration: Duration::from_secs(1),
            cookies: vec!["a=1".into(), "a=2".into()],
        };
        let lua = script(&spec);
        assert!(lua.contains("request = function()"));
        assert!(lua.contains("[[a=2]]"));
    }
}
