//! The relay's certificate authorities: the **fleet CA**, which the broker's appliance
//! listener trusts for client certificates, and the **relay CA**, which its relay listener
//! trusts (both are a [`FleetCa`]; `gatehouse-relay pki init` makes the two).
//!
//! # Who holds what
//!
//! - The **relay** holds the fleet CA's key. It signs appliance certificates at claim time
//!   ([`CheckedCsr::parse`], then [`FleetCa::sign_checked`]) and the broker's server
//!   certificate ([`FleetCa::issue_server_cert`]). The relay CA signs only relay client
//!   certificates ([`FleetCa::issue_client_cert`]); its key is kept offline.
//! - An **appliance** makes its own key pair and a CSR ([`new_key_and_csr`], or its TPM); its
//!   private key never leaves it. The relay answers with a certificate whose subject is
//!   `CN = {appliance id}` and nothing else.
//! - The **broker** (Mosquitto, `relay/deploy/`) has two listeners: the appliance listener
//!   trusts only the fleet CA, the relay listener only the relay CA. It takes the CN of the
//!   client certificate as the MQTT username (`use_identity_as_username`); on the appliance
//!   listener the ACL lets user `X` write `gatehouse/v1/X/up/#` and read
//!   `gatehouse/v1/X/down/#`, and nothing else.
//!
//! # Invariants
//!
//! - **The CN is chosen by the relay, never by the requester.** [`FleetCa::sign_checked`]
//!   takes only the public key out of a CSR (after checking the CSR's signature, which proves
//!   the requester holds the private key); subject, SANs, key usages, extensions and CA flags
//!   the CSR asks for are ignored.
//! - **Only ECDSA P-256 keys are certified**, and the certificate's key is written from the key
//!   [`CheckedCsr::parse`] checked (id-ecPublicKey on prime256v1, an uncompressed point), never
//!   from what the CSR's signature algorithm suggests.
//! - **Every CN this CA writes is a valid id** (lowercase letters, digits, `-`, `_`, `.`; see
//!   `gatehouse_protocol::ids`): no `/`, `+` or `#`, so the broker's `%u` ACL patterns can never
//!   be steered into another appliance's topics.
//! - **The relay's identities are reserved.** An appliance is never issued the CN
//!   [`RELAY_IDENTITY`] or one starting with `relay-` ([`is_relay_identity`]). The broker does not
//!   depend on it (the relay listener refuses every fleet certificate), but a certificate of the
//!   fleet must never name itself like the relay: in logs, in audits, or on a broker set up with
//!   one CA for both listeners.
//! - Leaf certificates are never CAs (`basicConstraints CA:FALSE`) and carry exactly one
//!   extended key usage: client authentication for appliances and relays, server
//!   authentication for the broker. A stolen broker key cannot log in as a client.
//! - Keys are ECDSA P-256 (what the appliances' TPMs support); serial numbers are 128 random
//!   bits, so a renewed certificate for the same key has a new serial.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_protocol::ApplianceId;
use gatehouse_protocol::ids::{IdError, validate_id};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
    SignatureAlgorithm,
};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, Oid,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The CN of the relay's client certificate; the relay listener's ACL has a `user relay`
/// entry.
///
/// Every relay replica uses this CN (with its own MQTT client id): Mosquitto's ACL file has no
/// username wildcards, so one entry serves all replicas.
pub const RELAY_IDENTITY: &str = "relay";

/// How long a generated fleet CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// How far back [`Validity::starting_now`] puts `not_before`, so that a verifier whose clock is
/// a little behind the relay's does not refuse a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// The last instant X.509 can express (9999-12-31T23:59:59Z).
const LATEST_X509_TIME: Duration = Duration::from_secs(253_402_300_799);

