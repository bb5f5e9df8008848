//! What the browser tests share: chromedriver and a headless Chromium (Debian's
//! `chromium` and `chromium-driver`, over WebDriver with fantoccini), waiting for what a
//! page shows, screenshots to `target/ui-screenshots/`, logging in, raw HTTP requests.
//!
//! `CHROMEDRIVER` and `CHROMIUM` name the binaries (default: `chromedriver` on PATH,
//! `/usr/bin/chromium`).

// Each test file that includes this module uses its own part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use scitq_tests::{bin_dir, poll};
use serde_json::json;

pub const SHOWN: Duration = Duration::from_secs(30);

/// chromedriver in its own process group, killed with it (Chromium included) on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let binary = std::env::var_os("CHROMEDRIVER").unwrap_or_else(|| "chromedriver".into());
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary:?} (Debian's chromium-driver; scripts/test installs it): {e}")
            });
        let driver = Driver { child, port };
        poll(Duration::from_secs(30), "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        driver
    }

    pub async fn browser(&self) -> Client {
        // fantoccini's TLS (unused on loopback) needs a process-wide provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                ],
            }),
        );
        ClientBuilder::rustls()
            .expect("a TLS client for the WebDriver connection")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session in headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub fn screenshots() -> PathBuf {
    let dir = bin_dir()
        .parent()
        .expect("the target dir")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save a screenshot");
}

/// Polls (async) until `probe` gives a value.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + SHOWN;
    let mut last;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn text_of(browser: &Client, css: &str) -> Result<String, String> {
    let element = browser
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("no {css}: {e}"))?;
    element.text().await.map_err(|e| e.to_string())
}

/// Waits until the element `css` shows `want`.
pub async fn shows(browser: &Client, css: &str, want: &str) -> String {
    eventually(&format!("{css} to show {want:?}"), || async {
        let text = text_of(browser, css).await?;
        if text.contains(want) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
}

pub async fn find(browser: &Client, css: &str) -> Element {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
}

/// Clicks `css`, finding it again if the page reloaded itself in between.
pub async fn click(browser: &Client, css: &str) {
    eventually(&format!("a click on {css}"), || async {
        let element = browser
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("no {css}: {e}"))?;
        element
            .click()
            .await
            .map_err(|e| format!("cannot click {css}: {e}"))
    })
    .await
}

/// A raw HTTP/1.1 exchange: the status line and headers, and the body.
pub fn http(port: u16, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to scitqd");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(request.as_bytes())
        .expect("send a request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read a response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

pub fn post(port: u16, path: &str, cookie: &str, body: &str) -> (String, String) {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

pub async fn log_in(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui/")).await.unwrap();
    let url = browser.current_url().await.unwrap();
    assert!(
        url.path().ends_with("/ui/login"),
        "not sent to log in: {url}"
    );
    let field = find(browser, "#token").await;
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    click(browser, "form.login button[type=submit]").await;
}
