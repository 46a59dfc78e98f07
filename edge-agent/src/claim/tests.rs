//! Claims against an in-test relay on 127.0.0.1 that keeps the contract of
//! `POST /api/v1/claim` and signs with the relay's own fleet CA (`gatehouse_relay::pki`), over
//! plain http or TLS; some of its answers are wrong on purpose.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use axum::{Json, Router};
use gatehouse_protocol::ApplianceId;
use gatehouse_relay::pki::{FleetCa, IssuedCert, Validity, new_key_and_csr};
use rcgen::{KeyPair, PublicKeyData as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::config::Config;

const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A code the test relay accepts once. Long and distinctive, so a leak is easy to find.
const CODE: &str = "claim-SECRET-7f3a9c";
const OTHER_CODE: &str = "claim-SECRET-2b8e41";

/// The key a claim stages before it sends anything (see `identity`).
const STAGED_KEY: &str = "appliance.key.new";

/// The site config the tests append to.
const SITE: &str = "[site]\nid = \"test-site\"\nname = \"Test\"\n\n[api]\nlisten = \"127.0.0.1:0\"";

/// How the test relay answers a valid code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// As the contract says.
    Honest,
    /// A certificate for a key of its own.
    OtherKey,
    /// A certificate whose CN is another appliance's.
    OtherCn,
    /// A certificate from another CA than the one in `ca_pem`.
    OtherCa,
    /// 400, as the real relay answers a bad CSR.
    RefuseCsr,
    /// 503, as when the relay cannot sign.
    Unavailable,
    /// 200 with something that is not JSON.
    Garbage,
}

struct TestRelay {
    ca: FleetCa,
    answer: Answer,
    codes: Mutex<HashSet<String>>,
    claimed: AtomicU32,
}

impl TestRelay {
    fn new(answer: Answer) -> anyhow::Result<Arc<TestRelay>> {
        Ok(Arc::new(TestRelay {
            ca: FleetCa::generate("test fleet CA")?,
            answer,
            codes: Mutex::new([CODE, OTHER_CODE].map(str::to_owned).into()),
            claimed: AtomicU32::new(0),
        }))
    }

    fn unspent(&self, code: &str) -> bool {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(code)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    code: String,
    csr_pem: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn handle_claim(
    State(relay): State<Arc<TestRelay>>,
    Json(body): Json<ClaimBody>,
) -> Response {
    let spent = relay
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&body.code);
    if !spent {
        return error(
            StatusCode::FORBIDDEN,
            "claim code is invalid, used or expired",
        );
    }
    match answer(&relay, &body.csr_pem) {
        Ok(response) => response,
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    }
}

fn answer(relay: &TestRelay, csr_pem: &str) -> anyhow::Result<Response> {
    let number = relay.claimed.fetch_add(1, Ordering::SeqCst) + 1;
    let appliance = ApplianceId::new(format!("app-{number}"))?;
    let validity = Validity::starting_now(DAY);
    let certificate = match relay.answer {
        Answer::Honest => match relay.ca.sign_csr(csr_pem, &appliance, validity) {
            Ok(certificate) => certificate,
            Err(refused) => return Ok(error(StatusCode::BAD_REQUEST, &refused.to_string())),
        },
        Answer::OtherKey => {
            let csr = new_key_and_csr("intruder")?.csr_pem;
            relay.ca.sign_csr(&csr, &appliance, validity)?
        }
        Answer::OtherCn => relay
            .ca
            .sign_csr(csr_pem, &ApplianceId::new("app-other")?, validity)?,
        Answer::OtherCa => {
            FleetCa::generate("another CA")?.sign_csr(csr_pem, &appliance, validity)?
        }
        Answer::RefuseCsr => {
            let refused = relay
                .ca
                .sign_csr("not a CSR", &appliance, validity)
                .err()
                .context("garbage was signed")?;
            return Ok(error(StatusCode::BAD_REQUEST, &refused.to_string()));
        }
        Answer::Unavailable => {
            return Ok(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the fleet CA is not loaded",
            ));
        }
        Answer::Garbage => return Ok((StatusCode::OK, "<html>hello</html>").into_response()),
    };
    Ok(Json(json!({
        "appliance_id": appliance.as_str(),
        "certificate_pem": certificate,
        "ca_pem": relay.ca.cert_pem(),
        "broker": { "host": "broker.example.com", "port": 8883 },
    }))
    .into_response())
}

fn router(relay: Arc<TestRelay>) -> Router {
    Router::new()
        .route("/api/v1/claim", post(handle_claim))
        .with_state(relay)
}