/// Why a certificate could not be issued or the CA could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The CSR is unusable (see [`CsrError`]).
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The identity is not a valid id (and could break the broker's ACL patterns).
    #[error("`{identity}` cannot be a certificate identity: {source}")]
    BadIdentity {
        identity: String,
        #[source]
        source: IdError,
    },
    /// A server certificate was asked for without a name to serve.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerName,
    /// An appliance asked for an identity that belongs to the relay.
    #[error("`{0}` is reserved for the relay and cannot be an appliance id")]
    ReservedIdentity(String),
    /// `not_after` is not after `not_before`, or a bound is outside what X.509 can express.
    #[error("invalid validity period: {0}")]
    BadValidity(&'static str),
    /// The CA certificate or key given to [`FleetCa::load`] is unusable.
    #[error("cannot load the fleet CA: {0}")]
    BadCa(String),
    /// rcgen could not build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    /// A key or request could not be made (see `gatehouse_transport`).
    #[error(transparent)]
    Transport(#[from] gatehouse_transport::TransportError),
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from [`CLOCK_SKEW_ALLOWANCE`] ago until `duration` from now.
    pub fn starting_now(duration: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            not_after: now.checked_add(duration).unwrap_or(now),
        }
    }

    fn apply(self, params: &mut CertificateParams) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::BadValidity("not_after must be after not_before"));
        }
        // rcgen's date type is reached through rcgen, so the relay does not depend on `time`.
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + since_epoch(self.not_before)?;
        params.not_after = epoch + since_epoch(self.not_after)?;
        Ok(())
    }
}

/// Whole seconds since the Unix epoch (X.509 times have no fractions), within what X.509 can
/// express.
fn since_epoch(instant: SystemTime) -> Result<Duration, PkiError> {
    let since_epoch = instant
        .duration_since(UNIX_EPOCH)
        .map_err(|_| PkiError::BadValidity("times before 1970 are not supported"))?;
    if since_epoch > LATEST_X509_TIME {
        return Err(PkiError::BadValidity(
            "times after 9999 cannot be expressed",
        ));
    }
    Ok(Duration::from_secs(since_epoch.as_secs()))
}

/// A certificate and the private key it certifies, both PEM (the key is PKCS#8).
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A fresh private key (PKCS#8 PEM) and a certificate signing request for it (PEM).
pub use gatehouse_transport::KeyAndCsr;

/// Whether `identity` belongs to the relay ([`RELAY_IDENTITY`], or `relay-...` kept for
/// replicas), and so may never be an appliance's certificate identity.
pub fn is_relay_identity(identity: &str) -> bool {
    identity == RELAY_IDENTITY
        || identity
            .strip_prefix(RELAY_IDENTITY)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Makes an ECDSA P-256 key pair and a CSR for it, as an appliance does at claim time.
///
/// `common_name_hint` goes into the CSR's subject for the humans reading it; the relay ignores
/// it and writes the appliance id it assigns ([`FleetCa::sign_checked`]).
pub fn new_key_and_csr(common_name_hint: &str) -> Result<KeyAndCsr, PkiError> {
    Ok(gatehouse_transport::new_p256_key_and_csr(common_name_hint)?)
}

/// Why a certificate signing request is refused. Each message names what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the certificate signing request is not valid: not a PEM CERTIFICATE REQUEST ({0})")]
    NotPem(String),
    #[error("the certificate signing request is not valid: {0}")]
    Malformed(String),
    #[error("the certificate signing request is not valid: its signature does not match its key")]
    BadSignature,
    /// The request is for a key of another type than the fleet's.
    #[error("the certificate signing request's key is {found}; the fleet uses ECDSA P-256")]
    UnsupportedKey { found: String },
}

/// A certificate signing request checked once, before anything is spent on it: a PKCS#10
/// request whose key is ECDSA P-256 (id-ecPublicKey on prime256v1, an uncompressed 65-byte
/// point) and whose signature that key verifies (so the requester holds the private key).
///
/// Nothing else of the request is kept: [`FleetCa::sign_checked`] writes the key it holds
/// and the subject and extensions the relay chooses.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    /// The uncompressed point `04 || x || y`.
    point: Vec<u8>,
    /// SHA-256 of the request's DER SubjectPublicKeyInfo, lowercase hex.
    key_sha256: String,
}

impl std::fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedCsr")
            .field("key_sha256", &self.key_sha256)
            .finish_non_exhaustive()
    }
}

/// The length of an uncompressed P-256 point: `04`, then x and y of 32 bytes each.
const P256_POINT_BYTES: usize = 65;

impl CheckedCsr {
    /// Checks a PEM `CERTIFICATE REQUEST`.
    pub fn parse(csr_pem: &str) -> Result<CheckedCsr, CsrError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|error| CsrError::NotPem(error.to_string()))?;
        CheckedCsr::from_der(&der)
    }

    /// Checks a DER request.
    pub fn from_der(der: &CertificateSigningRequestDer<'_>) -> Result<CheckedCsr, CsrError> {
        let (rest, request) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|error| CsrError::Malformed(error.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(format!(
                "{} bytes follow the request",
                rest.len()
            )));
        }
        let key = &request.certification_request_info.subject_pki;
        let point = p256_point(key)?;
        // After the key type: the signature is then checked with a P-256 key, whatever
        // hash the request names.
        request
            .verify_signature()
            .map_err(|_| CsrError::BadSignature)?;
        Ok(CheckedCsr {
            point: point.to_vec(),
            key_sha256: hex::encode(Sha256::digest(key.raw)),
        })
    }

    /// SHA-256 of the request's DER SubjectPublicKeyInfo, lowercase hex: what identifies the
    /// key (a retried claim must come with the same one).
    pub fn key_sha256(&self) -> &str {
        &self.key_sha256
    }
}

