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

    /// The whole page, not only the viewport (DevTools `Page.captureScreenshot`).
    async fn full_page_screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let size = self
            .client
            .execute(
                "return [document.documentElement.clientWidth, document.documentElement.scrollHeight];",
                vec![],
            )
            .await
            .expect("the page's size");
        let shot = self
            .client
            .issue_cmd(CdpCommand {
                cmd: "Page.captureScreenshot",
                params: json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
                }),
            })
            .await
            .expect("a full-page screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("the screenshot is base64");
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

/// The window sizes the dashboard must read well at: laptop and desktop widths
/// (1366 × 768 is the commonest laptop screen), a tablet in portrait and two
/// phones in portrait (an iPhone 12–15, 390 × 844 CSS px; a common Android, 360 × 800).
const VIEWPORTS: [Viewport; 8] = [
    Viewport::desktop(1024, 768),
    Viewport::desktop(1280, 800),
    Viewport::desktop(1366, 768),
    Viewport::desktop(1440, 900),
    Viewport::desktop(1920, 1080),
    Viewport::handheld("tablet", 768, 1024),
    Viewport::handheld("phone", 390, 844),
    Viewport::handheld("phone", 360, 800),
];

/// The members table's columns, in order: every one must be on screen.
const MEMBER_COLUMNS: [&str; 11] = [
    "Node",
    "Status",
    "Started",
    "Addresses",
    "Ring share",
    "Fingerprint",
    "Owned",
    "Replicas",
    "Req/s",
    "Fwd/s",
    "Err/s",
];

#[derive(Clone, Copy, Debug)]
struct Viewport {
    width: u32,
    height: u32,
    /// A phone or tablet (`Some` of which): DevTools' mobile emulation, with a
    /// touch screen's overlay scroll bars, the page's `<meta name="viewport">`
    /// honoured and two device pixels per CSS pixel.
    handheld: Option<&'static str>,
}

impl Viewport {
    const fn desktop(width: u32, height: u32) -> Viewport {
        Viewport {
            width,
            height,
            handheld: None,
        }
    }

    const fn handheld(kind: &'static str, width: u32, height: u32) -> Viewport {
        Viewport {
            width,
            height,
            handheld: Some(kind),
        }
    }

    /// Sets the page's viewport to exactly this size with DevTools device-metrics
    /// emulation (`Emulation.setDeviceMetricsOverride`), whatever size the
    /// headless window has: the layout viewport is `width` CSS px (on the
    /// desktop less a 15 px vertical scroll bar; `window.innerWidth` is `width`).
    async fn apply(&self, browser: &Browser) {
        browser
            .client
            .issue_cmd(CdpCommand {
                cmd: "Emulation.setDeviceMetricsOverride",
                params: json!({
                    "width": self.width,
                    "height": self.height,
                    "deviceScaleFactor": if self.handheld.is_some() { 2 } else { 1 },
                    "mobile": self.handheld.is_some(),
                }),
            })
            .await
            .expect("DevTools device-metrics emulation");
    }

    fn name(&self) -> String {
        match self.handheld {
            Some(kind) => format!("{}x{}-{kind}", self.width, self.height),
            None => format!("{}x{}", self.width, self.height),
        }
    }
}

/// Measures what overflows the viewport horizontally, in one script run.
///
/// - the page: `scrollWidth` of the document against the viewport's width
///   without a vertical scroll bar (`documentElement.clientWidth`, where a
///   horizontal scroll bar appears), and `innerWidth` (with it);
/// - the key elements, each of which must be drawn, inside the viewport:
///   every members-table column's label (a header cell, or a label per row
///   where the table is laid out as one card a member), every cell of every
///   member's row, the ring picture and its legend, the summary cards;
/// - any other element drawn past the viewport's left or right edge that no
///   on-screen horizontal scroll container holds;
/// - any members-table cell whose content is cut off (wider than its box).
async fn measure_overflow(browser: &Browser) -> Option<Value> {
    browser
        .client
        .execute(
            r##"
            const columns = arguments[0];
            const doc = document.documentElement;
            const right = doc.clientWidth;
            const drawn = (el) => {
                const r = el.getBoundingClientRect();
                const style = getComputedStyle(el);
                return r.width > 0 && r.height > 0 && style.visibility !== "hidden";
            };
            const inside = (el) => {
                const r = el.getBoundingClientRect();
                return r.left >= -0.5 && r.right <= right + 0.5;
            };
            const box = (el) => {
                const r = el.getBoundingClientRect();
                return `${Math.round(r.left)}..${Math.round(r.right)}`;
            };
            const describe = (el) => {
                let name = el.tagName.toLowerCase();
                if (el.id) name += "#" + el.id;
                else if (el.classList.length) name += "." + [...el.classList].join(".");
                const text = (el.textContent || "").trim().slice(0, 24);
                return text ? `${name} "${text}"` : name;
            };
            const problems = [];
            const key = (what, el) => {
                if (!el) problems.push(`${what}: missing`);
                else if (!drawn(el)) problems.push(`${what}: not drawn`);
                else if (!inside(el)) problems.push(`${what}: at x ${box(el)}, viewport 0..${right}`);
            };
            const table = document.getElementById("members");
            for (const label of columns) {
                const shown = [...table.querySelectorAll("*")].filter(
                    (el) => el.children.length === 0 && el.textContent.trim() === label && drawn(el));
                if (!shown.length) problems.push(`column ${label}: no label drawn`);
                for (const el of shown) key(`column ${label} label`, el);
            }
            const rows = [...table.querySelectorAll("tbody tr[data-node]")];
            for (const row of rows) {
                if (row.cells.length !== columns.length)
                    problems.push(`row ${row.dataset.node}: ${row.cells.length} cells`);
                [...row.cells].forEach((cell, i) => {
                    key(`row ${row.dataset.node} ${columns[i]}`, cell);
                    if (cell.scrollWidth > cell.clientWidth + 1)
                        problems.push(`row ${row.dataset.node} ${columns[i]}: content cut off (${cell.scrollWidth} px in ${cell.clientWidth} px)`);
                });
            }
            key("ring picture", document.getElementById("ring-svg"));
            const ring = document.getElementById("ring-svg").getBoundingClientRect();
            document.querySelectorAll("#ring-legend li").forEach((li) => key(`ring legend ${li.dataset.node}`, li));
            document.querySelectorAll(".card").forEach((card) => key(`card ${card.querySelector(".label").textContent}`, card));
            key("connection status", document.getElementById("conn"));
            const scrollable = (el) => {
                for (let a = el.parentElement; a; a = a.parentElement) {
                    const o = getComputedStyle(a).overflowX;
                    if ((o === "auto" || o === "scroll") && a !== doc && a !== document.body && inside(a)) return true;
                }
                return false;
            };
            const strays = [...document.body.querySelectorAll("*")]
                .filter((el) => drawn(el) && !inside(el) && !scrollable(el))
                .map((el) => `${describe(el)} at x ${box(el)}`);
            return {
                innerWidth: window.innerWidth,
                clientWidth: right,
                scrollWidth: doc.scrollWidth,
                bodyScrollWidth: document.body.scrollWidth,
                ringWidth: Math.round(ring.width),
                rows: rows.length,
                problems,
                strays: strays.slice(0, 20),
                strayCount: strays.length,
            };
            "##,
            vec![json!(MEMBER_COLUMNS)],
        )
        .await
        .ok()
}

/// Numbers in every member's Owned … Err/s cells (rates need two polls).
async fn member_numbers_shown(browser: &Browser) -> Option<bool> {
    browser
        .client
        .execute(
            r##"
            const rows = [...document.querySelectorAll("#members tbody tr[data-node]")];
            return rows.length === 3 && rows.every((row) =>
                [...row.cells].slice(6).every((cell) => /\d/.test(cell.innerText)));
            "##,
            vec![],
        )
        .await
        .ok()?
        .as_bool()
}

/// The dashboard fits the window, from a phone to a wide screen.
///
/// Three nodes with the Kubernetes StatefulSet's names and live traffic, and a
/// fourth (the real binary) killed with SIGKILL so that "Down or gone" lists it;
/// 12 sessions, reads sent to every node (so some are forwarded). node1's
/// dashboard at each of [`VIEWPORTS`] (set through DevTools device-metrics
/// emulation), once it shows numbers in every member's Owned … Err/s cells:
///
/// - the page is no wider than the viewport: `scrollWidth` of the document is
///   at most `clientWidth` (no horizontal scroll bar), and on a phone or tablet
///   Chrome need not zoom out (`innerWidth` stays the screen's width);
/// - every members-table column label, every cell, the ring picture, the
///   legend and the cards are inside the viewport; no cell's content is cut
///   off; nothing else is drawn past the viewport's edges;
/// - the ring picture stays at least 200 px wide (legible on a phone).
///
/// Screenshots: `target/browser/dashboard-fit-<width>x<height>[-phone|-tablet].png`
/// (what the window shows) and `…-full.png` (the whole page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_fits_the_window_from_phone_to_wide_screen() {
    let Some(browser) = Browser::start("dashboard-fit").await else {
        return;
    };
    // Pod names as the Kubernetes StatefulSet names them (sessionmesh-0, ...);
    // the dead member stays listed for the whole test.
    let cluster = Cluster::start_with(3, |config| {
        let n: u32 = config
            .node_id
            .trim_start_matches("node")
            .parse()
            .unwrap_or(1);
        config.node_id = format!("sessionmesh-{}", n - 1);
        config.dead_node_grace = std::time::Duration::from_secs(600);
    })
    .await;
    let three: Vec<String> = (0..3).map(|i| cluster.id(i)).collect();
    browser
        .client
        .goto(&cluster.url(0, "/dashboard"))
        .await
        .expect("the dashboard loads");
    let seeds = vec![cluster.nodes[0].addrs().gossip.to_string()];
    let child = ChildNode::spawn("sessionmesh-3", &cluster.secrets, &seeds, &[]);
    wait_for("sessionmesh-3 on the ring", WAIT, || async {
        let state = dashboard_state(&browser).await?;
        (names(&state, "ring").len() == 4).then_some(())
    })
    .await;
    child.signal("KILL");
    wait_for("sessionmesh-3 listed as down", WAIT, || async {
        let state = dashboard_state(&browser).await?;
        (names(&state, "members") == three
            && names(&state, "ring") == three
            && names(&state, "gone") == ["sessionmesh-3"])
        .then_some(())
    })
    .await;
    drop(child);

    let http = common::client();
    let mut cookies = Vec::new();
    for i in 0..12 {
        let login = http
            .get(cluster.url(i % 3, &format!("/login?name=user{i}")))
            .send()
            .await
            .expect("login");
        cookies.push(common::set_cookie(&login, "SESSION").expect("a cookie"));
    }
    // Steady reads on every node while the browser looks, so that the rate
    // columns show live figures; stopped before the cluster shuts down.
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i, "/")).collect();
    let traffic = tokio::spawn(async move {
        loop {
            for cookie in &cookies {
                for url in &urls {
                    let _ = http.get(url).header("cookie", cookie).send().await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for viewport in VIEWPORTS {
        viewport.apply(&browser).await;
        // Fresh figures drawn at this size: two more repaints, and numbers in
        // every member's Owned … Err/s cells.
        let before = dashboard_state(&browser)
            .await
            .map_or(0, |s| s["updates"].as_u64().unwrap_or(0));
        wait_for(
            &format!("the dashboard to show live figures at {}", viewport.name()),
            WAIT,
            || async {
                let state = dashboard_state(&browser).await?;
                (state["updates"].as_u64()? >= before + 2
                    && state["owned"] == "12"
                    && names(&state, "ring") == three
                    && names(&state, "gone") == ["sessionmesh-3"]
                    && member_numbers_shown(&browser).await?)
                    .then_some(())
            },
        )
        .await;
        let m = measure_overflow(&browser)
            .await
            .expect("the measurement runs");
        browser
            .screenshot(&format!("dashboard-fit-{}.png", viewport.name()))
            .await;
        browser
            .full_page_screenshot(&format!("dashboard-fit-{}-full.png", viewport.name()))
            .await;
        let line = format!(
            "{}: innerWidth {} clientWidth {} page scrollWidth {} ring {} px, {} rows; \
             problems {}; {} elements off-screen {}",
            viewport.name(),
            m["innerWidth"],
            m["clientWidth"],
            m["scrollWidth"],
            m["ringWidth"],
            m["rows"],
            m["problems"],
            m["strayCount"],
            m["strays"],
        );
        eprintln!("{line}");
        let width = u64::from(viewport.width);
        let client = m["clientWidth"].as_u64().unwrap_or(0);
        // The emulation took: the layout viewport is the requested width, less
        // a classic vertical scroll bar on the desktop (a phone's overlays).
        if viewport.handheld.is_some() {
            assert_eq!(client, width, "the emulated handheld: {line}");
        } else {
            assert_eq!(
                m["innerWidth"].as_u64(),
                Some(width),
                "the emulated window: {line}"
            );
        }
        let fits = m["scrollWidth"].as_u64().is_some_and(|w| w <= client)
            && m["innerWidth"].as_u64() == Some(width)
            && m["problems"].as_array().is_some_and(Vec::is_empty)
            && m["strayCount"] == 0
            && m["ringWidth"].as_u64().is_some_and(|w| w >= 200)
            && m["rows"] == 3;
        if !fits {
            failures.push(line.clone());
        }
        report.push(line);
    }
    traffic.abort();
    let _ = traffic.await;
    browser.close().await;
    cluster.shutdown().await;
    assert!(
        failures.is_empty(),
        "the dashboard does not fit at {} of {} sizes:\n{}\n\nall sizes:\n{}",
        failures.len(),
        VIEWPORTS.len(),
        failures.join("\n"),
        report.join("\n")
    );
}