/// Serves `relay` over plain http on 127.0.0.1; its base URL.
async fn serve(relay: &Arc<TestRelay>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, router(relay.clone())).into_future());
    Ok(format!("http://{address}"))
}

/// Accepts TLS connections on a TCP listener (handshakes one at a time: enough for tests).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves `relay` over HTTPS on 127.0.0.1 with `server` (a certificate for 127.0.0.1), in
/// TLS `version`; its base URL.
async fn serve_tls(
    relay: &Arc<TestRelay>,
    server: &IssuedCert,
    version: &'static rustls::SupportedProtocolVersion,
) -> anyhow::Result<String> {
    let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(gatehouse_transport::provider())
        .with_protocol_versions(&[version])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let listener = TlsListener {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let address = axum::serve::Listener::local_addr(&listener)?;
    tokio::spawn(axum::serve(listener, router(relay.clone())).into_future());
    Ok(format!("https://{address}"))
}

fn options(relay: &str, code: &str, dir: &Path) -> anyhow::Result<ClaimOptions> {
    Ok(ClaimOptions {
        relay: relay.to_owned(),
        code: code.parse().map_err(anyhow::Error::msg)?,
        dir: dir.to_owned(),
        ca_file: None,
        config: None,
        force: false,
    })
}

/// An honest relay served over plain http, its base URL, and a folder for the appliance.
async fn honest_relay() -> anyhow::Result<(Arc<TestRelay>, String, tempfile::TempDir)> {
    let relay = TestRelay::new(Answer::Honest)?;
    let url = serve(&relay).await?;
    Ok((relay, url, tempfile::tempdir()?))
}

/// A site config holding `text` in `folder`, and options to claim from `url` into
/// `folder/identity` and append to it; the config's path and the options.
fn with_site_config(
    url: &str,
    folder: &Path,
    text: &str,
) -> anyhow::Result<(PathBuf, ClaimOptions)> {
    let site = folder.join("site.toml");
    fs::write(&site, text)?;
    let mut claim_options = options(url, CODE, &folder.join("identity"))?;
    claim_options.config = Some(site.clone());
    Ok((site, claim_options))
}

/// The contents of `files`, in order.
fn contents(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(files.iter().map(fs::read).collect::<Result<Vec<_>, _>>()?)
}

/// Claims from `url` into `dir`; the identity's files (key, certificate, CA) and their
/// contents.
async fn claimed_identity(url: &str, dir: &Path) -> anyhow::Result<([PathBuf; 3], Vec<Vec<u8>>)> {
    claim(&options(url, CODE, dir)?).await?;
    let files = [KEY_FILE, CERT_FILE, CA_FILE].map(|name| dir.join(name));
    let before = contents(&files)?;
    Ok((files, before))
}

/// The claim's error, checked to hold neither code.
async fn claim_error(options: &ClaimOptions) -> anyhow::Result<ClaimError> {
    let Err(error) = claim(options).await else {
        bail!("the claim succeeded");
    };
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(
            !shown.contains(CODE) && !shown.contains(OTHER_CODE),
            "the code leaked: {shown}"
        );
    }
    Ok(error)
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

/// The certificate in `cert_file` is for the key in `key_file`.
fn certifies(cert_file: &Path, key_file: &Path) -> anyhow::Result<bool> {
    let key = KeyPair::from_pem(&fs::read_to_string(key_file)?)?;
    let certificate = CertificateDer::from_pem_file(cert_file)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())?;
    Ok(parsed.public_key().raw == key.subject_public_key_info().as_slice())
}

