//! `POST /claim`: a code and a CSR become the appliance's certificate, once (and again for
//! the same key while its answer may have been lost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{Method, StatusCode};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::harness::{Api, CLIENT, Options, SECOND, T0, Tenant};
use crate::api::ApiLimits;
use crate::hub::{LiveUpdate, Received};
use crate::pki::{CheckedCsr, P384_SIGNED_WITH_SHA256};
use crate::store::Store;

on_both_backends!(
    a_claim_code_and_a_csr_make_the_appliance_certificate_once,
    a_lost_answer_is_claimed_again_with_the_same_key_only,
    a_bad_csr_is_a_400_and_does_not_use_up_the_code,
    refused_codes_are_one_answer_and_are_rate_limited_per_client,
    a_claim_that_does_not_finish_does_not_spend_the_code,
);

const REFUSED: &str = "claim code is invalid, used or expired";

/// A CSR for a new key of `algorithm`, asking (in vain) for the CN `relay`.
fn csr(algorithm: &'static rcgen::SignatureAlgorithm) -> anyhow::Result<String> {
    let key = KeyPair::generate_for(algorithm)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "relay");
    Ok(params.serialize_request(&key)?.pem()?)
}

/// A new claim code made by `tenant`'s admin over the API: `(appliance id, code)`.
async fn new_code(api: &Api, tenant: &Tenant) -> anyhow::Result<(String, String)> {
    let (status, body) = api
        .post(
            "/api/v1/claims",
            &tenant.admin,
            &json!({"site": tenant.site, "name": "gate-2"}),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "{status} {body}");
    assert_eq!(body["expires_at"], json!(T0 + 7 * 86_400 * SECOND));
    let field = |name: &str| body[name].as_str().map(str::to_owned).context("no field");
    Ok((field("appliance_id")?, field("code")?))
}

async fn claim(api: &Api, code: &str, csr_pem: &str) -> anyhow::Result<(StatusCode, Value)> {
    claim_from(api, CLIENT, code, csr_pem).await
}

async fn claim_from(
    api: &Api,
    client: SocketAddr,
    code: &str,
    csr_pem: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let body = json!({"code": code, "csr_pem": csr_pem}).to_string();
    api.call_from(client, Method::POST, "/api/v1/claim", None, Some(body))
        .await
}

fn claims_api(store: &Store, failed_claims_per_minute: u32) -> anyhow::Result<Api> {
    claims_api_with(
        store,
        ApiLimits {
            failed_claims_per_minute,
            ..ApiLimits::default()
        },
    )
}

fn claims_api_with(store: &Store, limits: ApiLimits) -> anyhow::Result<Api> {
    Api::with(
        store,
        Options {
            claims: true,
            limits,
            ..Options::default()
        },
    )
}

/// The stored certificate fingerprint of `appliance`.
async fn stored_fingerprint(
    store: &Store,
    tenant: &Tenant,
    appliance: &str,
) -> anyhow::Result<Option<String>> {
    let stored = store
        .appliance(&tenant.scope, &appliance.parse()?)
        .await?
        .context("appliance gone")?;
    Ok(stored.cert_fingerprint)
}

/// The SHA-256 of the DER of the answer's certificate.
fn fingerprint_of(answer: &Value) -> anyhow::Result<String> {
    let pem = answer["certificate_pem"]
        .as_str()
        .context("no certificate")?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

async fn a_claim_code_and_a_csr_make_the_appliance_certificate_once(
    store: &Store,
) -> anyhow::Result<()> {
    let api = claims_api(store, 20)?;
    let tenant = Tenant::new(store, "acme").await?;
    let mut live = api.hub.subscribe(&tenant.scope);
    let (appliance, code) = new_code(&api, &tenant).await?;
    let request = csr(&PKCS_ECDSA_P256_SHA256)?;

    // Typed by a person: lower case, spaces for dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let (status, body) = claim(&api, &typed, &request).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["appliance_id"], json!(appliance));
    assert_eq!(
        body["broker"],
        json!({"host": "broker.example.net", "port": 8883})
    );
    let ca_pem = api.ca_pem.as_deref().context("no CA")?;
    assert_eq!(body["ca_pem"], json!(ca_pem));

    // The certificate chains to the fleet CA as a client certificate, for the appliance id.
    let certificate = body["certificate_pem"].as_str().context("no certificate")?;
    let der = CertificateDer::from_pem_slice(certificate.as_bytes())?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?;
    verifier.verify_client_cert(&der, &[], UnixTime::now())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())?;
    let common_names: Vec<&str> = parsed
        .subject()
        .iter_common_name()
        .map(|name| name.as_str())
        .collect::<Result<_, _>>()?;
    assert_eq!(common_names, vec![appliance.as_str()]);
    assert_eq!(
        parsed.subject().iter().count(),
        1,
        "more than a CN in the subject"
    );

    // The relay knows the certificate, and the tenant's streams saw the claim.
    let stored = store
        .appliance(&tenant.scope, &appliance.parse()?)
        .await?
        .context("appliance gone")?;
    assert_eq!(
        stored.cert_fingerprint.as_deref(),
        Some(hex::encode(Sha256::digest(der.as_ref())).as_str())
    );
    assert_eq!(stored.claimed_at, Some(T0));
    match live.recv().await {
        Some(Received::Update(update)) => {
            assert_eq!(update.as_ref(), &LiveUpdate::Appliance(stored));
        }
        other => anyhow::bail!("no live update: {other:?}"),
    }

    // Once only: another key gets the one refusal.
    let (status, body) = claim(&api, &code, &csr(&PKCS_ECDSA_P256_SHA256)?).await?;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, json!({"error": REFUSED}))
    );
    Ok(())
}

