//! A simulated disk for tests: deterministic, seeded, and as unkind as POSIX allows.
//!
//! * Writes and `set_len` change what readers see at once, but stay **volatile** until the
//!   file is fsync'd (`sync_data` or `sync_all`).
//! * A **crash** ([`SimDisk::crash`]) keeps each file's fsync'd content plus, in order, a
//!   random number of its later writes, the last of them possibly **torn** at any byte.
//! * New files, renames and removals change the folder at once but are **lost in a crash
//!   unless the folder was fsync'd** ([`Disk::sync_dir`]) afterwards.
//! * With [`Faults`] set, writes fail (EIO or ENOSPC, sometimes after writing a prefix),
//!   fsyncs fail (and, as on Linux, the data they failed to sync is then never synced by a
//!   later fsync unless written again), creates and folder fsyncs fail.
//! * Handles opened before a crash fail afterwards, like a process that died.
//!
//! Every random choice comes from one seeded generator, so a test that drives the disk
//! from one thread at a time replays exactly from its seed.
//!
//! Simplification: folders are durable as soon as they are created, and `remove_dir_all`
//! is durable at once (nothing in Logbook relies on either for correctness).

use crate::{Disk, DiskFile};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How often operations fail, in parts per million of operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `write_at` and `set_len`.
    pub write_ppm: u32,
    /// `sync_data`, `sync_all` and `sync_dir`.
    pub sync_ppm: u32,
    /// `create`, `rename`, `remove_file`.
    pub meta_ppm: u32,
    /// `read_at` (and so `Disk::read`): EIO, as a failing sector returns it.
    pub read_ppm: u32,
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last successful fsync, in order.
    pending: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Debug)]
struct State {
    rng: u64,
    generation: u64,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    faults: Faults,
    capacity: u64,
    stats: SimStats,
    locks: std::collections::BTreeSet<PathBuf>,
    /// The next this-many writes fail (EIO), whatever the fault rates.
    fail_writes: u32,
}

/// What the disk has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Operations of any kind.
    pub ops: u64,
    /// Injected failures.
    pub faults: u64,
    /// Crashes.
    pub crashes: u64,
    /// Writes torn by a crash.
    pub torn: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Should this operation fail (one in a million times `ppm`)?
    fn fault(&mut self, ppm: u32) -> bool {
        self.stats.ops += 1;
        let hit = ppm > 0 && self.below(1_000_000) < u64::from(ppm);
        if hit {
            self.stats.faults += 1;
        }
        hit
    }

    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        match self.names.get(path) {
            Some(Node::File(ino)) => Ok(*ino),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a folder", path.display()),
            )),
            None => Err(not_found(path)),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if p.as_os_str().is_empty() => Ok(()),
            Some(p) if self.names.get(p) == Some(&Node::Dir) => Ok(()),
            Some(p) => Err(not_found(p)),
            None => Ok(()),
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// The longest file or folder name Linux file systems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// `ENAMETOOLONG` for a path with a component longer than [`NAME_MAX`] bytes, as a real
/// file system refuses it: the one fault that is not random, so an entry whose object
/// key has such a component can never be written (what parking is for).
fn name_too_long(path: &Path) -> io::Result<()> {
    if path.iter().any(|c| c.len() > NAME_MAX) {
        return Err(io::Error::from_raw_os_error(36));
    }
    Ok(())
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error ({what})"))
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(off, bytes) => {
            let off = *off as usize;
            let end = off + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[off..end].copy_from_slice(bytes);
        }
        Op::SetLen(n) => data.resize(*n as usize, 0),
    }
}