#[tokio::test]
async fn a_claim_over_https_writes_a_usable_identity_and_appends_the_uplink() -> anyhow::Result<()>
{
    let relay = TestRelay::new(Answer::Honest)?;
    let web_ca = FleetCa::generate("test web CA")?;
    let server = web_ca.issue_server_cert(&["127.0.0.1"], Validity::starting_now(DAY))?;
    let url = serve_tls(&relay, &server, &rustls::version::TLS13).await?;
    let folder = tempfile::tempdir()?;
    let web_ca_file = folder.path().join("web-ca.pem");
    fs::write(&web_ca_file, web_ca.cert_pem())?;
    let site = folder.path().join("site.toml");
    fs::write(&site, SITE)?;
    let dir = folder.path().join("identity/nested");
    let mut options = options(&url, CODE, &dir)?;
    options.ca_file = Some(web_ca_file);
    options.config = Some(site.clone());

    let claimed = claim(&options).await?;

    assert_eq!(claimed.appliance_id.as_str(), "app-1");
    assert!(!relay.unspent(CODE));
    let dir = fs::canonicalize(&dir)?;
    assert_eq!(claimed.dir, dir);
    assert_eq!(entries(&dir)?, [KEY_FILE, CERT_FILE, CA_FILE]);
    assert_eq!(mode(&dir.join(KEY_FILE))?, 0o600);
    assert_eq!(mode(&dir)?, 0o700);
    assert!(certifies(&dir.join(CERT_FILE), &dir.join(KEY_FILE))?);
    assert_eq!(fs::read_to_string(dir.join(CA_FILE))?, relay.ca.cert_pem());
    // The files make a TLS client identity the uplink can use.
    gatehouse_transport::TlsIdentity::from_files(
        &dir.join(CA_FILE),
        &dir.join(CERT_FILE),
        &dir.join(KEY_FILE),
    )?
    .client_config()?;

    let text = fs::read_to_string(&site)?;
    assert!(text.starts_with(SITE), "{text}");
    assert!(text.ends_with(&claimed.uplink_section), "{text}");
    assert!(matches!(&claimed.site_config, SiteConfigUpdate::Appended(path) if *path == site));
    let config = Config::load(&site).map_err(|error| anyhow::anyhow!("{error}"))?;
    let uplink = config.uplink.context("no [uplink] in the config")?;
    assert_eq!(uplink.appliance_id.as_str(), "app-1");
    assert_eq!(uplink.broker, "broker.example.com:8883");
    assert_eq!(uplink.ca_file, dir.join(CA_FILE));
    assert_eq!(uplink.cert_file, dir.join(CERT_FILE));
    assert_eq!(uplink.key_file, dir.join(KEY_FILE));
    assert!(!claimed.uplink_section.contains(CODE));
    Ok(())
}