/// The checked key, as rcgen writes it into a certificate: id-ecPublicKey, prime256v1, the
/// point.
impl PublicKeyData for CheckedCsr {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The point of a P-256 SubjectPublicKeyInfo, or what the key is instead.
fn p256_point<'a>(key: &'a SubjectPublicKeyInfo<'_>) -> Result<&'a [u8], CsrError> {
    let unsupported = |found: String| Err(CsrError::UnsupportedKey { found });
    let algorithm = &key.algorithm.algorithm;
    if *algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return unsupported(key_type_name(algorithm));
    }
    let curve = key
        .algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok());
    match curve {
        Some(curve) if curve == OID_EC_P256 => {}
        Some(curve) => return unsupported(format!("an EC key on {}", curve_name(&curve))),
        None => return unsupported("an EC key without a named curve".to_owned()),
    }
    let point: &[u8] = &key.subject_public_key.data;
    if point.len() != P256_POINT_BYTES || point.first() != Some(&0x04) {
        return unsupported(format!(
            "a P-256 key that is not an uncompressed point ({} bytes)",
            point.len()
        ));
    }
    Ok(point)
}

fn key_type_name(algorithm: &Oid<'_>) -> String {
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        "an RSA key".to_owned()
    } else if *algorithm == OID_SIG_ED25519 {
        "an Ed25519 key".to_owned()
    } else {
        format!("a key of type {algorithm}")
    }
}

fn curve_name(curve: &Oid<'_>) -> String {
    if *curve == OID_NIST_EC_P384 {
        "P-384".to_owned()
    } else if *curve == OID_NIST_EC_P521 {
        "P-521".to_owned()
    } else {
        format!("curve {curve}")
    }
}

