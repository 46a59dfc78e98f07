//! The policy, checked against real handshakes in memory (rustls on both sides, no sockets)
//! with certificates made here.

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PKCS_ED25519, PublicKeyData as _,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::UnixTime;
use rustls::{ClientConnection, ServerConnection};

use super::*;

/// A CA that signs server and client certificates for the tests.
struct TestCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> anyhow::Result<TestCa> {
        let key = new_p256_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?.der().clone();
        Ok(TestCa {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        Ok(root_store(vec![self.cert.clone()])?)
    }

    /// A leaf for `name` with one extended key usage; its chain and key.
    fn leaf(
        &self,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = new_p256_key()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = private_key_from_pem(key.serialize_pem().as_bytes())?;
        Ok((vec![cert.der().clone()], key))
    }
}

/// Runs a TLS handshake between the two ends in memory; the first error either end raises.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
) -> anyhow::Result<Result<ClientConnection, rustls::Error>> {
    let mut client = ClientConnection::new(Arc::new(client), ServerName::try_from("localhost")?)?;
    let mut server = ServerConnection::new(Arc::new(server))?;
    // A handshake of TLS 1.3 takes a few flights; a stalled one ends the loop.
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(Ok(client));
        }
        let mut flight = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut flight)?;
        }
        if !flight.is_empty() {
            server.read_tls(&mut flight.as_slice())?;
            if let Err(error) = server.process_new_packets() {
                return Ok(Err(error));
            }
        }
        let mut flight = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut flight)?;
        }
        if !flight.is_empty() {
            client.read_tls(&mut flight.as_slice())?;
            if let Err(error) = client.process_new_packets() {
                return Ok(Err(error));
            }
        }
    }
    anyhow::bail!("the handshake stalled")
}

#[test]
fn client_and_server_agree_on_tls_1_3_and_a_tls_1_2_client_is_refused() -> anyhow::Result<()> {
    let ca = TestCa::new("test CA")?;
    let (chain, key) = ca.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let server = tls13_server_config(chain, key)?;

    let client = handshake(tls13_client_config(ca.roots()?, None)?, server.clone())??;
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let tls12_only = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(ca.roots()?)
        .with_no_client_auth();
    assert!(
        handshake(tls12_only, server.clone())?.is_err(),
        "a TLS 1.2 client was served"
    );

    let stranger = TestCa::new("another CA")?;
    let refused = handshake(tls13_client_config(stranger.roots()?, None)?, server)?;
    assert!(
        matches!(
            refused,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn the_client_verifier_takes_only_client_certificates_of_its_roots() -> anyhow::Result<()> {
    let ca = TestCa::new("fleet CA")?;
    let verifier = client_verifier(ca.roots()?)?;
    let now = UnixTime::now();

    let (client, _) = ca.leaf("app-1", ExtendedKeyUsagePurpose::ClientAuth)?;
    assert!(verifier.verify_client_cert(&client[0], &[], now).is_ok());

    let (server, _) = ca.leaf("broker", ExtendedKeyUsagePurpose::ServerAuth)?;
    assert!(
        verifier.verify_client_cert(&server[0], &[], now).is_err(),
        "a server certificate passed as a client's"
    );
    let (foreign, _) =
        TestCa::new("another CA")?.leaf("app-1", ExtendedKeyUsagePurpose::ClientAuth)?;
    assert!(matches!(
        verifier.verify_client_cert(&foreign[0], &[], now),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    ));
    Ok(())
}

#[test]
fn the_csr_is_for_a_new_p256_key_and_the_key_is_never_printed() -> anyhow::Result<()> {
    let made = new_p256_key_and_csr("lobby appliance")?;
    let key = p256_key_from_pem(&made.key_pem)?;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&made.csr_pem)?;
    assert_eq!(
        csr.public_key.subject_public_key_info(),
        key.subject_public_key_info(),
        "the CSR carries another key"
    );
    assert_eq!(
        csr.params.distinguished_name.get(&DnType::CommonName),
        Some(&rcgen::DnValue::Utf8String("lobby appliance".to_owned()))
    );
    let shown = format!("{made:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    let other = KeyPair::generate_for(&PKCS_ED25519)?;
    assert!(matches!(
        p256_key_from_pem(&other.serialize_pem()),
        Err(TransportError::NotP256)
    ));
    Ok(())
}

#[test]
fn bad_pem_is_named_and_the_key_is_never_printed() -> anyhow::Result<()> {
    let identity = TlsIdentity {
        ca_pem: b"not pem".to_vec(),
        cert_pem: Vec::new(),
        key_pem: b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".to_vec(),
    };
    let error = identity.client_config().err().map(|e| e.to_string());
    assert_eq!(error.as_deref(), Some("CA: no PEM certificate found"));
    assert!(!format!("{identity:?}").contains("secret"));

    let folder = tempfile::tempdir()?;
    let empty = folder.path().join("empty.pem");
    std::fs::write(&empty, "")?;
    let error = read_certificates(&empty).err().map(|e| e.to_string());
    assert_eq!(
        error,
        Some(format!("{}: no PEM certificate found", empty.display()))
    );
    let key = folder.path().join("broken.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n")?;
    let error = read_private_key(&key)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!("{}: invalid PEM", key.display())),
        "{error}"
    );
    assert!(!error.contains("c2VjcmV0"), "{error}");
    let missing = folder.path().join("missing.key");
    let error = read_private_key(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!("cannot read {}: ", missing.display())),
        "{error}"
    );
    Ok(())
}
