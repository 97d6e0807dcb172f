//! Small file helpers shared by the log's files: opening one to read and append, replacing one
//! whole, and files of fixed-size items addressed by number (`ids.dat`, `leaves.dat`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Opens `path` to read and write, creating it empty when missing.
pub(crate) fn open_read_write(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Replaces `path` with `bytes`, durably: a temporary file (`tmp_extension`) written and
/// fsynced, renamed over it, the folder fsynced; a crash leaves the old file or the new one.
/// The temporary file is made new (owner-only, 0600): whatever stands at its name — a crash's
/// leftover, or a symbolic link planted there — is unlinked first, never followed, and the
/// rename replaces a link at `path` itself, not what it points to.
pub(crate) fn replace_file(path: &Path, tmp_extension: &str, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension(tmp_extension);
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&temporary, e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| Error::io(&temporary, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&temporary, e))?;
    fs::rename(&temporary, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A file of `item_bytes`-byte items, item `n` at `n × item_bytes`.
pub(crate) struct ItemFile {
    file: File,
    path: PathBuf,
    item_bytes: u64,
}

impl ItemFile {
    /// Opens (or creates) `name` in `dir`.
    pub(crate) fn open(dir: &Path, name: &str, item_bytes: u64) -> Result<ItemFile> {
        let path = dir.join(name);
        let file = open_read_write(&path)?;
        Ok(ItemFile {
            file,
            path,
            item_bytes,
        })
    }

    /// Opens `name` in `dir` to read, if there is one.
    pub(crate) fn open_existing(dir: &Path, name: &str, item_bytes: u64) -> Result<Option<Self>> {
        let path = dir.join(name);
        match File::open(&path) {
            Ok(file) => Ok(Some(ItemFile {
                file,
                path,
                item_bytes,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Whole items the file holds.
    pub(crate) fn len(&self) -> Result<u64> {
        let bytes = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        Ok(bytes / self.item_bytes)
    }

    /// The bytes of items `start .. end`.
    pub(crate) fn read(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; ((end - start) * self.item_bytes) as usize];
        self.file
            .read_exact_at(&mut bytes, start * self.item_bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes)
    }

    /// Writes whole items from item `first` on (no fsync).
    pub(crate) fn write(&self, first: u64, bytes: &[u8]) -> Result<()> {
        debug_assert!(
            (bytes.len() as u64).is_multiple_of(self.item_bytes),
            "whole items"
        );
        self.file
            .write_all_at(bytes, first * self.item_bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Makes every item written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Cuts the file to its first `len` items, durably.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len * self.item_bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}
