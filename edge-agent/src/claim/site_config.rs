//! The `[uplink]` section a claim produces, and appending it to the site config.
//!
//! The site config is the installer's file: it is only ever appended to (the bytes before the
//! section stay as they were), and never when it already has an `[uplink]`, which could point
//! at another identity the installer means to keep.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use super::identity::{CA_FILE, CERT_FILE, IdentityDir, KEY_FILE, VerifiedIdentity};
use super::{ClaimError, SiteConfigUpdate};
use crate::config::Config;

/// The identity files as the site config names them: absolute (the agent does not resolve
/// them against the config's folder) and UTF-8 (all a TOML file can hold). Made before the
/// code is spent, so that a folder the config cannot name does not cost a code.
pub(super) struct UplinkPaths {
    ca_file: String,
    cert_file: String,
    key_file: String,
}

impl UplinkPaths {
    pub(super) fn new(dir: &IdentityDir) -> Result<UplinkPaths, ClaimError> {
        let [ca_file, cert_file, key_file] = [CA_FILE, CERT_FILE, KEY_FILE].map(|name| {
            let path = dir.file(name);
            path.to_str()
                .map(str::to_owned)
                .ok_or_else(|| ClaimError::Io {
                    action: "name",
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the path is not UTF-8, which a TOML config cannot hold",
                    ),
                })
        });
        Ok(UplinkPaths {
            ca_file: ca_file?,
            cert_file: cert_file?,
            key_file: key_file?,
        })
    }
}

/// The `[uplink]` section for `identity`: the keys of `UplinkConfig` a claim knows; the rest
/// keep their defaults.
pub(super) fn uplink_section(identity: &VerifiedIdentity, paths: &UplinkPaths) -> String {
    // A TOML string, quoted and escaped.
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    format!(
        "[uplink]\nappliance_id = {}\nbroker = {}\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
        quoted(identity.appliance_id.as_str()),
        quoted(&identity.broker),
        quoted(&paths.ca_file),
        quoted(&paths.cert_file),
        quoted(&paths.key_file),
    )
}

/// Fails unless `path` is a TOML file this claim could append to. Checked before the code is
/// spent, so that a typo in `--config` does not cost a code.
pub(super) fn check_appendable(path: &Path) -> Result<(), ClaimError> {
    read_site_config(path).map(|_| ())
}

/// The file's text, and whether it already has an `[uplink]` table (or `uplink.` keys).
fn read_site_config(path: &Path) -> Result<(String, bool), ClaimError> {
    let bad = |reason: String| ClaimError::SiteConfig {
        path: path.to_owned(),
        reason,
    };
    let source = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
    let table = source
        .parse::<toml::Table>()
        .map_err(|error| bad(format!("not valid TOML: {}", error.message().trim())))?;
    let has_uplink = table.contains_key("uplink");
    Ok((source, has_uplink))
}

/// What to append to `existing` so that `section` starts on a line of its own after a blank
/// line; `existing` itself is kept byte for byte.
fn addition(existing: &str, section: &str) -> String {
    let mut addition = String::new();
    if !existing.is_empty() {
        if !existing.ends_with('\n') {
            addition.push('\n');
        }
        addition.push('\n');
    }
    addition.push_str("# Written by `gatehouse-edge claim`.\n");
    addition.push_str(section);
    addition
}

/// Appends `section` to the site config unless it has an `[uplink]` already, then validates
/// the whole file as `check-config` does.
pub(super) fn append_uplink(path: &Path, section: &str) -> Result<SiteConfigUpdate, ClaimError> {
    let (existing, has_uplink) = read_site_config(path)?;
    if has_uplink {
        return Ok(SiteConfigUpdate::AlreadyHasUplink(path.to_owned()));
    }
    // Appending in place keeps the file's owner, mode and every byte already there.
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(addition(&existing, section).as_bytes())?;
            file.sync_all()
        })
        .map_err(|source| ClaimError::io("append to", path, source))?;
    Ok(match Config::load(path) {
        Ok(_) => SiteConfigUpdate::Appended(path.to_owned()),
        Err(problems) => SiteConfigUpdate::AppendedWithProblems(problems),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_starts_on_its_own_line_and_the_file_is_kept() {
        let section = "[uplink]\nbroker = \"b:1\"\n";
        for existing in [
            "",
            "[site]\nid = \"s\"\n",
            "[site]\nid = \"s\"",
            "a = 1\n\n",
        ] {
            let appended = format!("{existing}{}", addition(existing, section));
            assert!(appended.starts_with(existing));
            assert!(appended.ends_with(section));
            let table = appended.parse::<toml::Table>();
            assert!(table.is_ok(), "{existing:?}: {table:?}");
            assert!(
                appended.contains("\n\n# Written by") || existing.is_empty(),
                "{appended:?}"
            );
        }
    }
}
