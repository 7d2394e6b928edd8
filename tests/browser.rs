//! A real browser against real nodes: headless Chromium driven through
//! chromedriver (Debian's `chromium` and `chromium-driver`, installed by
//! `.ci/run`) over WebDriver.
//!
//! Where chromium or chromedriver is missing the tests say so and skip, except
//! under CI (`CI` set), where a missing browser is a failure: CI installs it.
//! Dashboard screenshots land in `target/browser/` for people to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{wait_for, ChildNode, Cluster, WAIT};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where the screenshots go: `target/browser/`.
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("browser"))
        .unwrap_or_else(|| PathBuf::from("target/browser"));
    std::fs::create_dir_all(&dir).expect("target/browser can be created");
    dir
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A chromedriver child and a WebDriver session with headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a browser, or `None` (with the reason printed)
    /// where they are not installed.
    async fn start(test: &str) -> Option<Browser> {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = find_program(&["chromedriver"]);
        let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
            let message = "chromium and chromedriver are needed for the browser tests \
                           (Debian: apt-get install chromium chromium-driver)";
            if std::env::var_os("CI").is_some() {
                panic!("{message}; CI installs them, so this is a failure");
            }
            eprintln!("SKIPPED {test}: {message}");
            return None;
        };
        let log = artefacts().join(format!("chromedriver-{test}.log"));
        // chromedriver takes no port 0: pick a free port by binding and releasing
        // it, and try again if another process takes it in between.
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let url = format!("http://127.0.0.1:{port}");
            let http = common::client();
            let ready = wait_for("chromedriver to be ready", WAIT, || {
                let exited = driver.try_wait().ok().flatten().is_some();
                let status = http.get(format!("{url}/status")).send();
                async move {
                    if exited {
                        return Some(false);
                    }
                    let body: Value = status.await.ok()?.json().await.ok()?;
                    (body["value"]["ready"] == true).then_some(true)
                }
            })
            .await;
            if !ready {
                let _ = driver.wait();
                continue;
            }
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".to_owned(),
                json!({
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1440,1000",
                        "--no-first-run", "--no-default-browser-check",
                    ],
                }),
            );
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let client = ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url)
                .await;
            match client {
                Ok(client) => return Some(Browser { client, driver }),
                Err(error) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    panic!(
                        "chromedriver could not start chromium: {error} (see {})",
                        log.display()
                    );
                }
            }
        }
        panic!("chromedriver did not start on a free port in 5 tries");
    }

    async fn text(&self, css: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Loads `url` and waits until the element `css` shows `expected`.
    async fn expect_text(&self, url: &str, css: &str, expected: &str) {
        self.client.goto(url).await.expect("the page loads");
        wait_for(
            &format!("{css} to read {expected:?} on {url}"),
            WAIT,
            || async { (self.text(css).await?.trim() == expected).then_some(()) },
        )
        .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = artefacts().join(name);
        std::fs::write(&path, png).expect("the screenshot is saved");
        eprintln!("screenshot: {}", path.display());
        path
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After `close` this is a no-op; after a failed assertion it stops the driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The Ktor example's flow in a real browser, with the browser's own cookie.
///
/// 1. on node1's `/`, type a name into the login form and submit it: the page
///    (after the redirect) greets `Hello, Ada`; the browser holds an HttpOnly
///    `SESSION` cookie for 127.0.0.1 (cookies ignore ports);
/// 2. load `/` on node2 and node3: both greet Ada with that cookie;
/// 3. press "Log out" on node3; then `/` on every node greets a Guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_on_one_node_and_is_known_on_all() {
    let Some(browser) = Browser::start("login").await else {
        return;
    };
    let cluster = Cluster::start(3).await;

    browser
        .expect_text(&cluster.url(0, "/"), "#greeting", "Hello, Guest")
        .await;
    let name = browser
        .client
        .find(Locator::Css("input[name=name]"))
        .await
        .expect("the login form");
    name.send_keys("Ada").await.expect("typing works");
    browser
        .client
        .find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await
        .expect("the login button")
        .click()
        .await
        .expect("clicking works");
    wait_for("the greeting after logging in", WAIT, || async {
        (browser.text("#greeting").await?.trim() == "Hello, Ada").then_some(())
    })
    .await;
    let cookie = browser
        .client
        .get_named_cookie("SESSION")
        .await
        .expect("the browser holds the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");

    for i in [1, 2] {
        browser
            .expect_text(&cluster.url(i, "/"), "#greeting", "Hello, Ada")
            .await;
        let served_by = browser.text("#served-by").await.unwrap_or_default();
        assert!(
            (0..3).any(|n| cluster.id(n) == served_by),
            "served by a member: {served_by}"
        );
    }
    browser.screenshot("greeting-node3.png").await;

    browser
        .client
        .find(Locator::Css("form[action='/logout'] button"))
        .await
        .expect("the logout button")
        .click()
        .await
        .expect("clicking works");
    wait_for("the home page after logging out", WAIT, || async {
        (browser.text("#greeting").await?.trim() == "Hello, Guest").then_some(())
    })
    .await;
    for i in 0..3 {
        browser
            .expect_text(&cluster.url(i, "/"), "#greeting", "Hello, Guest")
            .await;
    }
    browser.close().await;
    cluster.shutdown().await;
}

/// What the dashboard shows, read in one script run (the page re-renders every
/// second, so element handles would go stale).
async fn dashboard_state(browser: &Browser) -> Option<Value> {
    browser
        .client
        .execute(
            r##"
            const rows = (css) => [...document.querySelectorAll(css)].map((tr) => tr.dataset.node);
            return {
                members: rows("#members tbody tr[data-node]"),
                ring: rows("#ring-legend li[data-node]"),
                gone: rows("#gone tr[data-node]"),
                rps: document.getElementById("c-rps").textContent,
                owned: document.getElementById("c-sessions").textContent,
                viewer: document.getElementById("viewer").textContent,
                updates: Number(document.body.dataset.updates || 0),
            };
            "##,
            vec![],
        )
        .await
        .ok()
}

fn names(state: &Value, key: &str) -> Vec<String> {
    let mut names: Vec<String> = state[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The dashboard follows the cluster live.
///
/// 1. three nodes, some traffic (logins, forwarded reads); open node1's
///    dashboard: three members, three arcs on the ring, a request rate;
/// 2. a fourth node (the real binary) joins: it appears in the table and on the ring;
/// 3. kill -9 it: it leaves the table and the ring and is listed as down;
///
/// with a screenshot at each step, in the light and the dark colour scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_members_join_and_die() {
    let Some(browser) = Browser::start("dashboard").await else {
        return;
    };
    let cluster = Cluster::start(3).await;
    let http = common::client();
    for i in 0..12 {
        let login = http
            .get(cluster.url(i % 3, &format!("/login?name=user{i}")))
            .send()
            .await
            .expect("login");
        let cookie = common::set_cookie(&login, "SESSION").expect("a cookie");
        for j in 0..3 {
            http.get(cluster.url(j, "/"))
                .header("cookie", &cookie)
                .send()
                .await
                .expect("a page");
        }
    }

    browser
        .client
        .goto(&cluster.url(0, "/dashboard"))
        .await
        .expect("the dashboard loads");
    let three: Vec<String> = (0..3).map(|i| cluster.id(i)).collect();
    wait_for(
        "three members, a ring and rates on the dashboard",
        WAIT,
        || async {
            let state = dashboard_state(&browser).await?;
            (names(&state, "members") == three
                && names(&state, "ring") == three
                && state["rps"] != "–"
                && state["owned"] == "12"
                && state["viewer"] == cluster.id(0).as_str())
            .then_some(())
        },
    )
    .await;
    browser.screenshot("dashboard-3-nodes.png").await;

    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    let child = ChildNode::spawn("node4", &cluster.secrets, &seeds, &[]);
    let mut four = three.clone();
    four.push("node4".to_owned());
    wait_for("node4 to appear on the dashboard", WAIT, || async {
        let state = dashboard_state(&browser).await?;
        (names(&state, "members") == four && names(&state, "ring") == four).then_some(())
    })
    .await;
    browser.screenshot("dashboard-4-nodes.png").await;

    child.signal("KILL");
    wait_for(
        "node4 to leave the table and be listed as down",
        WAIT,
        || async {
            let state = dashboard_state(&browser).await?;
            (names(&state, "members") == three
                && names(&state, "ring") == three
                && names(&state, "gone") == ["node4"])
            .then_some(())
        },
    )
    .await;
    browser.screenshot("dashboard-node-down.png").await;

    // The same page in the dark colour scheme (DevTools media emulation).
    let dark = browser
        .client
        .issue_cmd(CdpCommand {
            cmd: "Emulation.setEmulatedMedia",
            params: json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        })
        .await;
    if dark.is_ok() {
        let before = dashboard_state(&browser)
            .await
            .map_or(0, |s| s["updates"].as_u64().unwrap_or(0));
        wait_for("a repaint in the dark scheme", WAIT, || async {
            let state = dashboard_state(&browser).await?;
            (state["updates"].as_u64()? > before + 1).then_some(())
        })
        .await;
        browser.screenshot("dashboard-dark.png").await;
    } else {
        eprintln!("no dark-scheme screenshot: {dark:?}");
    }

    drop(child);
    browser.close().await;
    cluster.shutdown().await;
}

/// chromedriver's DevTools passthrough (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct CdpCommand {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params}).to_string();
        (reqwest::Method::POST, Some(body))
    }
}
