//! The transport policy shared by appliances, relays and their tests: MQTT v5 over TLS 1.3
//! only, with a client certificate, verified against the fleet CA, using rustls with the
//! `ring` provider. One place, so the two ends can never drift apart.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS identity or configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no PEM {kind} found")]
    NoPem {
        what: &'static str,
        kind: &'static str,
    },
    #[error("{what}: invalid PEM: {source}")]
    BadPem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
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

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsIdentity {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TransportError> {
        Ok(TlsIdentity {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    fn certificates(
        pem: &[u8],
        what: &'static str,
    ) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        let certificates = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TransportError::BadPem { what, source })?;
        if certificates.is_empty() {
            return Err(TransportError::NoPem {
                what,
                kind: "certificate",
            });
        }
        Ok(certificates)
    }

    /// A rustls client configuration: TLS 1.3 only, the fleet CA as the only root, this
    /// identity as the client certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in Self::certificates(&self.ca_pem, "CA")? {
            roots.add(certificate)?;
        }
        let chain = Self::certificates(&self.cert_pem, "certificate")?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &self.key_pem[..])
            .map_err(|source| TransportError::BadPem {
                what: "private key",
                source,
            })?
            .ok_or(TransportError::NoPem {
                what: "private key",
                kind: "key",
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(config)
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
            .set_max_packet_size(Some(MAX_PACKET_BYTES));
        Ok(options)
    }
}

/// The largest MQTT packet either end accepts; batches are sized well below it.
pub const MAX_PACKET_BYTES: u32 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_a_clear_error_and_the_key_is_never_printed() {
        let identity = TlsIdentity {
            ca_pem: b"not pem".to_vec(),
            cert_pem: Vec::new(),
            key_pem: b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".to_vec(),
        };
        let error = identity.client_config().err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("CA: no PEM certificate found"));
        assert!(!format!("{identity:?}").contains("secret"));
    }
}
