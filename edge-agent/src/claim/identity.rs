//! The appliance's identity: its key pair (made here, never sent), the checks on the relay's
//! answer, and the files in the identity folder.
//!
//! # Files, and replacing them
//!
//! The live identity is `appliance.key`, `appliance.pem` and `fleet-ca.pem`. A claim never
//! writes them directly: it stages its own next to them, with a `.new` suffix, and moves them
//! into place only once the relay's answer checked out, so that a claim that fails (a refused
//! code, an unreachable relay, a wrong answer) leaves a working identity working:
//!
//! ```text
//!  1. appliance.key.new   the new key (0600), before the code is sent
//!  2. fleet-ca.pem.new    after the answer checked out
//!  3. appliance.pem.new   last: its presence means the staged identity is complete
//!  4. rename appliance.key.new → appliance.key, fleet-ca.pem.new → fleet-ca.pem,
//!     and last appliance.pem.new → appliance.pem
//! ```
//!
//! Every write goes through a temporary file and a rename, and the folder is synced after
//! each step, so a crash leaves each file whole, old or new. A crash during step 4 can leave
//! the new key beside the old certificate (a pair that does not match); the staged certificate
//! is still there then, so the next `claim` into the folder finishes step 4 before anything
//! else ([`IdentityDir::open`]). Before step 3, the live identity is untouched and the staged
//! key is what an unfinished claim left: the next claim reuses it (never with `--force`, which
//! asks for a new key).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use gatehouse_protocol::ApplianceId;
use gatehouse_transport::TransportError;
use rcgen::{KeyPair, PublicKeyData as _};
use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::ClaimError;
use super::relay::ClaimReply;

/// The appliance's private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "appliance.key";
/// The appliance's certificate (PEM), signed by the fleet CA. Moved into place last: it marks
/// a complete identity.
pub const CERT_FILE: &str = "appliance.pem";
/// The fleet CA (PEM) that signed the appliance's and the broker's certificates.
pub const CA_FILE: &str = "fleet-ca.pem";

/// What a staged file's name adds to the live one's.
const STAGED: &str = ".new";

/// What goes in the CSR's subject, for people reading it; the relay writes its own CN.
const CSR_COMMON_NAME: &str = "gatehouse appliance";

/// A reply that checked out: the identity to write and announce.
#[derive(Debug)]
pub(super) struct VerifiedIdentity {
    pub appliance_id: ApplianceId,
    pub certificate_pem: String,
    pub ca_pem: String,
    /// `host:port` of the broker.
    pub broker: String,
}

/// The identity folder, absolute.
#[derive(Debug)]
pub(super) struct IdentityDir {
    path: PathBuf,
}

