//! The transport policy shared by appliances, relays and their tests: MQTT v5 over TLS 1.3
//! only, with a client certificate, verified against the fleet CA, using rustls with the
//! `ring` provider. One place, so the two ends can never drift apart.
//!
//! - TLS: [`provider`] (ring, never aws-lc), [`TLS_VERSIONS`] (1.3 only), and the
//!   configurations built from them: [`tls13_client_config`], [`tls13_server_config`],
//!   [`client_verifier`] (what a broker checks of a client certificate).
//! - PEM: [`certificates_from_pem`], [`private_key_from_pem`], [`root_store`], and the
//!   file-reading [`read_certificates`] / [`read_private_key`].
//! - Keys: every identity is ECDSA P-256 (what appliances' TPMs hold): [`new_p256_key`],
//!   [`p256_key_from_pem`], [`csr_pem`], [`new_p256_key_and_csr`].
//! - MQTT: [`TlsIdentity`] (CA, certificate and key, PEM) and its [`TlsIdentity::mqtt_options`].
//!
//! Nothing here knows appliances, relays or topics.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, SupportedProtocolVersion};

/// The largest MQTT packet either end accepts; batches are sized well below it.
pub const MAX_PACKET_BYTES: u32 = 4 * 1024 * 1024;

/// QoS 1 messages an MQTT client may have in flight at once (see `TlsIdentity::mqtt_options`).
pub const MAX_OUTGOING_INFLIGHT: u16 = 100;

/// The only TLS version Gatehouse speaks, on every connection: 1.3 has no negotiable weak
/// ciphers or renegotiation, and both ends are ours.
pub static TLS_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Why PEM text gave no usable certificate or key. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("no PEM {0} found")]
    Missing(&'static str),
    #[error("invalid PEM: {0}")]
    Invalid(#[from] rustls::pki_types::pem::Error),
    #[error("not a usable CA certificate: {0}")]
    UnusableCa(rustls::Error),
}

/// Why a TLS identity, configuration or key could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `what` names the file or field the PEM came from.
    #[error("{what}: {source}")]
    Pem {
        what: String,
        #[source]
        source: PemError,
    },
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build a certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot make or read the key or the certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the key is not ECDSA P-256 (the only algorithm of Gatehouse identities)")]
    NotP256,
}

impl TransportError {
    fn pem(what: &str) -> impl FnOnce(PemError) -> TransportError {
        let what = what.to_owned();
        move |source| TransportError::Pem { what, source }
    }
}

/// The crypto provider of every Gatehouse TLS connection and certificate check: ring (the
/// aws-lc provider is never built: its build script alone is the slowest part of a build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in `pem`, in order; at least one.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certificates = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certificates.is_empty() {
        return Err(PemError::Missing("certificate"));
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::Missing("private key"),
        other => PemError::Invalid(other),
    })
}

/// `certificates` as trust anchors; each must be a usable CA certificate.
pub fn root_store(certificates: Vec<CertificateDer<'static>>) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(PemError::UnusableCa)?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The certificates of a PEM file (a chain, leaf first, or CAs); at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    certificates_from_pem(&read(path)?).map_err(TransportError::pem(&path.display().to_string()))
}

/// The private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    private_key_from_pem(&read(path)?).map_err(TransportError::pem(&path.display().to_string()))
}

/// A client configuration: TLS 1.3 only, ring, `roots` as the only trust anchors, and
/// `certificate` (chain, key) as the client certificate when the server asks for one.
pub fn tls13_client_config(
    roots: RootCertStore,
    certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)?
        .with_root_certificates(roots);
    Ok(match certificate {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    })
}

/// A server configuration: TLS 1.3 only, ring, `chain` (leaf first) with `key`, no client
/// certificates (HTTPS; the broker, not us, checks appliances' certificates).
pub fn tls13_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TransportError> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?)
}

/// What a broker that trusts only `roots` makes of a client certificate (chain, validity,
/// client-authentication usage): the check a claimed certificate must pass before it is kept.
pub fn client_verifier(
    roots: RootCertStore,
) -> Result<Arc<dyn ClientCertVerifier>, TransportError> {
    Ok(
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
            .build()?,
    )
}

/// A new ECDSA P-256 key pair.
pub fn new_p256_key() -> Result<KeyPair, TransportError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

/// The ECDSA P-256 key in `pem`; a key of another algorithm is refused.
pub fn p256_key_from_pem(pem: &str) -> Result<KeyPair, TransportError> {
    // rcgen's messages never quote the key.
    let key = KeyPair::from_pem(pem)?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(TransportError::NotP256);
    }
    Ok(key)
}

/// A certificate signing request (PEM) for `key`, with `common_name` in its subject. A CA
/// that assigns identities (the relay's fleet CA) takes only the key from it.
pub fn csr_pem(key: &KeyPair, common_name: &str) -> Result<String, TransportError> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    params.distinguished_name = subject;
    Ok(params.serialize_request(key)?.pem()?)
}

/// A fresh private key (PKCS#8 PEM) and a certificate signing request for it (PEM).
#[derive(Clone)]
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("KeyAndCsr")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// A new ECDSA P-256 key and a CSR for it with `common_name` in its subject.
pub fn new_p256_key_and_csr(common_name: &str) -> Result<KeyAndCsr, TransportError> {
    let key = new_p256_key()?;
    Ok(KeyAndCsr {
        csr_pem: csr_pem(&key, common_name)?,
        key_pem: key.serialize_pem(),
    })
}

/// A fleet CA, and this end's certificate chain and private key, all PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TransportError> {
        Ok(TlsIdentity {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// A rustls client configuration: TLS 1.3 only, the fleet CA as the only root, this
    /// identity as the client certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let roots = certificates_from_pem(&self.ca_pem)
            .and_then(root_store)
            .map_err(TransportError::pem("CA"))?;
        let chain =
            certificates_from_pem(&self.cert_pem).map_err(TransportError::pem("certificate"))?;
        let key =
            private_key_from_pem(&self.key_pem).map_err(TransportError::pem("private key"))?;
        tls13_client_config(roots, Some((chain, key)))
    }

    /// MQTT v5 options for `client_id` at `host:port` over this identity.
    pub fn mqtt_options(
        &self,
        client_id: &str,
        host: &str,
        port: u16,
    ) -> Result<MqttOptions, TransportError> {
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
                self.client_config()?,
            ))))
            .set_keep_alive(Duration::from_secs(30))
            .set_connection_timeout(10)
            .set_max_packet_size(Some(MAX_PACKET_BYTES))
            // rumqttc sizes its in-flight table by this bound (65,535 by default): about
            // 14 MiB per client before a single message (docs/benchmarks.md, Relay). Both ends
            // keep far fewer QoS 1 messages in flight than 100.
            .set_outgoing_inflight_upper_limit(MAX_OUTGOING_INFLIGHT);
        // An alarm is one small packet: Nagle's algorithm would hold it behind the previous
        // one's ACK, which the peer may delay by up to 40 ms.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        Ok(options)
    }
}

#[cfg(test)]
mod tests;
