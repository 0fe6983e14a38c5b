//! The storage interface: every byte the journal, the archive's local buckets and the
//! store make durable goes through a [`Disk`].
//!
//! The interface is small on purpose (positional reads and writes, `set_len`, the two
//! kinds of fsync, create, rename, remove, list, folder fsync): it is what the promises
//! depend on, so it is what a test must be able to make lie. [`RealDisk`] is the operating
//! system; with the `sim` feature, [`sim::SimDisk`] is a disk that keeps writes volatile
//! until fsync, loses them (and tears the last one) in a crash, forgets renames and new
//! files whose folder was not fsync'd, and fails writes and fsyncs on demand — driven by a
//! seed, so a failing schedule reproduces exactly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "sim")]
pub mod sim;

/// An open file.
pub trait DiskFile: Send + Sync {
    /// Read at `offset`; returns the bytes read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write all of `buf` at `offset`, extending the file when needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Is the file empty?
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cut or extend (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the data (and the length) survive a crash once this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`.
    fn sync_all(&self) -> io::Result<()>;
}

/// A file system, as far as durability is concerned.
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Create a folder and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in a folder (files and folders), sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Open an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Open an existing file for reading and writing.
    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Create a file (emptying it when it exists), for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Rename, replacing `to` (durable only once the folder is fsync'd).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Remove a folder and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Make a folder's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes free for this process on the file system holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
    /// Is there anything at `path`?
    fn exists(&self, path: &Path) -> bool;
    /// Is `path` a folder?
    fn is_dir(&self, path: &Path) -> bool;
    /// Take an exclusive lock named by the file `path` (created if needed) for as long as
    /// the returned guard lives; `None` when another holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;

    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open_read(path)?;
        let mut out = Vec::new();
        FileCursor::new(f).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Write a file durably under its final name: a temporary file beside it is written and
    /// fsync'd, renamed over `path`, and the folder fsync'd. Readers see the old content
    /// or the new, never a mix; after a crash, the same.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        {
            let f = self.create(&tmp)?;
            f.write_at(bytes, 0)?;
            f.sync_all()?;
        }
        self.rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => self.sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Holds a lock from [`Disk::try_lock`] until dropped.
pub type LockGuard = Box<dyn std::any::Any + Send + Sync>;

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl RealDisk {
    /// The real disk as a shared [`Disk`].
    pub fn shared() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }
}

struct RealFile(File);

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(RealFile(File::open(path)?)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let v = rustix::fs::statvfs(path).map_err(io::Error::from)?;
        Ok(v.f_bavail.saturating_mul(v.f_frsize))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Box::new(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A [`DiskFile`] with a position, for `std::io` readers and writers (e.g. in a
/// `BufReader`).
pub struct FileCursor {
    file: Arc<dyn DiskFile>,
    pos: u64,
}

impl FileCursor {
    /// At the start of `file`.
    pub fn new(file: Arc<dyn DiskFile>) -> Self {
        FileCursor { file, pos: 0 }
    }
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FileCursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (self.file.len()?, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        let next = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = next;
        Ok(next)
    }
}
