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

    /// Create a file (emptying it when it exists) to be written once, front to back, and
    /// read later if at all: a new store file of an import. Its bytes may bypass the page
    /// cache (so writing them costs no copy into it); as with any write, they are durable
    /// only after the returned file's fsync. This default writes through [`Disk::create`]
    /// in chunks of [`SEQUENTIAL_CHUNK`].
    fn create_sequential(&self, path: &Path) -> io::Result<Box<dyn SequentialFile>> {
        Ok(chunked(self.create(path)?))
    }

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

/// A file being written front to back ([`Disk::create_sequential`]).
pub trait SequentialFile: Send {
    /// Append `buf`.
    fn write(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Bytes appended so far.
    fn len(&self) -> u64;
    /// Has nothing been appended?
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Write what is held back and hand over the file (for its fsync, and reads).
    fn finish(self: Box<Self>) -> io::Result<Arc<dyn DiskFile>>;
}

/// Bytes a [`SequentialFile`] gathers before it writes them.
pub const SEQUENTIAL_CHUNK: usize = 1 << 20;

/// `file` (new and empty) written front to back through [`DiskFile::write_at`] in chunks
/// of [`SEQUENTIAL_CHUNK`]: the default [`Disk::create_sequential`], and for files that
/// should pass through the page cache (read again soon).
pub fn chunked(file: Arc<dyn DiskFile>) -> Box<dyn SequentialFile> {
    Box::new(Chunked {
        file,
        offset: 0,
        buf: Vec::with_capacity(SEQUENTIAL_CHUNK),
    })
}

/// The default [`SequentialFile`]: [`DiskFile::write_at`] of whole chunks.
struct Chunked {
    file: Arc<dyn DiskFile>,
    offset: u64,
    buf: Vec<u8>,
}

impl Chunked {
    fn drain(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(&self.buf, self.offset)?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl SequentialFile for Chunked {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= SEQUENTIAL_CHUNK {
            self.drain()?;
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }
    fn finish(mut self: Box<Self>) -> io::Result<Arc<dyn DiskFile>> {
        self.drain()?;
        Ok(self.file)
    }
}

/// The alignment of `O_DIRECT` writes: of the buffer's address, the file offset and the
/// length (4 KiB covers devices of 512-byte and of 4 KiB logical blocks).
const DIRECT_ALIGN: usize = 4096;

/// [`RealDisk`]'s [`SequentialFile`]: whole chunks written with `O_DIRECT` from a buffer
/// aligned for it, so the kernel hands them to the device without copying them into the
/// page cache (on this project's VM that copy, into pages fresh to the VM, cost about
/// 1.5 s of system time per GB, against 0.14 s direct). The tail shorter than a block is
/// written through the page cache (`O_DIRECT` cleared) so the file ends where its bytes
/// do. A file system that refuses `O_DIRECT` (tmpfs) gets ordinary writes.
struct DirectFile {
    file: File,
    /// Opened with `O_DIRECT`, and no write has been refused it.
    direct: bool,
    offset: u64,
    /// `SEQUENTIAL_CHUNK + DIRECT_ALIGN` bytes; the chunk starts at `start`, aligned.
    raw: Vec<u8>,
    start: usize,
    held: usize,
}

impl DirectFile {
    fn create(path: &Path) -> io::Result<DirectFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags: rustix::fs::OFlags| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags.bits() as i32)
                .open(path)
        };
        let (file, direct) = match open(rustix::fs::OFlags::DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                (open(rustix::fs::OFlags::empty())?, false)
            }
            Err(e) => return Err(e),
        };
        let raw = vec![0u8; SEQUENTIAL_CHUNK + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Ok(DirectFile {
            file,
            direct,
            offset: 0,
            raw,
            start,
            held: 0,
        })
    }

    /// Stop writing around the page cache (for the tail, or when a write was refused).
    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            let flags = rustix::fs::fcntl_getfl(&self.file)?;
            rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
            self.direct = false;
        }
        Ok(())
    }

    /// Write the first `n` held bytes (a multiple of [`DIRECT_ALIGN`] while direct) and
    /// keep the rest at the chunk's start.
    fn write_held(&mut self, n: usize) -> io::Result<()> {
        let at = self.start..self.start + n;
        let r = self.file.write_all_at(&self.raw[at.clone()], self.offset);
        match r {
            // Refused direct (an alignment this file system wants larger, say): the same
            // bytes again, through the page cache.
            Err(e)
                if self.direct
                    && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
            {
                self.buffered()?;
                self.file.write_all_at(&self.raw[at], self.offset)?;
            }
            r => r?,
        }
        self.offset += n as u64;
        self.raw
            .copy_within(self.start + n..self.start + self.held, self.start);
        self.held -= n;
        Ok(())
    }
}