impl IdentityDir {
    /// Makes `dir` (0700) if needed, finishes a replacement a crash interrupted, and stages
    /// the key for this claim: a new one, or the one an unfinished claim staged. Refuses a
    /// folder that holds a complete identity unless `force`; even then, that identity stays in
    /// place until [`IdentityDir::install`].
    pub(super) fn open(dir: &Path, force: bool) -> Result<(IdentityDir, KeyPair), ClaimError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ClaimError::io("create", dir, source))?;
        let path = fs::canonicalize(dir).map_err(|source| ClaimError::io("open", dir, source))?;
        let identity = IdentityDir { path };
        if identity.staged(CERT_FILE).exists() {
            tracing::warn!(
                dir = %identity.path.display(),
                "finishing the replacement of the identity that an interrupted claim began"
            );
            identity.move_staged_into_place()?;
        }
        if identity.file(CERT_FILE).exists() && !force {
            return Err(ClaimError::IdentityExists { dir: identity.path });
        }
        if force {
            remove_if_present(&identity.staged(KEY_FILE))?;
        }
        let key = match identity.create_key()? {
            Some(key) => key,
            None => identity.reuse_key()?,
        };
        Ok((identity, key))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn staged(&self, name: &str) -> PathBuf {
        self.file(&staged_name(name))
    }

    /// A new P-256 key staged in a new file (never over an existing one), or `None` if one is
    /// staged already.
    fn create_key(&self) -> Result<Option<KeyPair>, ClaimError> {
        let path = self.staged(KEY_FILE);
        let key = gatehouse_transport::new_p256_key().map_err(ClaimError::KeyGeneration)?;
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(source) => return Err(ClaimError::io("create", &path, source)),
        };
        let written = file
            .write_all(key.serialize_pem().as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            // A truncated key would only be refused by the next attempt.
            let _ = fs::remove_file(&path);
            return Err(ClaimError::io("write", &path, source));
        }
        sync_dir(&self.path)?;
        Ok(Some(key))
    }

    /// The key an unfinished claim staged: no certificate was kept for it, so it is still
    /// this appliance's to use.
    fn reuse_key(&self) -> Result<KeyPair, ClaimError> {
        let path = self.staged(KEY_FILE);
        let unusable = |reason: String| ClaimError::UnusableKey {
            path: path.clone(),
            reason,
        };
        let pem = fs::read_to_string(&path).map_err(|error| unusable(error.to_string()))?;
        let key = gatehouse_transport::p256_key_from_pem(&pem).map_err(|error| {
            unusable(match error {
                TransportError::NotP256 => "not an ECDSA P-256 key".to_owned(),
                other => format!("not a PEM private key ({other})"),
            })
        })?;
        tracing::info!(key = %path.display(), "reusing the key of an unfinished claim");
        Ok(key)
    }

    /// Stages the fleet CA, then the certificate (the marker of a complete staged identity),
    /// and moves the staged identity into place.
    pub(super) fn install(&self, identity: &VerifiedIdentity) -> Result<(), ClaimError> {
        self.write_atomically(&staged_name(CA_FILE), &identity.ca_pem)?;
        self.write_atomically(&staged_name(CERT_FILE), &identity.certificate_pem)?;
        sync_dir(&self.path)?;
        self.move_staged_into_place()
    }

    /// Renames the staged files over the live ones: the key first, the certificate last, so
    /// the staged certificate is there until every other file is in place (see the module
    /// documentation). Files already moved by an interrupted run are skipped.
    fn move_staged_into_place(&self) -> Result<(), ClaimError> {
        for name in [KEY_FILE, CA_FILE, CERT_FILE] {
            let (staged, live) = (self.staged(name), self.file(name));
            match fs::rename(&staged, &live) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ClaimError::io("move into place", &staged, source)),
                Ok(()) => sync_dir(&self.path)?,
            }
        }
        Ok(())
    }

    /// Writes the file `name` through a temporary file and a rename, so that a crash leaves
    /// either the old file or the new one, never half of one.
    fn write_atomically(&self, name: &str, contents: &str) -> Result<(), ClaimError> {
        let path = self.file(name);
        let temporary = self.file(&format!(".{name}.tmp"));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(contents.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temporary, &path));
        written.map_err(|source| {
            let _ = fs::remove_file(&temporary);
            ClaimError::io("write", &path, source)
        })
    }
}

/// The name of the staged version of the file `name`.
fn staged_name(name: &str) -> String {
    format!("{name}{STAGED}")
}

fn remove_if_present(path: &Path) -> Result<(), ClaimError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(ClaimError::io("remove", path, error))
        }
        _ => Ok(()),
    }
}

/// Makes the folder's entries (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> Result<(), ClaimError> {
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| ClaimError::io("sync", dir, source))
}

/// A CSR for `key`, PEM.
pub(super) fn csr_pem(key: &KeyPair) -> Result<String, ClaimError> {
    gatehouse_transport::csr_pem(key, CSR_COMMON_NAME).map_err(ClaimError::KeyGeneration)
}

