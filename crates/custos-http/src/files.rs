//! Files that every node of a cluster must read, whichever node wrote them (export jobs' files
//! and their statuses): in the data directory (`<area>/<name>`, written to a temporary file,
//! fsynced and renamed) on an embedded node, and in the shared directory's database on a cluster
//! node on PostgreSQL (table `file`, in parts of [`PART_BYTES`], each part base64 text — the
//! engine seam carries text, not bytes — written under a temporary name and renamed in one
//! transaction). Either way a file appears whole or not at all, and a reader holds one part in
//! memory at a time.

use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use custos_records::Directory;

use crate::error::{AppError, ErrorCode};

/// Bytes in one part of a file kept in the database (the unit a reader holds in memory).
pub const PART_BYTES: usize = 1 << 20;

/// Where the shared files are.
#[derive(Clone)]
pub enum SharedFiles {
    /// Folders of the data directory.
    Folder(PathBuf),
    /// The shared directory's database, shared by every node; `scratch` is a folder of this
    /// node's data directory for local copies.
    Database {
        /// The directory whose database keeps the files.
        directory: Directory,
        /// Where local copies are made.
        scratch: PathBuf,
    },
}

/// A file of the shared files as a local file, for what needs a path (restoring a backup):
/// the file itself in a folder, a temporary copy (removed when dropped) from the database.
pub struct LocalFile {
    path: PathBuf,
    temporary: bool,
}