/// The fleet CA: signs appliance, relay and broker certificates.
pub struct FleetCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("FleetCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl FleetCa {
    /// A new self-signed CA named `name` (its CN), valid for [`CA_VALIDITY`], that may sign
    /// leaf certificates only (path length 0). Save [`FleetCa::cert_pem`] and
    /// [`FleetCa::key_pem`] to use it again with [`FleetCa::load`].
    pub fn generate(name: &str) -> Result<FleetCa, PkiError> {
        if name.trim().is_empty() {
            return Err(PkiError::BadCa("the CA name must not be empty".into()));
        }
        let key = gatehouse_transport::new_p256_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        Validity::starting_now(CA_VALIDITY).apply(&mut params)?;
        let cert = params.self_signed(&key)?;
        FleetCa::load(&cert.pem(), &key.serialize_pem())
    }

    /// The CA from its certificate and its PKCS#8 ECDSA P-256 private key, both PEM. Fails if
    /// the key is not the certificate's or the certificate may not sign certificates.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<FleetCa, PkiError> {
        let key = gatehouse_transport::p256_key_from_pem(key_pem)
            .map_err(|error| PkiError::BadCa(format!("the private key: {error}")))?;
        let cert_der = gatehouse_transport::certificates_from_pem(cert_pem.as_bytes())
            .map_err(|error| PkiError::BadCa(format!("the certificate: {error}")))?
            .swap_remove(0);
        // The certificate embeds its subject's public key info verbatim (DER is canonical).
        let key_info = key.subject_public_key_info();
        if !cert_der
            .windows(key_info.len())
            .any(|window| window == key_info.as_slice())
        {
            return Err(PkiError::BadCa(
                "the private key does not belong to the certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|error| PkiError::BadCa(format!("the certificate: {error}")))?;
        if !issuer.key_usages().is_empty()
            && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign)
        {
            return Err(PkiError::BadCa(
                "the certificate's key usage does not allow signing certificates".into(),
            ));
        }
        Ok(FleetCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate (PEM): the broker's `cafile` and every client's trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM). Store it readable by the relay only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs an appliance's checked CSR: the certificate has the CSR's public key and
    /// `CN = {appliance}` as its whole subject, client authentication as its only extended key
    /// usage, and nothing else the CSR asked for. Fails when `appliance` is a relay identity.
    pub fn sign_checked(
        &self,
        csr: &CheckedCsr,
        appliance: &ApplianceId,
        validity: Validity,
    ) -> Result<String, PkiError> {
        if is_relay_identity(appliance.as_str()) {
            return Err(PkiError::ReservedIdentity(appliance.to_string()));
        }
        let params = leaf_params(
            appliance.as_str(),
            validity,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(params.signed_by(csr, &self.issuer)?.pem())
    }

    /// [`CheckedCsr::parse`] and [`FleetCa::sign_checked`] in one call, for a request checked
    /// nowhere else.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        appliance: &ApplianceId,
        validity: Validity,
    ) -> Result<String, PkiError> {
        self.sign_checked(&CheckedCsr::parse(csr_pem)?, appliance, validity)
    }

    /// A new key and a client certificate for `identity`: the relay's own
    /// ([`RELAY_IDENTITY`]), or a test's. Appliances get theirs through
    /// [`FleetCa::sign_checked`], so their key never leaves them. `identity` must be a valid id.
    pub fn issue_client_cert(
        &self,
        identity: &str,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        validate_id(identity).map_err(|source| PkiError::BadIdentity {
            identity: identity.to_owned(),
            source,
        })?;
        let params = leaf_params(identity, validity, ExtendedKeyUsagePurpose::ClientAuth)?;
        self.issue(params)
    }

    /// A new key and a server certificate for the broker, valid for `names` (DNS names, or IP
    /// addresses written as such). Its CN is `Gatehouse broker`, which is not a valid id, so it
    /// can never be mistaken for a client identity; its only extended key usage is server
    /// authentication.
    pub fn issue_server_cert(
        &self,
        names: &[&str],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        if names.is_empty() {
            return Err(PkiError::NoServerName);
        }
        let mut params = leaf_params(
            "Gatehouse broker",
            validity,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        params.subject_alt_names = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )?
        .subject_alt_names;
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = gatehouse_transport::new_p256_key()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

/// The parameters of every leaf certificate: one CN, not a CA, digital signature, one
/// extended key usage, a random serial, the authority key identifier.
fn leaf_params(
    common: &str,
    validity: Validity,
    purpose: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(common);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity.apply(&mut params)?;
    Ok(params)
}

/// 16 random bytes, positive and without a leading zero byte.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// A request for a P-384 key signed with ecdsa-with-SHA256, made with
/// `openssl ecparam -name secp384r1 -genkey -noout -out k.pem` and
/// `openssl req -new -key k.pem -sha256 -subj /CN=p384-sha256` (rcgen signs P-384 keys with
/// SHA-384 only). It is valid: its signature verifies.
#[cfg(test)]
pub(crate) const P384_SIGNED_WITH_SHA256: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBDjCBlQIBADAWMRQwEgYDVQQDDAtwMzg0LXNoYTI1NjB2MBAGByqGSM49AgEG
BSuBBAAiA2IABA0q5MKiA950hesBZD9wzQIzucj96HHUFZSElZxt4LKMNzkifrAn
El+NTU8tV1Aj4YFtXxTzl4sTdwFjW4YpJJ453sx3Boy8BR/tDvBEKNUmbqfqNpeL
Vzil7YbemuRe46AAMAoGCCqGSM49BAMCA2gAMGUCMQC4ooT5mE2JfJ1T0AylIXSW
9dudAfnHAkeHDQne3UMRO5N6zrm85qD9bfcMJa1W63UCMHqO9uW9iFyDm5Tx4dMM
5YBbAcfS9syJmbCe0EEW/WU5HwOrMi0AIhnXFxjAnT/vOA==
-----END CERTIFICATE REQUEST-----
";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use anyhow::Context as _;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, RootCertStore};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
        Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
    }

    use gatehouse_transport::provider;

    fn roots(ca: &FleetCa) -> anyhow::Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca.cert_pem())?)?;
        Ok(Arc::new(roots))
    }

    fn at(instant: SystemTime) -> anyhow::Result<UnixTime> {
        Ok(UnixTime::since_unix_epoch(
            instant.duration_since(UNIX_EPOCH)?,
        ))
    }

    /// What webpki (rustls) says of `cert_pem` as a client certificate at `now`: the outer
    /// result is the test's own failure, the inner one the verdict.
    fn verify_client(
        ca: &FleetCa,
        cert_pem: &str,
        now: UnixTime,
    ) -> anyhow::Result<Result<(), rustls::Error>> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()?;
        Ok(verifier
            .verify_client_cert(&der(cert_pem)?, &[], now)
            .map(|_| ()))
    }

    /// What webpki (rustls) says of `cert_pem` as the server certificate of `name` now.
    fn verify_server(
        ca: &FleetCa,
        cert_pem: &str,
        name: &str,
    ) -> anyhow::Result<Result<(), rustls::Error>> {
        let name = ServerName::try_from(name.to_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
                .build()?;
        Ok(verifier
            .verify_server_cert(&der(cert_pem)?, &[], &name, &[], UnixTime::now())
            .map(|_| ()))
    }

    fn ca() -> anyhow::Result<FleetCa> {
        Ok(FleetCa::generate("Gatehouse test fleet CA")?)
    }

    fn app(id: &str) -> anyhow::Result<ApplianceId> {
        Ok(ApplianceId::new(id)?)
    }

    fn contains_key(cert_pem: &str, key: &impl PublicKeyData) -> anyhow::Result<bool> {
        let key_info = key.subject_public_key_info();
        Ok(der(cert_pem)?
            .windows(key_info.len())
            .any(|window| window == key_info.as_slice()))
    }

    /// Just enough DER to read a certificate's subject and extensions in these tests.
    mod x509 {
        use anyhow::{Context as _, bail};

        /// One TLV: (tag, content, what follows).
        fn tlv(input: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
            let (&tag, rest) = input.split_first().context("no tag")?;
            let (&first, rest) = rest.split_first().context("no length")?;
            let (length, rest) = if first < 0x80 {
                (usize::from(first), rest)
            } else {
                let count = usize::from(first & 0x7f);
                let (bytes, rest) = rest.split_at_checked(count).context("short length")?;
                let length = bytes
                    .iter()
                    .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
                (length, rest)
            };
            let (content, rest) = rest.split_at_checked(length).context("short content")?;
            Ok((tag, content, rest))
        }

        fn children(mut content: &[u8]) -> anyhow::Result<Vec<(u8, &[u8])>> {
            let mut children = Vec::new();
            while !content.is_empty() {
                let (tag, inner, rest) = tlv(content)?;
                children.push((tag, inner));
                content = rest;
            }
            Ok(children)
        }

        pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
        pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
        pub const EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
        pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
        pub const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
        pub const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

        pub struct Parsed {
            /// (attribute OID, value) of every RDN of the subject.
            pub subject: Vec<(Vec<u8>, String)>,
            /// (extension OID, value) of every extension.
            pub extensions: Vec<(Vec<u8>, Vec<u8>)>,
        }

        impl Parsed {
            pub fn extension(&self, oid: &[u8]) -> Option<&[u8]> {
                self.extensions
                    .iter()
                    .find(|(id, _)| id == oid)
                    .map(|(_, value)| value.as_slice())
            }

            /// The OIDs in the extended key usage extension.
            pub fn extended_key_usages(&self) -> anyhow::Result<Vec<Vec<u8>>> {
                let Some(value) = self.extension(EXTENDED_KEY_USAGE) else {
                    return Ok(Vec::new());
                };
                let (_, sequence, _) = tlv(value)?;
                Ok(children(sequence)?
                    .into_iter()
                    .map(|(_, oid)| oid.to_vec())
                    .collect())
            }
        }

        pub fn parse(certificate: &[u8]) -> anyhow::Result<Parsed> {
            let (_, certificate, _) = tlv(certificate)?;
            let (_, tbs, _) = tlv(certificate)?;
            let fields = children(tbs)?;
            // [0] version, serial, signature algorithm, issuer, validity, subject, key, [3] ext.
            if fields.first().map(|(tag, _)| *tag) != Some(0xa0) {
                bail!("not a v3 certificate");
            }
            let (_, subject) = fields.get(5).context("no subject")?;
            let mut attributes = Vec::new();
            for (_, set) in children(subject)? {
                for (_, attribute) in children(set)? {
                    let parts = children(attribute)?;
                    let [(_, oid), (_, value)] = parts.as_slice() else {
                        bail!("an attribute is not (type, value)");
                    };
                    attributes.push((oid.to_vec(), String::from_utf8(value.to_vec())?));
                }
            }
            let mut extensions = Vec::new();
            if let Some((_, wrapper)) = fields.iter().find(|(tag, _)| *tag == 0xa3) {
                let (_, list, _) = tlv(wrapper)?;
                for (_, extension) in children(list)? {
                    let parts = children(extension)?;
                    let (Some((_, oid)), Some((_, value))) = (parts.first(), parts.last()) else {
                        bail!("an empty extension");
                    };
                    extensions.push((oid.to_vec(), value.to_vec()));
                }
            }
            Ok(Parsed {
                subject: attributes,
                extensions,
            })
        }
    }

    fn parse(cert_pem: &str) -> anyhow::Result<x509::Parsed> {
        x509::parse(&der(cert_pem)?)
    }

    fn common_name_of(cert_pem: &str) -> anyhow::Result<String> {
        let subject = parse(cert_pem)?.subject;
        let (_, name) = subject
            .iter()
            .find(|(oid, _)| oid == x509::COMMON_NAME)
            .context("no CN")?;
        Ok(name.clone())
    }

    #[test]
    fn a_signed_csr_chains_to_the_ca_with_the_appliance_id_whatever_the_csr_asked()
    -> anyhow::Result<()> {
        let ca = ca()?;
        // A greedy request: another appliance's CN, an organisation, a SAN, server auth and
        // certificate signing.
        let key = gatehouse_transport::new_p256_key()?;
        let mut params = CertificateParams::new(vec!["relay".to_owned()])?;
        params.distinguished_name = common_name("app-b");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Evil Corp");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let csr = params.serialize_request(&key)?.pem()?;

        let cert = ca.sign_csr(&csr, &app("app-a")?, Validity::starting_now(DAY))?;

        verify_client(&ca, &cert, UnixTime::now())??;
        let parsed = parse(&cert)?;
        assert_eq!(
            parsed.subject,
            vec![(x509::COMMON_NAME.to_vec(), "app-a".to_owned())]
        );
        assert_eq!(
            parsed.extended_key_usages()?,
            vec![x509::CLIENT_AUTH.to_vec()]
        );
        assert_eq!(parsed.extension(x509::SUBJECT_ALT_NAME), None);
        // basicConstraints present and empty: CA:FALSE.
        assert_eq!(
            parsed.extension(x509::BASIC_CONSTRAINTS),
            Some(&[0x30, 0x00][..])
        );
        // The certificate is for the requester's key, not a new one.
        assert!(contains_key(&cert, &key)?);
        Ok(())
    }

    #[test]
    fn new_key_and_csr_makes_a_p256_key_and_a_request_the_ca_signs() -> anyhow::Result<()> {
        let ca = ca()?;
        let claim = new_key_and_csr("lobby-appliance")?;
        let key = KeyPair::from_pem(&claim.key_pem)?;
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
        let requested = rcgen::CertificateSigningRequestParams::from_pem(&claim.csr_pem)?;
        assert_eq!(
            requested.params.distinguished_name.get(&DnType::CommonName),
            Some(&rcgen::DnValue::Utf8String("lobby-appliance".to_owned()))
        );
        let cert = ca.sign_csr(&claim.csr_pem, &app("site-7")?, Validity::starting_now(DAY))?;
        verify_client(&ca, &cert, UnixTime::now())??;
        assert_eq!(common_name_of(&cert)?, "site-7");
        assert!(contains_key(&cert, &key)?);
        assert!(!format!("{claim:?}").contains(&claim.key_pem));
        Ok(())
    }

    #[test]
    fn the_validity_period_is_honoured() -> anyhow::Result<()> {
        let ca = ca()?;
        let not_before = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let validity = Validity {
            not_before,
            not_after: not_before + 30 * DAY,
        };
        let csr = new_key_and_csr("x")?.csr_pem;
        let cert = ca.sign_csr(&csr, &app("app-a")?, validity)?;

        verify_client(&ca, &cert, at(not_before + Duration::from_secs(1))?)??;
        verify_client(&ca, &cert, at(not_before + 30 * DAY)?)??;
        assert!(matches!(
            verify_client(
                &ca,
                &cert,
                at(not_before + 30 * DAY + Duration::from_secs(1))?
            )?,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ))
        ));
        assert!(matches!(
            verify_client(&ca, &cert, at(not_before - Duration::from_secs(1))?)?,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            ))
        ));

        let empty = Validity {
            not_before,
            not_after: not_before,
        };
        assert!(matches!(
            ca.sign_csr(&csr, &app("app-a")?, empty),
            Err(PkiError::BadValidity(_))
        ));
        let before_1970 = Validity {
            not_before: UNIX_EPOCH - DAY,
            not_after: not_before,
        };
        assert!(matches!(
            ca.issue_client_cert("app-a", before_1970),
            Err(PkiError::BadValidity(_))
        ));
        Ok(())
    }

    #[test]
    fn garbage_and_forged_csrs_are_clear_errors() -> anyhow::Result<()> {
        let ca = ca()?;
        let validity = Validity::starting_now(DAY);
        let error = ca
            .sign_csr("not a CSR at all", &app("app-a")?, validity)
            .err()
            .context("garbage was signed")?;
        assert!(
            matches!(error, PkiError::Csr(CsrError::NotPem(_))),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the certificate signing request is not valid: not a PEM CERTIFICATE REQUEST \
             (no items found)"
        );

        // A CSR whose signature does not match its key: the last byte of the signature flipped.
        let csr = new_key_and_csr("x")?.csr_pem;
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())?
            .as_ref()
            .to_vec();
        let last = der.last_mut().context("an empty CSR")?;
        *last ^= 0x01;
        let error = CheckedCsr::from_der(&der.clone().into())
            .err()
            .context("a forged CSR was accepted")?;
        assert_eq!(error, CsrError::BadSignature);
        assert_eq!(
            error.to_string(),
            "the certificate signing request is not valid: its signature does not match its key"
        );
        // Cut short, or with bytes after it.
        der.pop();
        assert!(matches!(
            CheckedCsr::from_der(&der.clone().into()),
            Err(CsrError::Malformed(_))
        ));
        let mut long = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())?
            .as_ref()
            .to_vec();
        long.push(0);
        assert_eq!(
            CheckedCsr::from_der(&long.into()).err(),
            Some(CsrError::Malformed("1 bytes follow the request".into()))
        );
        Ok(())
    }

    #[test]
    fn only_p256_keys_are_signed() -> anyhow::Result<()> {
        let ca = ca()?;
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        for (key, found) in [(&p384, "an EC key on P-384"), (&ed25519, "an Ed25519 key")] {
            let csr = CertificateParams::default().serialize_request(key)?.pem()?;
            let error = ca
                .sign_csr(&csr, &app("app-a")?, Validity::starting_now(DAY))
                .err()
                .with_context(|| format!("{found} was signed"))?;
            assert_eq!(
                error.to_string(),
                format!(
                    "the certificate signing request's key is {found}; the fleet uses ECDSA P-256"
                )
            );
        }
        Ok(())
    }

    #[test]
    fn the_key_is_checked_not_the_signature_algorithm() -> anyhow::Result<()> {
        // rcgen takes the key's type from the signature algorithm, so it reads this P-384 key
        // as a P-256 one...
        let requested = rcgen::CertificateSigningRequestParams::from_pem(P384_SIGNED_WITH_SHA256)?;
        assert_eq!(requested.public_key.algorithm(), &PKCS_ECDSA_P256_SHA256);
        // ...which is why the key itself is what is checked.
        let error = CheckedCsr::parse(P384_SIGNED_WITH_SHA256)
            .err()
            .context("a P-384 key signed with SHA-256 was accepted")?;
        assert_eq!(
            error,
            CsrError::UnsupportedKey {
                found: "an EC key on P-384".into()
            }
        );
        Ok(())
    }

    #[test]
    fn a_checked_csr_names_its_key_by_the_hash_of_its_public_key_info() -> anyhow::Result<()> {
        let key = gatehouse_transport::new_p256_key()?;
        let expected = hex::encode(Sha256::digest(key.subject_public_key_info()));
        let mut hashes = Vec::new();
        for name in ["one", "two"] {
            let csr = CertificateParams::new(vec![name.to_owned()])?
                .serialize_request(&key)?
                .pem()?;
            let checked = CheckedCsr::parse(&csr)?;
            assert_eq!(checked.key_sha256(), expected);
            hashes.push(checked.key_sha256().to_owned());
            // The certificate holds the very same key.
            let cert = ca()?.sign_checked(&checked, &app("app-a")?, Validity::starting_now(DAY))?;
            assert!(contains_key(&cert, &key)?);
        }
        let other = CheckedCsr::parse(&new_key_and_csr("x")?.csr_pem)?;
        assert_ne!(other.key_sha256(), hashes[0]);
        Ok(())
    }

    #[test]
    fn relay_identities_are_never_given_to_appliances() -> anyhow::Result<()> {
        let ca = ca()?;
        let csr = new_key_and_csr("relay")?.csr_pem;
        for reserved in ["relay", "relay-2"] {
            let error = ca
                .sign_csr(&csr, &app(reserved)?, Validity::starting_now(DAY))
                .err()
                .with_context(|| format!("{reserved} was signed"))?;
            assert!(matches!(error, PkiError::ReservedIdentity(_)), "{error:?}");
        }
        for ordinary in ["relayer", "relay.b", "my-relay"] {
            assert!(!is_relay_identity(ordinary), "{ordinary}");
        }
        // The relay's own certificate comes from issue_client_cert.
        let relay = ca.issue_client_cert(RELAY_IDENTITY, Validity::starting_now(DAY))?;
        verify_client(&ca, &relay.cert_pem, UnixTime::now())??;
        assert_eq!(common_name_of(&relay.cert_pem)?, "relay");
        Ok(())
    }

    #[test]
    fn client_identities_that_could_steer_acl_patterns_are_refused() -> anyhow::Result<()> {
        let ca = ca()?;
        for bad in ["app-a/up", "#", "+", "App-A", "", "a b"] {
            let error = ca
                .issue_client_cert(bad, Validity::starting_now(DAY))
                .err()
                .with_context(|| format!("{bad:?} was issued"))?;
            assert!(
                matches!(error, PkiError::BadIdentity { .. }),
                "{bad}: {error:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_server_certificate_serves_its_names_and_cannot_authenticate_a_client()
    -> anyhow::Result<()> {
        let ca = ca()?;
        let server =
            ca.issue_server_cert(&["localhost", "127.0.0.1"], Validity::starting_now(DAY))?;
        verify_server(&ca, &server.cert_pem, "localhost")??;
        verify_server(&ca, &server.cert_pem, "127.0.0.1")??;
        assert!(verify_server(&ca, &server.cert_pem, "example.com")?.is_err());
        assert_eq!(
            parse(&server.cert_pem)?.extended_key_usages()?,
            vec![x509::SERVER_AUTH.to_vec()]
        );
        assert!(verify_client(&ca, &server.cert_pem, UnixTime::now())?.is_err());
        // And a client certificate cannot serve.
        let client = ca.issue_client_cert("app-a", Validity::starting_now(DAY))?;
        assert!(verify_server(&ca, &client.cert_pem, "localhost")?.is_err());
        Ok(())
    }

    #[test]
    fn a_saved_ca_loads_and_keeps_signing_for_the_same_root() -> anyhow::Result<()> {
        let ca = ca()?;
        let loaded = FleetCa::load(ca.cert_pem(), ca.key_pem())?;
        let csr = new_key_and_csr("x")?.csr_pem;
        let cert = loaded.sign_csr(&csr, &app("app-a")?, Validity::starting_now(DAY))?;
        verify_client(&ca, &cert, UnixTime::now())??;

        let other = FleetCa::generate("another CA")?;
        let error = FleetCa::load(ca.cert_pem(), other.key_pem())
            .err()
            .context("a foreign key was accepted")?;
        assert_eq!(
            error.to_string(),
            "cannot load the fleet CA: the private key does not belong to the certificate"
        );
        assert!(matches!(
            FleetCa::load("garbage", ca.key_pem()),
            Err(PkiError::BadCa(_))
        ));
        assert!(matches!(
            FleetCa::load(ca.cert_pem(), "garbage"),
            Err(PkiError::BadCa(_))
        ));
        // A leaf certificate is not a CA.
        let leaf = ca.issue_client_cert("app-a", Validity::starting_now(DAY))?;
        assert!(matches!(
            FleetCa::load(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::BadCa(_))
        ));
        // A certificate from another CA does not chain to this one.
        let foreign = other.issue_client_cert("app-a", Validity::starting_now(DAY))?;
        assert!(verify_client(&ca, &foreign.cert_pem, UnixTime::now())?.is_err());
        Ok(())
    }

    #[test]
    fn a_server_certificate_needs_a_name() -> anyhow::Result<()> {
        let error = ca()?
            .issue_server_cert(&[], Validity::starting_now(DAY))
            .err()
            .context("a nameless server certificate was issued")?;
        assert!(matches!(error, PkiError::NoServerName), "{error:?}");
        Ok(())
    }

    #[test]
    fn keys_are_never_printed() -> anyhow::Result<()> {
        let ca = ca()?;
        let issued = ca.issue_client_cert("app-a", Validity::starting_now(DAY))?;
        assert!(!format!("{ca:?}").contains(ca.key_pem()));
        assert!(!format!("{issued:?}").contains(&issued.key_pem));
        Ok(())
    }
}
