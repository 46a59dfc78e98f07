//! Signed media URLs: a browser's `<video>` or `<img>` cannot send a bearer token, so the API
//! hands out URLs that carry their own short-lived authorisation.
//!
//! A URL's query is `expires=UNIX_SECONDS&signature=HEX`, the signature being HMAC-SHA256, under
//! the agent's media key, of `SCOPE\nEXPIRES`. The scope binds the URL to one thing:
//! `live:CAMERA` (the playlist and its segments), `snapshot:CAMERA` or `clip:ID` (the clip and
//! its snapshot). A signature for one scope opens nothing else; an expired one opens nothing.
//!
//! The key is 32 random bytes in `media.key` in the video storage (mode 0600), made at first
//! start, so URLs stay valid across a restart and a new key (delete the file) revokes them all.

use std::io::Write as _;
use std::path::Path;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Why a media URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("this media URL is not signed: ask the API for a signed one")]
    Missing,
    #[error("this media URL's signature does not match it")]
    Invalid,
    #[error("this media URL expired: ask the API for a new one")]
    Expired,
}

/// Signs and checks media URLs.
#[derive(Clone)]
pub struct MediaSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for MediaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaSigner(..)")
    }
}

impl MediaSigner {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The key in `path`, made (0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    std::io::Error::other(format!(
                        "{} is not a 32-byte media key: delete it to make a new one",
                        path.display()
                    ))
                })?;
                Ok(Self::new(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0_u8; 32];
                rand::rng().fill_bytes(&mut key);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(Self::new(key))
            }
            Err(error) => Err(error),
        }
    }

    fn mac(&self, scope: &str, expires: i64) -> Hmac<Sha256> {
        // HMAC pads a short key with zeros to the hash's block size (RFC 2104): the same
        // key, given whole.
        let mut block = [0_u8; 64];
        block[..32].copy_from_slice(&self.key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(scope.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The query string for `scope`, valid until `expires` (Unix seconds).
    pub fn query(&self, scope: &str, expires: i64) -> String {
        let signature = hex::encode(self.mac(scope, expires).finalize().into_bytes());
        format!("expires={expires}&signature={signature}")
    }

    /// Checks a URL's `expires` and `signature` for `scope` at `now` (Unix seconds).
    pub fn verify(
        &self,
        scope: &str,
        expires: Option<&str>,
        signature: Option<&str>,
        now: i64,
    ) -> Result<(), SignatureError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(SignatureError::Missing);
        };
        let expires: i64 = expires.parse().map_err(|_| SignatureError::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        // Constant-time comparison.
        self.mac(scope, expires)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Invalid)?;
        if expires < now {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(query: &str) -> (String, String) {
        let mut expires = String::new();
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", value)) => expires = value.to_owned(),
                Some(("signature", value)) => signature = value.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn a_signed_url_opens_its_scope_until_it_expires() {
        let signer = MediaSigner::new([7; 32]);
        let (expires, signature) = parts(&signer.query("live:cam.lobby", 1_000));
        let check =
            |scope: &str, now: i64| signer.verify(scope, Some(&expires), Some(&signature), now);
        assert_eq!(check("live:cam.lobby", 999), Ok(()));
        assert_eq!(check("live:cam.lobby", 1_000), Ok(()));
        assert_eq!(check("live:cam.lobby", 1_001), Err(SignatureError::Expired));
        assert_eq!(check("live:cam.yard", 999), Err(SignatureError::Invalid));
        assert_eq!(
            check("snapshot:cam.lobby", 999),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn tampered_missing_or_foreign_signatures_are_refused() {
        let signer = MediaSigner::new([7; 32]);
        let (expires, signature) = parts(&signer.query("clip:12", 1_000));
        // A later expiry with the old signature.
        assert_eq!(
            signer.verify("clip:12", Some("9999"), Some(&signature), 0),
            Err(SignatureError::Invalid)
        );
        let mut flipped = signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert_eq!(
            signer.verify("clip:12", Some(&expires), Some(&flipped), 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify("clip:12", None, Some(&signature), 0),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            signer.verify("clip:12", Some(&expires), Some("zz"), 0),
            Err(SignatureError::Invalid)
        );
        let other = MediaSigner::new([8; 32]);
        assert_eq!(
            other.verify("clip:12", Some(&expires), Some(&signature), 0),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn the_key_file_is_made_once_and_private() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("media.key");
        let first = MediaSigner::load_or_create(&path)?;
        let again = MediaSigner::load_or_create(&path)?;
        assert_eq!(first.query("x", 5), again.query("x", 5));
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, b"short")?;
        assert!(MediaSigner::load_or_create(&path).is_err());
        Ok(())
    }
}