impl LocalFile {
    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn internal(error: impl std::fmt::Display) -> AppError {
    AppError::new(ErrorCode::Internal, error.to_string())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The name a file is written under until it is whole.
fn unfinished(name: &str) -> String {
    format!("{name}.part")
}

impl SharedFiles {
    /// The database when `directory` is shared with other nodes, else the data directory.
    pub fn over(data_dir: PathBuf, directory: &Directory) -> SharedFiles {
        if directory.is_shared() {
            SharedFiles::Database {
                directory: directory.clone(),
                scratch: data_dir.join("scratch"),
            }
        } else {
            SharedFiles::Folder(data_dir)
        }
    }

    /// Writes the whole of a small file (a status), replacing the one there.
    pub fn put(&self, area: &str, name: &str, bytes: &[u8]) -> Result<(), AppError> {
        let mut writer = self.create(area, name)?;
        writer.write(bytes)?;
        writer.finish()
    }

    /// A file's bytes, whole; `None` when there is no such file.
    pub fn get(&self, area: &str, name: &str) -> Result<Option<Vec<u8>>, AppError> {
        let Some(mut reader) = self.open(area, name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(part) = reader.next_part()? {
            bytes.extend_from_slice(&part);
        }
        Ok(Some(bytes))
    }

    /// Starts writing a file; it is seen under `name` only once [`FileWriter::finish`]ed.
    pub fn create(&self, area: &str, name: &str) -> Result<FileWriter, AppError> {
        match self {
            SharedFiles::Folder(root) => {
                let folder = root.join(area);
                std::fs::create_dir_all(&folder).map_err(internal)?;
                let path = folder.join(name);
                let temporary = folder.join(unfinished(name));
                let file = custos_audit::files::create_replacing(&temporary).map_err(internal)?;
                Ok(FileWriter(Writer::Folder {
                    file,
                    temporary,
                    path,
                }))
            }
            SharedFiles::Database { directory, .. } => {
                Ok(FileWriter(Writer::Database(PartWriter {
                    directory: directory.clone(),
                    area: area.to_string(),
                    name: name.to_string(),
                    buffer: Vec::with_capacity(PART_BYTES),
                    parts: 0,
                })))
            }
        }
    }

    /// Opens a file for reading part by part; `None` when there is no such file.
    pub fn open(&self, area: &str, name: &str) -> Result<Option<FileReader>, AppError> {
        match self {
            SharedFiles::Folder(root) => {
                match custos_audit::files::open_read(&root.join(area).join(name)) {
                    Ok(file) => Ok(Some(FileReader(Reader::Folder(file)))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(internal(e)),
                }
            }
            SharedFiles::Database { directory, .. } => {
                if directory.file_part(area, name, 0)?.is_none() {
                    return Ok(None);
                }
                Ok(Some(FileReader(Reader::Database {
                    directory: directory.clone(),
                    area: area.to_string(),
                    name: name.to_string(),
                    next: 0,
                })))
            }
        }
    }

    /// The names of the whole files of `area`.
    pub fn names(&self, area: &str) -> Result<Vec<String>, AppError> {
        match self {
            SharedFiles::Folder(root) => {
                let Ok(entries) = std::fs::read_dir(root.join(area)) else {
                    return Ok(Vec::new());
                };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| !name.ends_with(".part"))
                    .collect();
                names.sort();
                Ok(names)
            }
            SharedFiles::Database { directory, .. } => Ok(directory.file_names(area)?),
        }
    }

    /// Up to `len` bytes of a file from byte `offset` (fewer at its end).
    pub fn read_at(
        &self,
        area: &str,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, AppError> {
        match self {
            SharedFiles::Folder(root) => {
                use std::os::unix::fs::FileExt;
                let file = custos_audit::files::open_read(&root.join(area).join(name))
                    .map_err(internal)?;
                let mut bytes = vec![0u8; len];
                let mut filled = 0;
                while filled < len {
                    let n = file
                        .read_at(&mut bytes[filled..], offset + filled as u64)
                        .map_err(internal)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                bytes.truncate(filled);
                Ok(bytes)
            }
            SharedFiles::Database { directory, .. } => {
                let part_bytes = PART_BYTES as u64;
                let mut bytes = Vec::with_capacity(len);
                let mut at = offset;
                while bytes.len() < len {
                    let part = (at / part_bytes) as i64;
                    let Some(text) = directory.file_part(area, name, part)? else {
                        break;
                    };
                    let decoded = STANDARD
                        .decode(text)
                        .map_err(|e| internal(format!("shared file {area}/{name}: {e}")))?;
                    let start = (at % part_bytes) as usize;
                    if start >= decoded.len() {
                        break;
                    }
                    let end = decoded.len().min(start + len - bytes.len());
                    bytes.extend_from_slice(&decoded[start..end]);
                    at += (end - start) as u64;
                }
                Ok(bytes)
            }
        }
    }

    /// Removes a file (nothing when there is none).
    pub fn remove(&self, area: &str, name: &str) -> Result<(), AppError> {
        match self {
            SharedFiles::Folder(root) => match std::fs::remove_file(root.join(area).join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(internal(e)),
            },
            SharedFiles::Database { directory, .. } => Ok(directory.remove_file(area, name)?),
        }
    }

    /// Moves the local file at `from` (in this node's data directory) into the shared files
    /// as `name` of `area`, durably; `from` is gone afterwards.
    pub fn put_file(&self, area: &str, name: &str, from: &std::path::Path) -> Result<(), AppError> {
        match self {
            SharedFiles::Folder(root) => {
                let folder = root.join(area);
                std::fs::create_dir_all(&folder).map_err(internal)?;
                custos_audit::files::open_read(from)
                    .and_then(|file| file.sync_all())
                    .and_then(|()| std::fs::rename(from, folder.join(name)))
                    .and_then(|()| custos_audit::files::sync_dir(&folder))
                    .map_err(internal)
            }
            SharedFiles::Database { .. } => {
                let mut file = custos_audit::files::open_read(from).map_err(internal)?;
                let mut writer = self.create(area, name)?;
                let mut buffer = vec![0u8; 64 << 10];
                loop {
                    let n = file.read(&mut buffer).map_err(internal)?;
                    if n == 0 {
                        break;
                    }
                    writer.write(&buffer[..n])?;
                }
                writer.finish()?;
                std::fs::remove_file(from).map_err(internal)
            }
        }
    }

    /// The file `name` of `area` as a local file; `None` when there is no such file.
    pub fn local_copy(&self, area: &str, name: &str) -> Result<Option<LocalFile>, AppError> {
        match self {
            SharedFiles::Folder(root) => {
                let path = root.join(area).join(name);
                Ok(path.exists().then_some(LocalFile {
                    path,
                    temporary: false,
                }))
            }
            SharedFiles::Database { scratch, .. } => {
                let Some(mut reader) = self.open(area, name)? else {
                    return Ok(None);
                };
                std::fs::create_dir_all(scratch).map_err(internal)?;
                let local = LocalFile {
                    path: scratch.join(uuid::Uuid::new_v4().to_string()),
                    temporary: true,
                };
                let mut file =
                    custos_audit::files::create_replacing(&local.path).map_err(internal)?;
                while let Some(part) = reader.next_part()? {
                    file.write_all(&part).map_err(internal)?;
                }
                file.sync_all().map_err(internal)?;
                Ok(Some(local))
            }
        }
    }

    /// Removes every file of `area`.
    pub fn remove_area(&self, area: &str) -> Result<(), AppError> {
        match self {
            SharedFiles::Folder(root) => match std::fs::remove_dir_all(root.join(area)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(internal(e)),
            },
            SharedFiles::Database { directory, .. } => {
                directory.remove_files_before(area, "", i64::MAX)?;
                Ok(())
            }
        }
    }

    /// Removes the files of `area` older than `age`, and the unfinished ones older than
    /// `unfinished_age` (a writer that stopped; on a cluster, one still running on another
    /// node is younger than that).
    pub fn tidy(
        &self,
        area: &str,
        age: std::time::Duration,
        unfinished_age: std::time::Duration,
    ) -> Result<(), AppError> {
        match self {
            SharedFiles::Folder(root) => {
                let Ok(entries) = std::fs::read_dir(root.join(area)) else {
                    return Ok(());
                };
                let now = std::time::SystemTime::now();
                for entry in entries.flatten() {
                    let path = entry.path();
                    let limit = if path.extension().is_some_and(|e| e == "part") {
                        unfinished_age
                    } else {
                        age
                    };
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|modified| modified + limit < now);
                    if old {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Ok(())
            }
            SharedFiles::Database { directory, .. } => {
                let now = now_secs();
                directory.remove_files_before(
                    area,
                    ".part",
                    now - unfinished_age.as_secs() as i64,
                )?;
                directory.remove_files_before(area, "", now - age.as_secs() as i64)?;
                Ok(())
            }
        }
    }
}

/// A file being written.
pub struct FileWriter(Writer);

enum Writer {
    /// Into a temporary file of the data directory.
    Folder {
        file: std::fs::File,
        temporary: PathBuf,
        path: PathBuf,
    },
    /// Into the database, a part at a time.
    Database(PartWriter),
}

struct PartWriter {
    directory: Directory,
    area: String,
    name: String,
    buffer: Vec<u8>,
    parts: i64,
}

impl PartWriter {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), AppError> {
        while !bytes.is_empty() {
            let room = PART_BYTES - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == PART_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered part to the database.
    fn flush(&mut self) -> Result<(), AppError> {
        self.directory.put_file_part(
            &self.area,
            &unfinished(&self.name),
            self.parts,
            &STANDARD.encode(&self.buffer),
            now_secs(),
        )?;
        self.parts += 1;
        self.buffer.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(), AppError> {
        if !self.buffer.is_empty() || self.parts == 0 {
            self.flush()?;
        }
        Ok(self
            .directory
            .rename_file(&self.area, &unfinished(&self.name), &self.name)?)
    }
}

impl FileWriter {
    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), AppError> {
        match &mut self.0 {
            Writer::Folder { file, .. } => file.write_all(bytes).map_err(internal),
            Writer::Database(parts) => parts.write(bytes),
        }
    }

    /// Makes the file durable and visible under its name, whole.
    pub fn finish(self) -> Result<(), AppError> {
        match self.0 {
            Writer::Folder {
                file,
                temporary,
                path,
            } => {
                file.sync_all().map_err(internal)?;
                std::fs::rename(&temporary, &path).map_err(internal)
            }
            Writer::Database(parts) => parts.finish(),
        }
    }
}

/// A file being read.
pub struct FileReader(Reader);

enum Reader {
    /// From the data directory.
    Folder(std::fs::File),
    /// From the database, a part at a time.
    Database {
        directory: Directory,
        area: String,
        name: String,
        next: i64,
    },
}

impl FileReader {
    /// The next bytes of the file (at most a part); `None` at its end.
    pub fn next_part(&mut self) -> Result<Option<Vec<u8>>, AppError> {
        match &mut self.0 {
            Reader::Folder(file) => {
                let mut buffer = vec![0u8; 64 << 10];
                let n = file.read(&mut buffer).map_err(internal)?;
                buffer.truncate(n);
                Ok((n > 0).then_some(buffer))
            }
            Reader::Database {
                directory,
                area,
                name,
                next,
            } => {
                let Some(text) = directory.file_part(area, name, *next)? else {
                    return Ok(None);
                };
                *next += 1;
                STANDARD
                    .decode(text)
                    .map(Some)
                    .map_err(|e| internal(format!("shared file {area}/{name}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(files: &SharedFiles) {
        let bytes: Vec<u8> = (0..(PART_BYTES * 5 / 2) as u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut writer = files.create("area", "big.bin").unwrap();
        for chunk in bytes.chunks(70_001) {
            writer.write(chunk).unwrap();
        }
        assert!(
            files.get("area", "big.bin").unwrap().is_none(),
            "a file is not seen before it is whole"
        );
        writer.finish().unwrap();
        assert_eq!(
            files.get("area", "big.bin").unwrap().as_deref(),
            Some(&bytes[..])
        );
        files.put("area", "status.json", b"{\"a\":1}").unwrap();
        files.put("area", "status.json", b"{}").unwrap();
        assert_eq!(
            files.get("area", "status.json").unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        files.put("area", "empty", b"").unwrap();
        assert_eq!(
            files.get("area", "empty").unwrap().as_deref(),
            Some(&b""[..])
        );
        assert!(files.get("area", "none").unwrap().is_none());
        let left = files.create("area", "left.bin").unwrap();
        drop(left);
        files
            .tidy(
                "area",
                std::time::Duration::from_secs(3600),
                std::time::Duration::ZERO,
            )
            .unwrap();
        assert!(
            files.get("area", "big.bin").unwrap().is_some(),
            "young files stay"
        );
        let across = PART_BYTES as u64 - 3;
        assert_eq!(
            files.read_at("area", "big.bin", across, 10).unwrap(),
            bytes[across as usize..across as usize + 10].to_vec(),
            "a read across two parts"
        );
        let tail = bytes.len() as u64 - 4;
        assert_eq!(
            files.read_at("area", "big.bin", tail, 10).unwrap(),
            bytes[tail as usize..].to_vec()
        );
        assert_eq!(
            files.names("area").unwrap(),
            ["big.bin", "empty", "status.json"],
            "whole files only, by name"
        );
        files.remove("area", "empty").unwrap();
        files.remove("area", "empty").unwrap();
        assert!(files.get("area", "empty").unwrap().is_none());

        let scratch = tempfile::tempdir().unwrap();
        let local = scratch.path().join("snapshot");
        std::fs::write(&local, &bytes).unwrap();
        files.put_file("copies/main", "b.db", &local).unwrap();
        assert!(
            !local.exists(),
            "the local file moved into the shared files"
        );
        let copy = files.local_copy("copies/main", "b.db").unwrap().unwrap();
        assert_eq!(std::fs::read(copy.path()).unwrap(), bytes);
        drop(copy);
        assert!(files.local_copy("copies/main", "none").unwrap().is_none());
        files.remove_area("copies/main").unwrap();
        assert!(files.names("copies/main").unwrap().is_empty());
    }

    #[test]
    fn files_are_whole_or_absent_in_a_folder_and_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&SharedFiles::Folder(dir.path().to_path_buf()));
        // A link planted where a file is written is not followed: it is replaced by the file.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"kept").unwrap();
        std::fs::create_dir_all(dir.path().join("linked")).unwrap();
        let planted = dir.path().join("linked/f.part");
        std::os::unix::fs::symlink(&outside, &planted).unwrap();
        let files = SharedFiles::Folder(dir.path().to_path_buf());
        let writer = files.create("linked", "f").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"kept");
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_file());
        drop(writer);
        // Nor is one planted at a whole file's name read (and served) through.
        std::os::unix::fs::symlink(&outside, dir.path().join("linked/g")).unwrap();
        assert!(files.open("linked", "g").is_err());
        assert!(files.read_at("linked", "g", 0, 4).is_err());
        files.put("private", "f", b"x").unwrap();
        let mode = std::fs::metadata(dir.path().join("private/f"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let (directory, _) = Directory::open(&dir.path().join("control.db"), "t").unwrap();
        exercise(&SharedFiles::Database {
            directory,
            scratch: dir.path().join("scratch"),
        });
    }
}