/// The simulated disk. Cheap to clone; clones share the disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: seed,
                generation: 0,
                inodes: BTreeMap::new(),
                next_ino: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                faults: Faults::default(),
                capacity: u64::MAX,
                stats: SimStats::default(),
                locks: Default::default(),
                fail_writes: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set how often operations fail from now on.
    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Limit the disk to `bytes` (writes past it fail with ENOSPC).
    pub fn set_capacity(&self, bytes: u64) {
        self.lock().capacity = bytes;
    }

    /// Make the next `n` writes (`write_at`) fail with EIO, nothing of them written.
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().fail_writes = n;
    }

    /// What happened so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// A random number from the disk's generator (so a test's own choices replay with the
    /// same seed).
    pub fn random(&self, below: u64) -> u64 {
        self.lock().below(below)
    }

    /// Power loss: every open handle dies, each file keeps its fsync'd bytes plus a random
    /// prefix of its later writes (the last one possibly torn), and every folder keeps the
    /// entries it had when it was last fsync'd.
    pub fn crash(&self) {
        let mut st = self.lock();
        st.generation += 1;
        st.stats.crashes += 1;
        st.locks.clear(); // the process that held them is gone
        let inos: Vec<u64> = st.inodes.keys().copied().collect();
        for ino in inos {
            let Some(mut node) = st.inodes.remove(&ino) else {
                continue;
            };
            let keep = st.below(node.pending.len() as u64 + 1) as usize;
            let mut data = std::mem::take(&mut node.durable);
            for op in &node.pending[..keep] {
                apply(&mut data, op);
            }
            let tear = st.below(2) == 0;
            if let Some(Op::Write(off, bytes)) = node.pending.get(keep).filter(|_| tear) {
                let cut = st.below(bytes.len() as u64 + 1) as usize;
                if cut > 0 {
                    st.stats.torn += 1;
                    apply(&mut data, &Op::Write(*off, bytes[..cut].to_vec()));
                }
            }
            st.inodes.insert(
                ino,
                Inode {
                    durable: data.clone(),
                    data,
                    pending: Vec::new(),
                },
            );
        }
        st.names = st.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = st
            .names
            .values()
            .filter_map(|n| match n {
                Node::File(i) => Some(*i),
                Node::Dir => None,
            })
            .collect();
        st.inodes.retain(|i, _| live.contains(i));
    }

    fn handle(&self, ino: u64, generation: u64) -> Arc<dyn DiskFile> {
        Arc::new(SimFile {
            disk: self.clone(),
            ino,
            generation,
        })
    }
}

struct SimFile {
    disk: SimDisk,
    ino: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.disk.lock();
        if st.generation != self.generation || !st.inodes.contains_key(&self.ino) {
            return Err(eio("handle from before a crash"));
        }
        f(&mut st, self.ino)
    }
}

