//! How Custos opens the files of its data directory — the log's own, and those of the crates
//! above (keys, the activity feed, file streams, the cluster's archive): never through a
//! symbolic link standing at the file's name, only a regular file, created owner-only. Also
//! the log's helpers to replace a file whole and to keep files of fixed-size items addressed
//! by number (`ids.dat`, `leaves.dat`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Opens a file the one way a data directory's files are opened: never through a symbolic
/// link standing at the file's own name (`O_NOFOLLOW`; a link planted there could point the
/// server's writes at any file this user may write, or its reads at any it may read), and only
/// a regular file (a FIFO or device at its name is refused, without blocking on it). A file it
/// creates is owner-only (0600) whatever the process's umask. Folders above the file are
/// followed as given: the data directory may be a link to another disk.
fn open_own(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let linked = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if e.raw_os_error() == Some(libc::ELOOP) && linked {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a symbolic link stands where Custos keeps a file; it is not followed",
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file, where Custos keeps one",
        ));
    }
    Ok(file)
}

/// [`open_own`] for writing into an existing file: also refused when the file has another name
/// (a hard link), since writing through this name would change the file at the other — a file
/// outside the data directory that someone linked here. Reading one is harmless (a backup made
/// with hard links reads as the original), and a file Custos creates anew has one name.
fn open_own_to_write(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let file = open_own(options, path)?;
    if file.metadata()?.nlink() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a file with another name (a hard link) stands where Custos keeps a file; it is not written through",
        ));
    }
    Ok(file)
}

/// Opens `path` to read.
pub fn open_read(path: &Path) -> io::Result<File> {
    open_own(OpenOptions::new().read(true), path)
}

/// Opens `path`, which must exist, to write.
pub fn open_write(path: &Path) -> io::Result<File> {
    open_own_to_write(OpenOptions::new().write(true), path)
}

/// Opens `path` to append, creating it empty when missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    open_own_to_write(OpenOptions::new().append(true).create(true), path)
}

/// Creates `path` to write; an error if anything stands at its name.
pub fn create_new(path: &Path) -> io::Result<File> {
    open_own(OpenOptions::new().write(true).create_new(true), path)
}

/// Creates `path` anew to write: whatever stands at its name (an earlier attempt's file, or a
/// link planted there) is unlinked first, never written through.
pub fn create_replacing(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_new(path)
}

/// The whole of the file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_read(path)?;
    let mut bytes = Vec::with_capacity(file.metadata()?.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole of the file at `path`, as text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens `path` to read and write, creating it empty when missing.
pub(crate) fn open_read_write(path: &Path) -> Result<File> {
    open_own(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
    .map_err(|e| Error::io(path, e))
}

/// Replaces `path` with `bytes`, durably: a temporary file (`tmp_extension`) written and
/// fsynced, renamed over it, the folder fsynced; a crash leaves the old file or the new one.
/// The temporary file is made new (owner-only, 0600): whatever stands at its name — a crash's
/// leftover, or a symbolic link planted there — is unlinked first, never followed, and the
/// rename replaces a link at `path` itself, not what it points to.
pub(crate) fn replace_file(path: &Path, tmp_extension: &str, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension(tmp_extension);
    let mut file = create_replacing(&temporary).map_err(|e| Error::io(&temporary, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&temporary, e))?;
    fs::rename(&temporary, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| Error::io(dir, e))
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
        match open_read(&path) {
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

#[cfg(test)]
pub(crate) mod tests;
