//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver) with `fantoccini`.
//!
//! [`Browser::start`] starts chromedriver on a free loopback port and opens a session with a
//! profile of its own; a test that has no chromium or chromedriver installed skips with the
//! reason printed (`tests/run` installs both). Pages are waited on through WebDriver (an
//! element appears, a condition on the page holds), never by sleeping; every
//! [`Browser::screenshot`] is saved as `target/screenshots/<test>/<name>.png`.
//!
//! chromedriver listens on plain HTTP on loopback, so fantoccini runs without its TLS
//! features (no OpenSSL, no second TLS stack): the connector is hyper's HTTP one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long a page, an element or a condition is waited for.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a condition is looked at again while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A desktop window.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// A phone-sized window (CSS pixels of a common phone).
pub const PHONE: (u32, u32) = (390, 844);

/// Where Debian installs them (`chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless chromium with its chromedriver; both stop when it is dropped.
pub struct Browser {
    client: Client,
    driver: tokio::process::Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// `name` on `PATH`, else at its Debian path when that exists.
fn installed(name: &str, debian: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .chain([PathBuf::from(debian)])
        .find(|p| p.is_file())
}

/// Where the screenshots of `test` go: `target/screenshots/<test>/`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::bins::workspace_root().join("target"));
    target.join("screenshots").join(test)
}

impl Browser {
    /// A desktop-sized browser for `test`; `None` (with the reason printed) when chromium or
    /// chromedriver is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_sized(test, DESKTOP).await
    }

    /// A browser whose window is `(width, height)`.
    pub async fn start_sized(test: &str, (width, height): (u32, u32)) -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            installed("chromium", CHROMIUM),
            installed("chromedriver", CHROMEDRIVER),
        ) else {
            eprintln!(
                "skipped {test}: chromium and chromedriver are not both installed \
                 (apt-get install chromium chromium-driver; tests/run does it)"
            );
            return None;
        };
        let port = crate::net::free_port("127.0.0.1");
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", chromedriver.display()));
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_ready(&driver_url).await;
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities.as_object().unwrap().clone());
        let client = builder.connect(&driver_url).await.unwrap_or_else(|e| {
            panic!(
                "a chromium session through chromedriver: {e}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let shots = screenshot_dir(test);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Self {
            client,
            driver,
            shots,
            _profile: profile,
        })
    }

    /// The WebDriver client, for what this wrapper does not offer.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` (returns once the page has loaded).
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The address the browser is at.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// The text of the whole page.
    pub async fn text(&self) -> String {
        self.find("body").await.text().await.unwrap()
    }

    /// The element `css` selects, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "no {css:?} within {WAIT:?} ({e}) at {}\n{}",
                self.url().await,
                self.source().await
            ),
        }
    }

    /// Every element `css` selects now (without waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// Clicks the element `css` selects (waiting for it).
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Waits until `check` (asked of the page as it is now) gives a value; panics with the
    /// page after [`WAIT`]. Each look is a WebDriver command: nothing sleeps and hopes.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = check(self.client.clone()).await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: not within {WAIT:?} at {}\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the text of the element `css` selects contains `needle`; that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let css = css.to_owned();
        let needle = needle.to_owned();
        self.wait_until(&format!("{css:?} to say {needle:?}"), move |c| {
            let (css, needle) = (css.clone(), needle.clone());
            async move {
                let text = c.find(Locator::Css(&css)).await.ok()?.text().await.ok()?;
                text.contains(&needle).then_some(text)
            }
        })
        .await
    }

    /// Waits until the browser is at a URL whose path (and query) is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let path = path.to_owned();
        self.wait_until(&format!("the browser to be at {path}"), move |c| {
            let path = path.clone();
            async move {
                let url = c.current_url().await.ok()?;
                let at = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                (at == path).then_some(())
            }
        })
        .await
    }

    /// Resizes the window (e.g. to [`PHONE`]).
    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Saves a screenshot of the window as `<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The directory screenshots go to.
    pub fn screenshots(&self) -> &Path {
        &self.shots
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// Waits until chromedriver at `url` says it is ready. Polls: a starting process has no event
/// to wait on.
async fn wait_ready(url: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await
            && let Ok(status) = r.json::<serde_json::Value>().await
            && status["value"]["ready"] == true
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver at {url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