fn inode(st: &mut State, ino: u64) -> io::Result<&mut Inode> {
    st.inodes.get_mut(&ino).ok_or_else(|| eio("no inode"))
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, ino| {
            let fail = st.faults.read_ppm;
            if st.fault(fail) {
                return Err(eio("simulated read failure"));
            }
            let node = inode(st, ino)?;
            let off = offset as usize;
            if off >= node.data.len() {
                return Ok(0);
            }
            let n = buf.len().min(node.data.len() - off);
            buf[..n].copy_from_slice(&node.data[off..off + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|st, ino| {
            let cur = inode(st, ino)?.data.len() as u64;
            let end = offset + buf.len() as u64;
            let grow = end.saturating_sub(cur);
            let full = st.used().saturating_add(grow) > st.capacity;
            if st.fail_writes > 0 {
                st.fail_writes -= 1;
                st.stats.faults += 1;
                return Err(eio("write (forced)"));
            }
            let fail = st.faults.write_ppm;
            if full || st.fault(fail) {
                // Some of it may have been written before the error.
                let part = st.below(buf.len() as u64 + 1) as usize;
                let room = st.capacity.saturating_sub(st.used());
                let part = if full {
                    part.min((cur.saturating_sub(offset) + room) as usize)
                } else {
                    part
                };
                if part > 0 {
                    let op = Op::Write(offset, buf[..part].to_vec());
                    let node = inode(st, ino)?;
                    apply(&mut node.data, &op);
                    node.pending.push(op);
                }
                let enospc = full || st.below(2) == 0;
                return Err(if enospc {
                    io::Error::new(io::ErrorKind::StorageFull, "simulated ENOSPC")
                } else {
                    eio("write")
                });
            }
            let op = Op::Write(offset, buf.to_vec());
            let node = inode(st, ino)?;
            apply(&mut node.data, &op);
            node.pending.push(op);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|st, ino| Ok(inode(st, ino)?.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, ino| {
            let cur = inode(st, ino)?.data.len() as u64;
            let grow = len.saturating_sub(cur);
            let fail = st.faults.write_ppm;
            if st.used().saturating_add(grow) > st.capacity {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated ENOSPC",
                ));
            }
            if st.fault(fail) {
                return Err(eio("set_len"));
            }
            let op = Op::SetLen(len);
            let node = inode(st, ino)?;
            apply(&mut node.data, &op);
            node.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync_all()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.with(|st, ino| {
            let fail = st.faults.sync_ppm;
            if st.fault(fail) {
                // As on Linux: the pages are marked clean anyway, so what this fsync failed
                // to make durable stays volatile until it is written again.
                inode(st, ino)?.pending.clear();
                return Err(eio("fsync"));
            }
            // What a failed fsync dropped is not in `pending` any more: it never becomes
            // durable, however many fsyncs succeed later.
            let node = inode(st, ino)?;
            for op in std::mem::take(&mut node.pending) {
                apply(&mut node.durable, &op);
            }
            Ok(())
        })
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.stats.ops += 1;
        name_too_long(path)?;
        for a in path.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            match st.names.get(a) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", a.display()),
                    ))
                }
                None => {
                    st.names.insert(a.to_path_buf(), Node::Dir);
                    st.durable_names.insert(a.to_path_buf(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if st.names.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let st = self.lock();
        let ino = st.lookup(path)?;
        let generation = st.generation;
        drop(st);
        Ok(self.handle(ino, generation))
    }

    fn open_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.open_read(path)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut st = self.lock();
        name_too_long(path)?;
        st.parent_exists(path)?;
        let fail = st.faults.meta_ppm;
        if st.fault(fail) {
            return Err(eio("create"));
        }
        let ino = match st.names.get(path).copied() {
            Some(Node::File(ino)) => {
                let op = Op::SetLen(0);
                let node = inode(&mut st, ino)?;
                apply(&mut node.data, &op);
                node.pending.push(op);
                ino
            }
            Some(Node::Dir) => return Err(st.lookup(path).err().unwrap_or_else(|| eio("dir"))),
            None => {
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), Node::File(ino));
                ino
            }
        };
        let generation = st.generation;
        drop(st);
        Ok(self.handle(ino, generation))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.lookup(from)?;
        name_too_long(to)?;
        st.parent_exists(to)?;
        let fail = st.faults.meta_ppm;
        if st.fault(fail) {
            return Err(eio("rename"));
        }
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), Node::File(ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.lookup(path)?;
        let fail = st.faults.meta_ppm;
        if st.fault(fail) {
            return Err(eio("remove"));
        }
        st.names.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.stats.ops += 1;
        if st.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        st.names.retain(|p, _| !p.starts_with(path));
        st.durable_names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.names.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        let fail = st.faults.sync_ppm;
        if st.fault(fail) {
            return Err(eio("fsync folder"));
        }
        let now: Vec<(PathBuf, Node)> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        st.durable_names
            .retain(|p, n| p.parent() != Some(dir) || *n == Node::Dir);
        for (p, n) in now {
            st.durable_names.insert(p, n);
        }
        Ok(())
    }

    fn free_bytes(&self, _path: &Path) -> io::Result<u64> {
        let st = self.lock();
        Ok(st.capacity.saturating_sub(st.used()))
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().names.get(path) == Some(&Node::Dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<crate::LockGuard>> {
        let mut st = self.lock();
        st.parent_exists(path)?;
        if !st.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        let generation = st.generation;
        Ok(Some(Box::new(SimLock {
            disk: self.clone(),
            path: path.to_path_buf(),
            generation,
        })))
    }
}

struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.disk.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

/// The seeds a simulation runs: `SIM_SEED=a,b,c` replays those, `SIM_SEEDS=n` runs
/// `0..n`, else `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(d: &SimDisk, p: &str, bytes: &[u8]) -> Arc<dyn DiskFile> {
        let f = d.create(Path::new(p)).unwrap();
        f.write_at(bytes, 0).unwrap();
        f
    }

    #[test]
    fn unsynced_writes_and_entries_are_lost_synced_ones_survive() {
        for seed in 0..200 {
            let d = SimDisk::new(seed);
            d.create_dir_all(Path::new("/a")).unwrap();
            let f = put(&d, "/a/x", b"hello");
            f.sync_all().unwrap();
            d.sync_dir(Path::new("/a")).unwrap();
            f.write_at(b" world", 5).unwrap();
            let _g = put(&d, "/a/y", b"never synced folder");
            d.crash();
            let x = d.read(Path::new("/a/x")).unwrap();
            assert!(x.starts_with(b"hello"), "seed {seed}: {x:?}");
            assert!(b"hello world".starts_with(&x), "seed {seed}: {x:?}");
            assert!(!d.exists(Path::new("/a/y")), "seed {seed}");
            assert!(f.len().is_err(), "old handles die with the crash");
        }
    }

    #[test]
    fn a_crash_can_tear_and_can_keep() {
        let (mut torn, mut kept, mut lost) = (0, 0, 0);
        for seed in 0..500 {
            let d = SimDisk::new(seed);
            d.create_dir_all(Path::new("/a")).unwrap();
            let f = put(&d, "/a/x", b"");
            f.sync_all().unwrap();
            d.sync_dir(Path::new("/a")).unwrap();
            f.write_at(b"0123456789", 0).unwrap();
            d.crash();
            match d.read(Path::new("/a/x")).unwrap().len() {
                0 => lost += 1,
                10 => kept += 1,
                _ => torn += 1,
            }
        }
        assert!(torn > 50 && kept > 50 && lost > 50, "{torn} {kept} {lost}");
    }

    #[test]
    fn a_name_longer_than_name_max_is_refused_as_a_real_file_system_does() {
        let d = SimDisk::new(1);
        let long = "a".repeat(NAME_MAX + 1);
        let ok = "a".repeat(NAME_MAX);
        d.create_dir_all(Path::new("/x")).unwrap();
        for r in [
            d.create_dir_all(&Path::new("/x").join(&long).join("y")),
            d.create(&Path::new("/x").join(&long)).map(|_| ()),
        ] {
            assert_eq!(r.unwrap_err().raw_os_error(), Some(36));
        }
        d.create(&Path::new("/x").join(&ok)).unwrap();
        let e = d
            .rename(&Path::new("/x").join(&ok), &Path::new("/x").join(&long))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(36));
        assert!(
            d.exists(&Path::new("/x").join(&ok)),
            "a refused rename moves nothing"
        );
        d.create_dir_all(&Path::new("/x").join(&ok)).unwrap_err(); // a file by that name
    }

    #[test]
    fn rename_needs_the_folder_synced() {
        for seed in 0..50 {
            let d = SimDisk::new(seed);
            d.create_dir_all(Path::new("/a")).unwrap();
            d.write_atomic(Path::new("/a/c"), b"1").unwrap();
            let f = put(&d, "/a/t", b"2");
            f.sync_all().unwrap();
            d.rename(Path::new("/a/t"), Path::new("/a/c")).unwrap();
            assert_eq!(d.read(Path::new("/a/c")).unwrap(), b"2");
            d.crash();
            assert_eq!(d.read(Path::new("/a/c")).unwrap(), b"1", "seed {seed}");
            d.write_atomic(Path::new("/a/c"), b"3").unwrap();
            d.crash();
            assert_eq!(d.read(Path::new("/a/c")).unwrap(), b"3", "seed {seed}");
        }
    }

    #[test]
    fn a_failed_fsync_loses_the_data_for_good() {
        let d = SimDisk::new(7);
        d.create_dir_all(Path::new("/a")).unwrap();
        let f = put(&d, "/a/x", b"");
        f.sync_all().unwrap();
        d.sync_dir(Path::new("/a")).unwrap();
        f.write_at(b"data", 0).unwrap();
        d.set_faults(Faults {
            sync_ppm: 1_000_000,
            ..Faults::default()
        });
        assert!(f.sync_data().is_err());
        d.set_faults(Faults::default());
        f.sync_data().unwrap(); // "succeeds", but the pages were already marked clean
        assert_eq!(d.read(Path::new("/a/x")).unwrap(), b"data");
        d.crash();
        assert_eq!(d.read(Path::new("/a/x")).unwrap(), b"");
    }

    #[test]
    fn same_seed_same_story() {
        let run = |seed| {
            let d = SimDisk::new(seed);
            d.set_faults(Faults {
                write_ppm: 200_000,
                sync_ppm: 200_000,
                meta_ppm: 100_000,
                read_ppm: 100_000,
            });
            d.create_dir_all(Path::new("/a")).unwrap();
            let mut log = Vec::new();
            for i in 0..50u64 {
                let p = format!("/a/{}", i % 7);
                let r = d.create(Path::new(&p)).and_then(|f| {
                    f.write_at(&i.to_le_bytes(), i)?;
                    f.sync_all()
                });
                log.push(r.is_ok());
                if i % 13 == 0 {
                    let _ = d.sync_dir(Path::new("/a"));
                    d.crash();
                }
            }
            let files: Vec<_> = d
                .list(Path::new("/a"))
                .unwrap()
                .into_iter()
                .map(|n| d.read(&Path::new("/a").join(&n)).ok())
                .collect();
            (log, files, d.stats())
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn a_full_disk_says_enospc() {
        let d = SimDisk::new(1);
        d.create_dir_all(Path::new("/a")).unwrap();
        d.set_capacity(8);
        let f = put(&d, "/a/x", b"12345678");
        let e = f.write_at(b"9", 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(d.free_bytes(Path::new("/a")).unwrap(), 0);
    }
}