/// Checks the relay's answer against what this appliance asked for: a valid appliance id and
/// broker, a certificate for `key` whose CN is that id, accepted at `now` as a client
/// certificate by a verifier that trusts only the answer's fleet CA (as the broker will).
pub(super) fn verify(
    reply: &ClaimReply,
    key: &KeyPair,
    now: UnixTime,
) -> Result<VerifiedIdentity, ClaimError> {
    let bad = ClaimError::BadReply;
    let appliance_id = ApplianceId::new(reply.appliance_id.clone())
        .map_err(|error| bad(format!("the appliance id is not valid: {error}")))?;
    let broker = broker_address(&reply.broker.host, reply.broker.port).map_err(bad)?;
    let fleet_ca = certificates(&reply.ca_pem, "ca_pem")?;
    let chain = certificates(&reply.certificate_pem, "certificate_pem")?;
    let Some((certificate, intermediates)) = chain.split_first() else {
        return Err(bad("certificate_pem holds no certificate".to_owned()));
    };
    check_subject(certificate, key, &appliance_id)?;
    check_chain(certificate, intermediates, fleet_ca, now)?;
    Ok(VerifiedIdentity {
        appliance_id,
        certificate_pem: reply.certificate_pem.clone(),
        ca_pem: reply.ca_pem.clone(),
        broker,
    })
}

/// `host:port`, if the host could be one (no spaces, quotes, slashes or control characters
/// that would make the config or the connection mean something else). An IPv6 address goes
/// unbracketed: `uplink.broker` is split at its last colon.
fn broker_address(host: &str, port: u16) -> Result<String, String> {
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !plausible {
        return Err(format!(
            "the broker host {host:?} is not a host name or address"
        ));
    }
    if port == 0 {
        return Err("the broker port is 0".to_owned());
    }
    Ok(format!("{host}:{port}"))
}

/// The certificates of a PEM field of the answer; at least one.
fn certificates(
    pem: &str,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClaimError> {
    gatehouse_transport::certificates_from_pem(pem.as_bytes())
        .map_err(|error| ClaimError::BadReply(format!("{field}: {error}")))
}

/// The certificate is for this appliance's key and names exactly the appliance id.
fn check_subject(
    certificate: &CertificateDer<'_>,
    key: &KeyPair,
    appliance_id: &ApplianceId,
) -> Result<(), ClaimError> {
    let bad = ClaimError::BadReply;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| bad(format!("the certificate cannot be parsed: {error}")))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(bad(
            "the certificate is for another key than this appliance's".to_owned(),
        ));
    }
    let names = parsed
        .subject()
        .iter_common_name()
        .map(|name| name.as_str().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(format!("the certificate's CN is not text: {error}")))?;
    if names != [appliance_id.as_str()] {
        return Err(bad(format!(
            "the certificate names {names:?}, not the appliance id `{appliance_id}`"
        )));
    }
    Ok(())
}