#[tokio::test]
async fn a_relay_certificate_from_an_unpinned_ca_or_tls_1_2_is_refused() -> anyhow::Result<()> {
    let relay = TestRelay::new(Answer::Honest)?;
    let web_ca = FleetCa::generate("test web CA")?;
    let server = web_ca.issue_server_cert(&["127.0.0.1"], Validity::starting_now(DAY))?;
    let folder = tempfile::tempdir()?;
    let pinned = folder.path().join("pinned.pem");
    let dir = folder.path().join("identity");

    // The relay's certificate is not from the pinned CA.
    fs::write(&pinned, FleetCa::generate("another CA")?.cert_pem())?;
    let url = serve_tls(&relay, &server, &rustls::version::TLS13).await?;
    let mut claim_options = options(&url, CODE, &dir)?;
    claim_options.ca_file = Some(pinned.clone());
    let error = claim_error(&claim_options).await?;
    assert!(
        matches!(error, ClaimError::TlsHandshake { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("--ca-file"), "{message}");

    // The right CA, but the relay speaks TLS 1.2 only.
    fs::write(&pinned, web_ca.cert_pem())?;
    let url = serve_tls(&relay, &server, &rustls::version::TLS12).await?;
    let mut claim_options = options(&url, CODE, &dir)?;
    claim_options.ca_file = Some(pinned);
    let error = claim_error(&claim_options).await?;
    assert!(
        matches!(error, ClaimError::TlsHandshake { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .ends_with("ProtocolVersion; the relay must offer TLS 1.3"),
        "{error}"
    );

    assert!(relay.unspent(CODE), "the code reached the relay");
    Ok(())
}

#[tokio::test]
async fn a_refused_code_says_so_and_the_retry_reuses_the_key() -> anyhow::Result<()> {
    let (_relay, url, folder) = honest_relay().await?;
    let dir = folder.path().join("identity");

    let error = claim_error(&options(&url, "claim-SECRET-wrong", &dir)?).await?;
    assert_eq!(
        error.to_string(),
        "the relay refused the claim code: it is invalid, already used or expired; ask HQ for \
         a new code"
    );
    assert_eq!(entries(&dir)?, [STAGED_KEY]);
    let key = fs::read(dir.join(STAGED_KEY))?;

    claim(&options(&url, CODE, &dir)?).await?;
    assert_eq!(fs::read(dir.join(KEY_FILE))?, key, "the key was replaced");
    assert!(certifies(&dir.join(CERT_FILE), &dir.join(KEY_FILE))?);

    // The code is spent.
    let again = folder.path().join("again");
    let error = claim_error(&options(&url, CODE, &again)?).await?;
    assert!(matches!(error, ClaimError::CodeRefused), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn the_relays_refusals_are_shown() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let cases = [
        (
            Answer::RefuseCsr,
            "the relay refused the request: the certificate signing request is not valid: not \
             a PEM CERTIFICATE REQUEST (no items found)",
        ),
        (
            Answer::Unavailable,
            "the relay cannot sign certificates right now (the fleet CA is not loaded); try \
             again later",
        ),
        (
            Answer::Garbage,
            "the relay's answer is not a claim answer: expected value at line 1 column 1",
        ),
    ];
    for (answer, expected) in cases {
        let relay = TestRelay::new(answer)?;
        let url = serve(&relay).await?;
        let dir = folder.path().join(format!("{answer:?}"));
        let error = claim_error(&options(&url, CODE, &dir)?).await?;
        assert_eq!(error.to_string(), expected, "{answer:?}");
        assert_eq!(entries(&dir)?, [STAGED_KEY], "{answer:?}");
    }
    Ok(())
}

#[tokio::test]
async fn answers_that_do_not_check_out_write_nothing_but_the_key() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let site = folder.path().join("site.toml");
    fs::write(&site, SITE)?;
    let cases = [
        (
            Answer::OtherKey,
            "the certificate is for another key than this appliance's",
        ),
        (
            Answer::OtherCn,
            "the certificate names [\"app-other\"], not the appliance id `app-1`",
        ),
        (
            Answer::OtherCa,
            "the certificate is not signed by the fleet CA of the answer",
        ),
    ];
    for (answer, reason) in cases {
        let relay = TestRelay::new(answer)?;
        let url = serve(&relay).await?;
        let dir = folder.path().join(format!("{answer:?}"));
        let mut claim_options = options(&url, CODE, &dir)?;
        claim_options.config = Some(site.clone());
        let error = claim_error(&claim_options).await?;
        assert_eq!(
            error.to_string(),
            format!("the relay's answer does not check out: {reason}; no certificate was written"),
            "{answer:?}"
        );
        assert_eq!(entries(&dir)?, [STAGED_KEY], "{answer:?}");
    }
    assert_eq!(fs::read_to_string(&site)?, SITE);
    Ok(())
}

#[tokio::test]
async fn an_identity_is_replaced_only_with_force() -> anyhow::Result<()> {
    let (relay, url, folder) = honest_relay().await?;
    let dir = folder.path().join("identity");
    let (files, before) = claimed_identity(&url, &dir).await?;

    let mut again = options(&url, OTHER_CODE, &dir)?;
    let error = claim_error(&again).await?;
    assert_eq!(
        error.to_string(),
        format!(
            "{} already holds an appliance identity (appliance.pem); pass --force to replace \
             it with a new key and certificate",
            fs::canonicalize(&dir)?.display()
        )
    );
    let after = contents(&files)?;
    assert_eq!(before, after, "the identity was touched");
    assert!(relay.unspent(OTHER_CODE));

    again.force = true;
    let claimed = claim(&again).await?;
    assert_eq!(claimed.appliance_id.as_str(), "app-2");
    assert_ne!(fs::read(&files[0])?, before[0], "--force kept the old key");
    assert!(certifies(&files[1], &files[0])?);
    Ok(())
}

#[tokio::test]
async fn a_forced_claim_that_fails_leaves_the_working_identity_in_place() -> anyhow::Result<()> {
    let (_relay, url, folder) = honest_relay().await?;
    let dir = folder.path().join("identity");
    let (files, before) = claimed_identity(&url, &dir).await?;

    // A mistyped code with --force: refused by the relay, and the appliance keeps reporting.
    let mut again = options(&url, "claim-SECRET-mistyped", &dir)?;
    again.force = true;
    let error = claim_error(&again).await?;
    assert!(matches!(error, ClaimError::CodeRefused), "{error:?}");
    let after = contents(&files)?;
    assert_eq!(before, after, "a failed claim touched the identity");
    assert!(certifies(&files[1], &files[0])?);
    assert_eq!(entries(&dir)?, [KEY_FILE, STAGED_KEY, CERT_FILE, CA_FILE]);

    // A wrong answer with --force: the same.
    let liar = TestRelay::new(Answer::OtherKey)?;
    let mut lied_to = options(&serve(&liar).await?, CODE, &dir)?;
    lied_to.force = true;
    let error = claim_error(&lied_to).await?;
    assert!(matches!(error, ClaimError::BadReply(_)), "{error:?}");
    let after = contents(&files)?;
    assert_eq!(before, after, "a wrong answer touched the identity");
    Ok(())
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_before_anything_is_written() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let dir = folder.path().join("identity");
    let error = claim_error(&options("http://192.0.2.1:8080", CODE, &dir)?).await?;
    assert!(
        matches!(error, ClaimError::InsecureRelay { .. }),
        "{error:?}"
    );
    assert!(!dir.exists());
    Ok(())
}

#[tokio::test]
async fn a_site_config_with_an_uplink_is_left_untouched() -> anyhow::Result<()> {
    let (_relay, url, folder) = honest_relay().await?;
    let original = format!("{SITE}\n\n[uplink]\nappliance_id = \"old\"\n");
    let (site, claim_options) = with_site_config(&url, folder.path(), &original)?;

    let claimed = claim(&claim_options).await?;

    assert!(
        matches!(&claimed.site_config, SiteConfigUpdate::AlreadyHasUplink(path) if *path == site)
    );
    assert_eq!(fs::read_to_string(&site)?, original);
    assert!(
        claimed
            .uplink_section
            .starts_with("[uplink]\nappliance_id = \"app-1\"\n")
    );
    Ok(())
}

#[tokio::test]
async fn the_problems_of_the_site_config_are_listed_after_the_append() -> anyhow::Result<()> {
    let (_relay, url, folder) = honest_relay().await?;
    let original = format!("{SITE}\n[journal]\nbatch_max_events = 0\n");
    let (site, claim_options) = with_site_config(&url, folder.path(), &original)?;

    let claimed = claim(&claim_options).await?;

    let SiteConfigUpdate::AppendedWithProblems(error) = &claimed.site_config else {
        bail!("{:?}", claimed.site_config);
    };
    let messages: Vec<&str> = error.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        ["journal.batch_max_events must be between 1 and 100000"]
    );
    let text = fs::read_to_string(&site)?;
    assert!(text.starts_with(&original));
    assert!(text.ends_with(&claimed.uplink_section));
    Ok(())
}

#[tokio::test]
async fn a_site_config_that_is_not_toml_is_refused_before_the_code_is_spent() -> anyhow::Result<()>
{
    let (relay, url, folder) = honest_relay().await?;
    let (site, claim_options) = with_site_config(&url, folder.path(), "[site\n")?;
    let error = claim_error(&claim_options).await?;
    assert!(
        error
            .to_string()
            .starts_with(&format!("--config {}: not valid TOML", site.display())),
        "{error}"
    );
    assert!(relay.unspent(CODE));
    assert!(!claim_options.dir.exists());
    Ok(())
}

#[tokio::test]
async fn a_relay_that_is_not_listening_is_named() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    drop(listener);
    let folder = tempfile::tempdir()?;
    let error = claim_error(&options(
        &format!("http://{address}"),
        CODE,
        &folder.path().join("identity"),
    )?)
    .await?;
    assert_eq!(
        error.to_string(),
        format!(
            "the relay at http://{address}/api/v1/claim refused the connection: is the relay \
             running and the URL right?"
        )
    );
    Ok(())
}

#[test]
fn the_code_is_never_shown() -> anyhow::Result<()> {
    let claim_options = options("https://relay.example.com", CODE, &PathBuf::from("/x"))?;
    assert!(!format!("{claim_options:?}").contains(CODE));
    assert_eq!(
        "  ".parse::<ClaimCode>(),
        Err("the claim code must not be empty".to_owned())
    );
    Ok(())
}

#[test]
fn the_code_comes_from_the_argument_or_the_first_line_of_stdin() -> anyhow::Result<()> {
    let given: CodeArg = CODE.parse().map_err(anyhow::Error::msg)?;
    assert!(!format!("{given:?}").contains(CODE));
    let code = given.read(&b"ignored\n"[..])?;
    assert_eq!(code.expose(), CODE);

    let stdin: CodeArg = "-".parse().map_err(anyhow::Error::msg)?;
    assert_eq!(stdin, CodeArg::Stdin);
    let code = stdin
        .clone()
        .read(format!("  {CODE} \nsecond line\n").as_bytes())?;
    assert_eq!(code.expose(), CODE);
    for nothing in ["", "\n", "   \nclaim-on-the-second-line\n"] {
        let error = stdin
            .clone()
            .read(nothing.as_bytes())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("--code -: no claim code on the first line of standard input"),
            "{nothing:?}"
        );
    }
    Ok(())
}