impl SequentialFile for DirectFile {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = (SEQUENTIAL_CHUNK - self.held).min(buf.len());
            let at = self.start + self.held;
            self.raw[at..at + n].copy_from_slice(&buf[..n]);
            self.held += n;
            buf = &buf[n..];
            if self.held == SEQUENTIAL_CHUNK {
                self.write_held(SEQUENTIAL_CHUNK)?;
            }
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.offset + self.held as u64
    }
    fn finish(mut self: Box<Self>) -> io::Result<Arc<dyn DiskFile>> {
        let whole = self.held / DIRECT_ALIGN * DIRECT_ALIGN;
        if self.direct && whole > 0 {
            self.write_held(whole)?;
        }
        self.buffered()?;
        if self.held > 0 {
            self.write_held(self.held)?;
        }
        Ok(Arc::new(RealFile(self.file)))
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
    fn create_sequential(&self, path: &Path) -> io::Result<Box<dyn SequentialFile>> {
        Ok(Box::new(DirectFile::create(path)?))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Bytes whose every position differs from its neighbours' (so a chunk written at the
    /// wrong offset shows).
    fn pattern(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i % 251) as u8 ^ (i / 251 % 7) as u8)
            .collect()
    }

    /// Pieces of awkward sizes, as a Parquet writer hands them over: the file holds
    /// exactly them, in order, whatever the chunks and blocks in between; the handle
    /// returned reads and syncs as any other.
    fn round_trip(dir: &Path, open: impl Fn(&Path) -> DirectFile) {
        let bytes = pattern(3 * SEQUENTIAL_CHUNK + 5 * DIRECT_ALIGN + 17);
        let sizes = [
            1,
            4095,
            4097,
            SEQUENTIAL_CHUNK - 3,
            3,
            SEQUENTIAL_CHUNK,
            262_144,
        ];
        for total in [0, 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, bytes.len()] {
            let path = dir.join(format!("f{total}"));
            let mut w: Box<dyn SequentialFile> = Box::new(open(&path));
            let (mut at, mut k) = (0, 0);
            while at < total {
                let n = sizes[k % sizes.len()].min(total - at);
                w.write(&bytes[at..at + n]).unwrap();
                at += n;
                k += 1;
                assert_eq!(w.len(), at as u64);
            }
            let f = w.finish().unwrap();
            f.sync_all().unwrap();
            assert_eq!(f.len().unwrap(), total as u64);
            let mut back = vec![0u8; total];
            let mut got = 0;
            while got < total {
                let n = f.read_at(&mut back[got..], got as u64).unwrap();
                assert!(n > 0);
                got += n;
            }
            assert_eq!(back, bytes[..total], "{total} bytes");
            assert_eq!(fs::read(&path).unwrap(), bytes[..total]);
        }
    }

    /// On this project's ext4 (the test's temporary folder) the writes go around the page
    /// cache; the bytes are the same either way.
    #[test]
    fn a_sequential_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(dir.path(), |p| DirectFile::create(p).unwrap());
        // EXT4_SUPER_MAGIC: there, O_DIRECT must be taken and a whole chunk written so.
        if rustix::fs::statfs(dir.path()).unwrap().f_type == 0xEF53 {
            let mut f = DirectFile::create(&dir.path().join("g")).unwrap();
            f.write(&pattern(SEQUENTIAL_CHUNK)).unwrap();
            assert!(f.direct, "O_DIRECT was not used on ext4");
        }
    }

    /// A direct write the kernel refuses (here from a buffer one byte off its alignment)
    /// is made again through the page cache: the file is still exactly what was written.
    #[test]
    fn a_refused_direct_write_is_made_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let misaligned = |p: &Path| {
            let mut f = DirectFile::create(p).unwrap();
            f.start = (f.start + 1) % DIRECT_ALIGN;
            f
        };
        round_trip(dir.path(), misaligned);
        let mut f = misaligned(&dir.path().join("g"));
        f.write(&pattern(SEQUENTIAL_CHUNK)).unwrap();
        assert!(!f.direct, "a misaligned O_DIRECT write was not refused");
        assert_eq!(f.len(), SEQUENTIAL_CHUNK as u64);
    }

    /// The default (the simulated disk's): the same bytes through `create` and `write_at`,
    /// volatile until the returned file's fsync, as any write there.
    #[cfg(feature = "sim")]
    #[test]
    fn the_default_sequential_file_is_durable_only_after_its_fsync() {
        let bytes = pattern(2 * SEQUENTIAL_CHUNK + 99);
        for (seed, sync) in [(1, false), (2, false), (3, true), (4, true)] {
            let d = sim::SimDisk::new(seed);
            d.create_dir_all(Path::new("/a")).unwrap();
            let path = Path::new("/a/f");
            let mut w = d.create_sequential(path).unwrap();
            for c in bytes.chunks(300_001) {
                w.write(c).unwrap();
            }
            assert_eq!(w.len(), bytes.len() as u64);
            let f = w.finish().unwrap();
            assert_eq!(f.len().unwrap(), bytes.len() as u64);
            assert_eq!(d.read(path).unwrap(), bytes);
            if sync {
                f.sync_all().unwrap();
                d.sync_dir(Path::new("/a")).unwrap();
            }
            d.crash();
            let after = d.read(path).map(|b| b == bytes).unwrap_or(false);
            assert_eq!(after, sync, "seed {seed}");
        }
    }
}