/// The certificate chains to the fleet CA and may authenticate a client, now.
fn check_chain(
    certificate: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    fleet_ca: Vec<CertificateDer<'static>>,
    now: UnixTime,
) -> Result<(), ClaimError> {
    let bad = ClaimError::BadReply;
    // The broker's own check: only the answer's fleet CA is trusted.
    let verifier = gatehouse_transport::root_store(fleet_ca)
        .map_err(|error| bad(format!("ca_pem: {error}")))
        .and_then(|roots| {
            gatehouse_transport::client_verifier(roots)
                .map_err(|error| bad(format!("ca_pem: {error}")))
        })?;
    verifier
        .verify_client_cert(certificate, intermediates, now)
        .map(|_| ())
        .map_err(|error| {
            bad(match error {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                ) => "the certificate is not valid yet: is this appliance's clock right? \
                      (check `date`, NTP)"
                    .to_owned(),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "the certificate has expired: is this appliance's clock right? \
                      (check `date`, NTP)"
                    .to_owned(),
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    "the certificate is not signed by the fleet CA of the answer".to_owned()
                }
                other => format!("the certificate is not a valid client certificate: {other}"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_hosts_that_could_change_the_meaning_of_the_config_are_refused() {
        assert_eq!(
            broker_address("broker.example.com", 8883).as_deref(),
            Ok("broker.example.com:8883")
        );
        assert_eq!(broker_address("::1", 8883).as_deref(), Ok("::1:8883"));
        for host in [
            "",
            "a b",
            "host\"\n[api]",
            "evil/x",
            "[::1]",
            &"a".repeat(254),
        ] {
            assert!(broker_address(host, 8883).is_err(), "{host:?}");
        }
        assert_eq!(
            broker_address("broker", 0),
            Err("the broker port is 0".to_owned())
        );
    }

    #[test]
    fn a_leftover_key_is_reused_unless_unusable_and_never_shown() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let (_, first) = IdentityDir::open(folder.path(), false)?;
        let (_, again) = IdentityDir::open(folder.path(), false)?;
        assert_eq!(again.serialize_der(), first.serialize_der());
        let (_, forced) = IdentityDir::open(folder.path(), true)?;
        assert_ne!(forced.serialize_der(), first.serialize_der());

        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
        let staged_key = folder.path().join("appliance.key.new");
        fs::write(
            &staged_key,
            format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
        )?;
        let error = IdentityDir::open(folder.path(), false)
            .err()
            .map(|e| format!("{e} {e:?}"))
            .unwrap_or_default();
        assert!(
            error.contains(
                "is left from an unfinished claim but is not usable: not a PEM private key"
            ),
            "{error}"
        );
        assert!(error.contains("--force"), "{error}");
        assert!(!error.contains(secret), "{error}");
        Ok(())
    }

    /// The live identity's files, `None` for a missing one.
    fn live(folder: &Path) -> [Option<String>; 3] {
        [KEY_FILE, CA_FILE, CERT_FILE].map(|name| fs::read_to_string(folder.join(name)).ok())
    }

    #[test]
    fn a_replacement_interrupted_after_staging_is_finished_and_before_it_is_ignored()
    -> anyhow::Result<()> {
        let old = [KEY_FILE, CA_FILE, CERT_FILE].map(|name| Some(format!("old {name}")));
        let new = [KEY_FILE, CA_FILE, CERT_FILE].map(|name| Some(format!("new {name}")));
        // A crash after each of the renames of `move_staged_into_place` (key, CA, certificate).
        for renamed in 0..=3 {
            let folder = tempfile::tempdir()?;
            for name in [KEY_FILE, CA_FILE, CERT_FILE] {
                fs::write(folder.path().join(name), format!("old {name}"))?;
                fs::write(
                    folder.path().join(format!("{name}.new")),
                    format!("new {name}"),
                )?;
            }
            for name in &[KEY_FILE, CA_FILE, CERT_FILE][..renamed] {
                fs::rename(
                    folder.path().join(format!("{name}.new")),
                    folder.path().join(name),
                )?;
            }
            let refused = IdentityDir::open(folder.path(), false).err();
            assert!(
                matches!(refused, Some(ClaimError::IdentityExists { .. })),
                "{renamed}: {refused:?}"
            );
            assert_eq!(live(folder.path()), new, "after {renamed} renames");
            assert!(
                !fs::read_dir(folder.path())?
                    .any(|entry| entry
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".new"))),
                "after {renamed} renames, something is still staged"
            );
        }

        // A crash before the certificate was staged: the live identity stays as it was.
        let folder = tempfile::tempdir()?;
        for name in [KEY_FILE, CA_FILE, CERT_FILE] {
            fs::write(folder.path().join(name), format!("old {name}"))?;
        }
        for name in [KEY_FILE, CA_FILE] {
            fs::write(
                folder.path().join(format!("{name}.new")),
                format!("new {name}"),
            )?;
        }
        let refused = IdentityDir::open(folder.path(), false).err();
        assert!(
            matches!(refused, Some(ClaimError::IdentityExists { .. })),
            "{refused:?}"
        );
        assert_eq!(live(folder.path()), old);
        Ok(())
    }
}
