//! `gatehouse-edge claim` as an installer runs it: where the code comes from, what `--help`
//! says, and that the code goes to the relay and nowhere else, whatever the environment says
//! about proxies.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const CODE: &str = "claim-SECRET-c11f00";

/// Every variable that could send the request through a proxy.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Every proxy variable, set to `proxy`.
fn proxy_environment(proxy: &str) -> [(&'static str, String); 6] {
    PROXY_VARIABLES.map(|name| (name, proxy.to_owned()))
}

/// A stand-in for the relay's claim endpoint: records the codes it receives and refuses them.
async fn relay() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new()
        .route(
            "/api/v1/claim",
            post(
                |State(received): State<Arc<Mutex<Vec<String>>>>,
                 Json(body): Json<serde_json::Value>| async move {
                    let code = body["code"].as_str().unwrap_or_default().to_owned();
                    received
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(code);
                    (
                        StatusCode::FORBIDDEN,
                        Json(serde_json::json!({ "error": "claim code is invalid" })),
                    )
                },
            ),
        )
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(axum::serve(listener, router).into_future());
    Ok((url, received))
}

/// A proxy that records what it is sent and answers nothing.
async fn proxy() -> anyhow::Result<(String, Arc<Mutex<Vec<u8>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let read = socket.read(&mut buffer).await.unwrap_or(0);
            record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&buffer[..read]);
        }
    });
    Ok((url, seen))
}

/// Runs `gatehouse-edge` with `args`, the environment `env` (on top of one without proxy
/// settings) and `stdin`.
async fn agent(args: &[&str], env: &[(&str, String)], stdin: &str) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse-edge"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in PROXY_VARIABLES
        .into_iter()
        .chain(["NO_PROXY", "no_proxy", "GATEHOUSE_CLAIM_CODE"])
    {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    let mut child = command.spawn().context("cannot run gatehouse-edge")?;
    let mut input = child.stdin.take().context("no stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    Ok(child.wait_with_output().await?)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_code_comes_from_stdin_or_the_environment_and_never_goes_through_a_proxy()
-> anyhow::Result<()> {
    let (relay, received) = relay().await?;
    let (proxy, proxied) = proxy().await?;
    let folder = tempfile::tempdir()?;
    let dir = folder.path().join("identity");
    let dir = dir
        .to_str()
        .context("a temporary folder that is not UTF-8")?;
    let proxies = proxy_environment(&proxy);

    let from_stdin = agent(
        &["claim", "--relay", &relay, "--code", "-", "--dir", dir],
        &proxies,
        &format!("{CODE}\n"),
    )
    .await?;
    let from_env = agent(
        &["claim", "--relay", &relay, "--dir", dir],
        &[
            &proxies[..],
            &[("GATEHOUSE_CLAIM_CODE", format!("{CODE}-env"))],
        ]
        .concat(),
        "",
    )
    .await?;

    for output in [&from_stdin, &from_env] {
        assert!(!output.status.success());
        let stderr = stderr(output);
        assert!(
            stderr.contains("the relay refused the claim code"),
            "{stderr}"
        );
        assert!(!stderr.contains(CODE), "the code was shown: {stderr}");
    }
    let received = received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(received, [CODE.to_owned(), format!("{CODE}-env")]);
    let proxied = proxied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        proxied.is_empty(),
        "the proxy got: {}",
        String::from_utf8_lossy(&proxied)
    );
    Ok(())
}

#[tokio::test]
async fn help_tells_where_the_code_may_come_from_and_never_shows_it() -> anyhow::Result<()> {
    let help = agent(
        &["claim", "--help"],
        &[("GATEHOUSE_CLAIM_CODE", CODE.to_owned())],
        "",
    )
    .await?;
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in [
        "--code <CODE|->",
        "standard input",
        "GATEHOUSE_CLAIM_CODE",
        "ps",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from: {text}");
    }
    assert!(!text.contains(CODE), "--help shows the code: {text}");

    let empty = agent(
        &[
            "claim",
            "--relay",
            "http://127.0.0.1:9",
            "--code",
            "-",
            "--dir",
            "/x",
        ],
        &[],
        "",
    )
    .await?;
    assert!(!empty.status.success());
    assert_eq!(
        stderr(&empty).trim(),
        "claim failed: --code -: no claim code on the first line of standard input"
    );
    Ok(())
}