async fn a_lost_answer_is_claimed_again_with_the_same_key_only(
    store: &Store,
) -> anyhow::Result<()> {
    let api = claims_api(store, 20)?;
    let tenant = Tenant::new(store, "acme").await?;
    let (appliance, code) = new_code(&api, &tenant).await?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let request_for = |name: &str| -> anyhow::Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        Ok(params.serialize_request(&key)?.pem()?)
    };

    let (status, first) = claim(&api, &code, &request_for("first try")?).await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The answer never reached the appliance; it asks again with its key (a new CSR).
    let (status, again) = claim(&api, &code, &request_for("second try")?).await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["appliance_id"], json!(appliance));
    assert_ne!(again["certificate_pem"], first["certificate_pem"]);
    // The relay knows the certificate it answered last.
    assert_eq!(
        stored_fingerprint(store, &tenant, &appliance).await?,
        Some(fingerprint_of(&again)?)
    );
    let claimed_at = store
        .appliance(&tenant.scope, &appliance.parse()?)
        .await?
        .context("appliance gone")?
        .claimed_at;
    assert_eq!(claimed_at, Some(T0));
    Ok(())
}

async fn a_bad_csr_is_a_400_and_does_not_use_up_the_code(store: &Store) -> anyhow::Result<()> {
    let api = claims_api(store, 20)?;
    let tenant = Tenant::new(store, "acme").await?;
    let (_, code) = new_code(&api, &tenant).await?;

    let (status, body) = claim(&api, &code, "not a CSR").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "the certificate signing request is not valid: not a PEM CERTIFICATE REQUEST (no items found)"})
    );
    let p384 = "the certificate signing request's key is an EC key on P-384; the fleet uses \
                ECDSA P-256";
    let (status, body) = claim(&api, &code, &csr(&rcgen::PKCS_ECDSA_P384_SHA384)?).await?;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": p384}))
    );
    // A P-384 key signed with ecdsa-with-SHA256: it is the key that is checked.
    let (status, body) = claim(&api, &code, P384_SIGNED_WITH_SHA256).await?;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": p384}))
    );
    // A garbled CSR, with an unknown code: still about the CSR, and nothing about the code.
    let whole = csr(&PKCS_ECDSA_P256_SHA256)?;
    let mut lines: Vec<&str> = whole.lines().collect();
    lines.remove(2);
    let pem = lines.join("\n");
    let (status, _) = claim(&api, "0000-0000", &pem).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = claim(&api, &code, &csr(&PKCS_ECDSA_P256_SHA256)?).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "the code was used up by a bad CSR: {body}"
    );
    Ok(())
}

async fn refused_codes_are_one_answer_and_are_rate_limited_per_client(
    store: &Store,
) -> anyhow::Result<()> {
    let tenant = Tenant::new(store, "acme").await?;
    let request = csr(&PKCS_ECDSA_P256_SHA256)?;

    // Without a CA the relay takes no claims.
    let (status, body) = claim(&Api::new(store)?, "0000", &request).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let api = claims_api(store, 3)?;
    let expired = store
        .create_claim(
            &tenant.scope,
            &tenant.site,
            "late",
            T0 - 7200 * SECOND,
            T0 - SECOND,
        )
        .await?;
    let (_, used) = new_code(&api, &tenant).await?;
    assert_eq!(claim(&api, &used, &request).await?.0, StatusCode::OK);
    let other_key = csr(&PKCS_ECDSA_P256_SHA256)?;
    for code in [
        "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ",
        expired.code.as_str(),
        used.as_str(),
    ] {
        let (status, body) = claim(&api, code, &other_key).await?;
        assert_eq!(
            (status, body),
            (StatusCode::FORBIDDEN, json!({"error": REFUSED}))
        );
    }
    // Three refusals this minute from this client: now even its good code waits, and is not
    // used up.
    let (_, good) = new_code(&api, &tenant).await?;
    let (status, body) = claim(&api, &good, &request).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("too many refused claims from this address")),
        "{body}"
    );
    // Another installer, elsewhere, is not locked out.
    let elsewhere: SocketAddr = "198.51.100.20:40000".parse()?;
    let (status, body) = claim_from(&api, elsewhere, &good, &request).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

async fn a_claim_that_does_not_finish_does_not_spend_the_code(store: &Store) -> anyhow::Result<()> {
    let api = claims_api_with(
        store,
        ApiLimits {
            request_timeout: Duration::from_millis(300),
            ..ApiLimits::default()
        },
    )?;
    let tenant = Tenant::new(store, "acme").await?;
    let (appliance, code) = new_code(&api, &tenant).await?;
    let request = csr(&PKCS_ECDSA_P256_SHA256)?;

    // Another claim of the code is in flight (its transaction open): this one waits for it
    // past its time limit, is abandoned and rolled back.
    let stuck = CheckedCsr::parse(&csr(&PKCS_ECDSA_P256_SHA256)?)?;
    let pending = store.begin_claim(&code, stuck.key_sha256(), T0).await?;
    let (status, body) = claim(&api, &code, &request).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body,
        json!({"error": "the relay did not answer within 0.3 s; try again"})
    );
    // The other one fails too (its signature, its database): nothing was spent.
    drop(pending);
    assert_eq!(stored_fingerprint(store, &tenant, &appliance).await?, None);
    let (status, body) = claim(&api, &code, &request).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        stored_fingerprint(store, &tenant, &appliance).await?,
        Some(fingerprint_of(&body)?)
    );
    Ok(())
}
