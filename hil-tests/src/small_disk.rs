//! A small disk for full-disk tests: a tmpfs of a given size, mounted for the life of the
//! value. Mounting needs root (the suite runs as root, as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// A tmpfs mounted at a path; unmounted on drop.
#[derive(Debug)]
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`3m`, `40m`) at `path`, creating the folder.
    pub fn mount(path: &Path, size: &str) -> anyhow::Result<SmallDisk> {
        std::fs::create_dir_all(path)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .context("cannot run mount")?;
        if !status.success() {
            bail!(
                "mounting a tmpfs failed: this test needs root (run the suite as root, as CI does)"
            );
        }
        Ok(SmallDisk {
            path: path.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
