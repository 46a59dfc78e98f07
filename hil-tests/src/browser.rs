//! Headless Chromium (Debian's `chromium`), driven over the DevTools protocol: open a page,
//! run JavaScript in it as a user's browser would, read the result.
//!
//! The browser runs in its own temporary profile and is killed with the [`Browser`].

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    page: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium (`$GATEHOUSE_CHROMIUM`, or `chromium` on the path) on a blank page.
    pub async fn launch() -> anyhow::Result<Self> {
        let program = std::env::var("GATEHOUSE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(&program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-background-timer-throttling",
                "--autoplay-policy=no-user-gesture-required",
                "--mute-audio",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program} (Debian package chromium)"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("{program} exited before listening for DevTools")
        })
        .await
        .with_context(|| format!("{program} did not start in {START_TIMEOUT:?}"))??;
        // Keep reading what it prints, so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "chromium", "{line}");
            }
        });
        let host = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .context("odd DevTools address")?;
        crate::harness::install_crypto_provider();
        let targets: Value = reqwest::get(format!("http://{host}/json/list"))
            .await?
            .json()
            .await?;
        let page_url = targets
            .as_array()
            .and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            })
            .context("Chromium has no page")?
            .to_owned();
        let (page, _) = tokio_tungstenite::connect_async(page_url.as_str()).await?;
        Ok(Self {
            _child: child,
            _profile: profile,
            page,
            next_id: 0,
        })
    }

    /// Calls a DevTools method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.page.send(Message::text(request.to_string())).await?;
        while let Some(message) = self.page.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"] != id {
                continue; // an event
            }
            if let Some(error) = reply.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(reply["result"].clone());
        }
        bail!("Chromium closed the page")
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({ "url": url })).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.evaluate("document.readyState").await?;
            if state == "complete" {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{url} did not load: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value; a thrown
    /// error or rejected promise is an error with the page's message.
    pub async fn evaluate(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            let message = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("an exception");
            bail!("the page threw: {message}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Signs in to the agent's LAN console, open in the page, as a guard would: the token
    /// typed into the form, the form submitted.
    pub async fn sign_in_to_console(&mut self, token: &str) -> anyhow::Result<()> {
        self.evaluate(&format!(
            "document.getElementById('token').value = {token:?}; \
             document.getElementById('sign-in').requestSubmit();"
        ))
        .await?;
        Ok(())
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page.
    pub async fn wait_until(&mut self, condition: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.evaluate(condition).await? != Value::Bool(true) {
            if tokio::time::Instant::now() > deadline {
                bail!("`{condition}` was not true within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
