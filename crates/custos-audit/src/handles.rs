//! Read handles of the log's segment and index files, kept open within a budget.
//!
//! Every partition has a segment, and every sealed one an index file beside it. Keeping both
//! open for the life of the log made its file descriptors grow with the log — two for every
//! partition, and a partition is cut at each UTC day and each time the memory budget is
//! reached — until the process met its limit (`ulimit -n`): then the next roll could not open
//! its new segment and every audited request was refused. Now a file is opened when it is
//! first read and kept open while it is among the most recently used; beyond the budget
//! ([`crate::LogConfig::open_files_max`]) the least recently used is closed (the CLOCK
//! approximation of LRU: each handle has a "used" bit; the oldest handle whose bit is clear is
//! closed, and a set bit is cleared and given a second chance). A read already holding a file
//! finishes with it: a closed handle's descriptor goes with its last reader. What a reader
//! derives from the file and keeps for the next ([`Handle::kept`]: an index file's block indexes
//! and strings) is kept with the open file and goes with it, so that memory too is bounded by
//! the budget rather than growing with the log.
//!
//! A file reopened must be the one first opened (same device and inode): a file replaced at
//! the name while the log was open is refused as damage, as it would not be read while its
//! descriptor stayed open. Reopening goes through [`crate::files::open_read`], so a symbolic
//! link planted at the name is refused as everywhere else.

use std::any::Any;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::{Error, Result};

/// The budget shared by a log's handles.
pub(crate) struct Handles {
    /// Most handles open at once.
    max: usize,
    clock: Mutex<Clock>,
}

#[derive(Default)]
struct Clock {
    /// Open handles, oldest opened first (and handles dropped since, not yet swept).
    ring: VecDeque<Weak<Handle>>,
    /// Handles open now.
    open: usize,
}

/// A handle's open file, and what is kept with it.
struct Open {
    file: Arc<File>,
    kept: Option<Arc<dyn Any + Send + Sync>>,
}

impl Open {
    /// `file` just opened, nothing kept with it yet.
    fn new(file: Arc<File>) -> Open {
        Open { file, kept: None }
    }
}

/// One file of the log, read through a descriptor opened on demand.
pub(crate) struct Handle {
    path: PathBuf,
    /// Device and inode of the file first opened.
    identity: (u64, u64),
    file: Mutex<Option<Open>>,
    used: AtomicBool,
    handles: Arc<Handles>,
}

impl Handles {
    pub(crate) fn new(max: usize) -> Arc<Handles> {
        Arc::new(Handles {
            max: max.max(1),
            clock: Mutex::default(),
        })
    }

    /// Most handles open at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Handles open now.
    pub(crate) fn open_count(&self) -> usize {
        self.clock.lock().expect("clock lock").open
    }

    /// Counts `handle` as open, closing the least recently used beyond the budget.
    fn opened(&self, handle: &Arc<Handle>) {
        let mut clock = self.clock.lock().expect("clock lock");
        clock.open += 1;
        clock.ring.push_back(Arc::downgrade(handle));
        if clock.ring.len() > 2 * self.max + 16 {
            clock.ring.retain(|weak| weak.strong_count() > 0);
        }
        let mut looked = 0;
        while clock.open > self.max && looked < 2 * clock.ring.len() {
            looked += 1;
            let Some(weak) = clock.ring.pop_front() else {
                break;
            };
            let Some(victim) = weak.upgrade() else {
                continue;
            };
            if Arc::ptr_eq(&victim, handle) || victim.used.swap(false, Ordering::Relaxed) {
                clock.ring.push_back(weak);
                continue;
            }
            if victim.file.lock().expect("handle lock").take().is_some() {
                clock.open -= 1;
            }
        }
    }
}

impl Handle {
    /// Opens the file at `path` now and keeps it open within `handles`' budget.
    pub(crate) fn open(handles: &Arc<Handles>, path: &Path) -> Result<Arc<Handle>> {
        let file = crate::files::open_read(path).map_err(|e| Error::io(path, e))?;
        Handle::adopt(handles, path, file)
    }

    /// A handle of `file`, just opened at `path` with [`crate::files::open_read`].
    pub(crate) fn adopt(handles: &Arc<Handles>, path: &Path, file: File) -> Result<Arc<Handle>> {
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let handle = Arc::new(Handle {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            file: Mutex::new(Some(Open::new(Arc::new(file)))),
            used: AtomicBool::new(true),
            handles: handles.clone(),
        });
        handles.opened(&handle);
        Ok(handle)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, opened again if the budget closed it.
    pub(crate) fn file(self: &Arc<Self>) -> Result<Arc<File>> {
        self.used.store(true, Ordering::Relaxed);
        if let Some(open) = &*self.file.lock().expect("handle lock") {
            return Ok(open.file.clone());
        }
        let file = crate::files::open_read(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&self.path, e))?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err(Error::Corrupted(format!(
                "{}: another file was put in its place while the log was open",
                self.path.display()
            )));
        }
        let file = Arc::new(file);
        {
            let mut slot = self.file.lock().expect("handle lock");
            if let Some(raced) = &*slot {
                return Ok(raced.file.clone());
            }
            *slot = Some(Open::new(file.clone()));
        }
        self.handles.opened(self);
        Ok(file)
    }

    /// The state kept with the open file (made empty when the file was opened, or opened
    /// again): it lives as long as the file stays open, and a caller holding it as long as it
    /// does. A handle keeps one type of state.
    pub(crate) fn kept<T: Any + Send + Sync + Default>(self: &Arc<Self>) -> Result<Arc<T>> {
        loop {
            {
                let mut slot = self.file.lock().expect("handle lock");
                if let Some(open) = slot.as_mut() {
                    self.used.store(true, Ordering::Relaxed);
                    let kept = open
                        .kept
                        .get_or_insert_with(|| Arc::new(T::default()))
                        .clone();
                    return Ok(kept.downcast().expect("a handle keeps one type of state"));
                }
            }
            self.file()?;
        }
    }

    /// Closes the file now, and drops what is kept with it (which may hold this handle: an
    /// index file's tables read through it). Reading opens it again.
    pub(crate) fn close(&self) {
        let held = self.file.lock().expect("handle lock").take();
        if held.is_some() {
            self.handles.clock.lock().expect("clock lock").open -= 1;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
