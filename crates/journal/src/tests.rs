use super::*;
use proptest::prelude::*;
use std::fs::{self, OpenOptions};

/// Bytes of an entry header and of a segment header (format 2).
const HEADER: usize = format::HEADER_V2;
const START: usize = format::SEGMENT_HEADER;

fn payload(i: u64) -> Vec<u8> {
    format!(
        "{{\"n\":{i},\"pad\":\"{}\"}}",
        "x".repeat((i % 50) as usize)
    )
    .into_bytes()
}

/// Small pre-filled segments keep tests fast.
fn small(dir: &std::path::Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.segment_bytes = 64 * 1024;
    c
}

/// A journal in 500-byte segments (on `disk`, else the real disk) holding 60 entries.
fn sixty_in_small_segments(dir: &Path, disk: Option<Arc<dyn Disk>>) -> (JournalConfig, Journal) {
    let mut cfg = small(dir);
    cfg.segment_bytes = 500;
    if let Some(d) = disk {
        cfg.disk = d;
    }
    let j = Journal::open(cfg.clone()).unwrap();
    append_n(&j, &rt(), 0, 60);
    (cfg, j)
}

/// The names of collected segments moved aside and not yet removed.
fn trash_in(journal_dir: &Path) -> Vec<String> {
    fs::read_dir(journal_dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(TRASH_PREFIX))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn append_n(j: &Journal, rt: &tokio::runtime::Runtime, from: u64, n: u64) -> Vec<u64> {
    rt.block_on(async {
        let mut out = Vec::new();
        for i in from..from + n {
            out.push(
                j.append(Kind::Record, Box::new(move |_| payload(i)))
                    .await
                    .unwrap(),
            );
        }
        out
    })
}

fn read_all(j: &Journal, from: u64) -> Vec<Entry> {
    let upto = *j.committed().borrow();
    let mut r = j.reader(from);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry(upto).unwrap() {
        out.push(e);
    }
    out
}

/// Open again (dropping the last handle joined the old writer and its threads).
fn reopen(cfg: &JournalConfig) -> Journal {
    Journal::open(cfg.clone()).unwrap()
}

#[test]
fn appends_get_consecutive_sequences_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let seqs = append_n(&j, &rt, 0, 100);
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let all = read_all(&j, 1);
    assert_eq!(all.len(), 100);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.payload, payload(i as u64));
    }
    // Reading from the middle.
    assert_eq!(read_all(&j, 51)[0].payload, payload(50));
}

#[test]
fn payload_sees_its_own_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    rt.block_on(async {
        for _ in 0..5 {
            j.append(Kind::Record, Box::new(|seq| seq.to_string().into_bytes()))
                .await
                .unwrap();
        }
    });
    for e in read_all(&j, 1) {
        assert_eq!(e.payload, e.seq.to_string().into_bytes());
    }
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let n = 2000u64;
    let mut seqs = rt.block_on(async {
        let mut hs = Vec::new();
        for i in 0..n {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                j.append(Kind::Record, Box::new(move |_| payload(i)))
                    .await
                    .unwrap()
            }));
        }
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap());
        }
        out
    });
    seqs.sort();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let syncs = j.stats().syncs.load(Ordering::Relaxed);
    assert!(
        syncs >= 1 && syncs < n,
        "group commit: {syncs} syncs for {n}"
    );
    assert_eq!(read_all(&j, 1).len() as u64, n);
}

#[test]
fn survives_reopen_and_continues_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = small(dir.path());
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 10);
    }
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 11);
    assert_eq!(append_n(&j, &rt, 10, 1), vec![11]);
    assert_eq!(read_all(&j, 1).len(), 11);
}

#[test]
fn torn_tail_is_cut_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = small(dir.path());
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 3);
    }
    let seg = segment_path(dir.path(), 1);
    let full = fs::read(&seg).unwrap();
    let ends: Vec<usize> = {
        // Byte offsets where each entry ends.
        let mut v = Vec::new();
        let mut off = START;
        for i in 0..3 {
            off += HEADER + payload(i).len();
            v.push(off);
        }
        v
    };
    let data_end = *ends.last().unwrap();
    assert!(
        full[data_end..].iter().all(|&b| b == 0),
        "segment is pre-filled with zeros"
    );
    for cut in 0..=data_end {
        let d2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(segments_dir(d2.path())).unwrap();
        fs::write(segment_path(d2.path(), 1), &full[..cut]).unwrap();
        let j = Journal::open(small(d2.path())).unwrap();
        let complete = ends.iter().filter(|&&e| e <= cut).count() as u64;
        assert_eq!(*j.committed().borrow(), complete + 1, "cut at {cut}");
        // The file was cut back to the last whole entry and appends continue after it.
        let s = append_n(&j, &rt, 100, 1);
        assert_eq!(s, vec![complete + 1]);
        let all = read_all(&j, 1);
        assert_eq!(all.len() as u64, complete + 1);
    }
}

/// A failed append's undo (zeros over the batch) torn by a crash can leave zeros where
/// the batch began and its bytes further on. Recovery saw the zeros as the end of the
/// data and kept what followed; new entries then covered part of it, the segment rolled,
/// and every reader stopped at the old bytes right after its last entry ("checksum
/// mismatch"), while the check's scan, which moves on to the next segment, saw nothing
/// wrong (found by the system simulation, seed 179 of 1,500).
#[test]
fn bytes_left_behind_zeros_after_the_last_entry_are_cleared_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = small(dir.path());
    cfg.segment_bytes = 4096;
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 3);
    }
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    assert_eq!(bytes.len(), 4096, "pre-filled");
    let end_of_third: usize = START + (0..3).map(|i| HEADER + payload(i).len()).sum::<usize>();
    // Zeros for 100 bytes after the last entry, then a failed batch's bytes to the end.
    for (k, b) in bytes[end_of_third + 100..].iter_mut().enumerate() {
        *b = b'a' + (k % 26) as u8;
    }
    fs::write(&seg, &bytes).unwrap();
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 4, "three entries, then the end");
    let after = fs::read(&seg).unwrap();
    assert!(
        after[end_of_third..].iter().all(|&b| b == 0),
        "what followed the zeros is cleared"
    );
    // Appends fill the segment part way into where the old bytes were, then roll; every
    // reader reads across.
    let seqs = append_n(&j, &rt, 3, 60);
    assert_eq!(seqs, (4..64).collect::<Vec<u64>>());
    assert!(
        list_segments(&RealDisk, dir.path()).unwrap().len() > 1,
        "rolled"
    );
    let all = read_all(&j, 1);
    assert_eq!(all.len(), 63);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    drop(j);
    let j = reopen(&cfg);
    assert_eq!(read_all(&j, 1).len(), 63);
}

#[test]
fn corrupt_byte_in_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = small(dir.path());
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 3);
    }
    let seg = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let end_of_third: usize = START + (0..3).map(|i| HEADER + payload(i).len()).sum::<usize>();
    bytes[end_of_third - 2] ^= 0xff; // inside the third entry's payload
    fs::write(&seg, &bytes).unwrap();
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 3);
}

#[test]
fn rolls_segments_and_reads_across_them_and_collects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, j) = sixty_in_small_segments(dir.path(), None);
    let segs = list_segments(&RealDisk, dir.path()).unwrap();
    assert!(segs.len() > 3, "{} segments", segs.len());
    let all = read_all(&j, 1);
    assert_eq!(all.len(), 60);
    assert_eq!(read_all(&j, 33)[0].seq, 33);
    // Nothing is collected below the first segment boundary.
    assert_eq!(j.collect_garbage(1).unwrap(), 0);
    let deleted = j.collect_garbage(40).unwrap();
    assert!(deleted > 0);
    let left = list_segments(&RealDisk, dir.path()).unwrap();
    assert!(left[0].0 <= 40);
    assert_eq!(read_all(&j, 40).len(), 21);
    // Reopen after GC keeps the sequence.
    drop(j);
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 61);
}

#[test]
fn cursor_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cursor::new(dir.path(), "archive");
    assert_eq!(c.load().unwrap(), 1);
    c.store(42).unwrap();
    assert_eq!(c.load().unwrap(), 42);
    c.store(43).unwrap();
    assert_eq!(Cursor::new(dir.path(), "archive").load().unwrap(), 43);
}

#[test]
fn async_mode_acknowledges_and_syncs_later() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = small(dir.path());
    cfg.mode = SyncMode::Async;
    cfg.async_sync_interval = Duration::from_millis(20);
    let j = Journal::open(cfg).unwrap();
    append_n(&j, &rt, 0, 50);
    // Async mode syncs within the interval: wait for it (bounded), not a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while j.stats().syncs.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(j.stats().syncs.load(Ordering::Relaxed) >= 1);
    assert_eq!(read_all(&j, 1).len(), 50);
}

#[test]
fn oversized_payload_is_refused_without_consuming_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let r = rt.block_on(j.append(Kind::Record, Box::new(|_| vec![0u8; MAX_PAYLOAD + 1])));
    assert!(matches!(r, Err(JournalError::TooLarge(_))));
    assert_eq!(append_n(&j, &rt, 0, 1), vec![1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Model check: any run of appends, reopenings and segment sizes reads back exactly
    /// the appended payloads in order.
    #[test]
    fn model(ops in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..300)), 1..60),
             seg in 64u64..4096) {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let mut cfg = small(dir.path());
        cfg.segment_bytes = seg;
        let mut j = Journal::open(cfg.clone()).unwrap();
        let mut model: Vec<Vec<u8>> = Vec::new();
        for (op, data) in ops {
            if op == 0 {
                drop(j);
                j = Journal::open(cfg.clone()).unwrap();
            } else {
                let d = data.clone();
                let s = rt.block_on(j.append(Kind::Record, Box::new(move |_| d))).unwrap();
                model.push(data);
                prop_assert_eq!(s, model.len() as u64);
            }
        }
        let got: Vec<Vec<u8>> = read_all(&j, 1).into_iter().map(|e| e.payload).collect();
        prop_assert_eq!(got, model);
    }
}

#[test]
fn read_only_scan_sees_committed_entries_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = small(dir.path());
    cfg.segment_bytes = 300;
    let j = Journal::open(cfg).unwrap();
    append_n(&j, &rt, 0, 20);
    let mut seen = Vec::new();
    scan(dir.path(), &Keyring::default(), 5, |e| seen.push(e.seq)).unwrap();
    assert_eq!(seen, (5..=20).collect::<Vec<_>>());
}

#[test]
fn segments_are_prefilled_and_keep_their_size_across_reopen_and_torn_tails() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = small(dir.path());
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 10);
    }
    let seg = segment_path(dir.path(), 1);
    assert_eq!(fs::metadata(&seg).unwrap().len(), 64 * 1024);
    // Garbage where the next entry would go (a torn write) is zeroed, not truncated.
    let valid: usize = START + (0..10).map(|i| HEADER + payload(i).len()).sum::<usize>();
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[7u8; 40], valid as u64).unwrap();
    }
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 11);
    assert_eq!(fs::metadata(&seg).unwrap().len(), 64 * 1024);
    append_n(&j, &rt, 10, 5);
    assert_eq!(read_all(&j, 1).len(), 15);
    let mut seen = Vec::new();
    scan(dir.path(), &Keyring::default(), 1, |e| seen.push(e.seq)).unwrap();
    assert_eq!(seen, (1..=15).collect::<Vec<_>>());
}

#[test]
fn rolls_into_prepared_spares_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = small(dir.path());
    cfg.segment_bytes = 1024;
    let j = Journal::open(cfg.clone()).unwrap();
    for chunk in 0..20 {
        append_n(&j, &rt, chunk * 10, 10);
        // Let the spare of the last roll get ready (the one made at open counts too): on
        // a busy machine that can take a while, and this test is about using spares.
        let st = j.stats();
        let deadline = Instant::now() + Duration::from_secs(30);
        while st.spares_ready.load(Ordering::Relaxed) < st.rolls.load(Ordering::Relaxed) + 1
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let segs = list_segments(&RealDisk, dir.path()).unwrap();
    assert!(segs.len() > 5);
    let full = segs
        .iter()
        .filter(|(_, p)| fs::metadata(p).unwrap().len() == 1024)
        .count();
    assert!(
        full >= segs.len() - 2,
        "most segments come pre-filled: {full}/{}",
        segs.len()
    );
    // Each segment that is not pre-filled was a roll that found no spare ready, counted.
    assert_eq!(
        j.stats().rolls_unprepared.load(Ordering::Relaxed),
        (segs.len() - full) as u64
    );
    assert_eq!(read_all(&j, 1).len(), 200);
    drop(j);
    let j = reopen(&cfg);
    assert_eq!(*j.committed().borrow(), 201);
    assert_eq!(read_all(&j, 150)[0].seq, 150);
}

#[test]
fn a_reader_following_the_writer_never_sees_stale_padding() {
    // The reader reads ahead into the zero padding, then the writer fills it.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let mut r = j.reader(1);
    for round in 0..50u64 {
        append_n(&j, &rt, round, 1);
        let upto = *j.committed().borrow();
        let e = r.next_entry(upto).unwrap().unwrap();
        assert_eq!(e.seq, round + 1);
    }
}

#[test]
fn entries_carry_their_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    append_n(&j, &rt, 0, 3);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for e in read_all(&j, 1) {
        assert!(
            (before..=after).contains(&e.time_ms),
            "{} not in {before}..={after}",
            e.time_ms
        );
    }
    assert!(format!("{j:?}").contains(&dir.path().display().to_string()));
}

#[test]
fn scanning_a_missing_journal_finds_nothing_and_a_broken_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    scan(&dir.path().join("absent"), &Keyring::default(), 1, |_| {
        seen += 1
    })
    .unwrap();
    assert_eq!(seen, 0);
    // `segments` that is a file, not a folder: an error, never "no entries".
    fs::write(dir.path().join("segments"), b"x").unwrap();
    assert!(scan(dir.path(), &Keyring::default(), 1, |_| seen += 1).is_err());
    assert!(list_segments(&RealDisk, dir.path()).is_err());
}

#[test]
fn payloads_up_to_the_limit_are_taken_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = small(dir.path());
    cfg.segment_bytes = 1 << 20;
    let j = Journal::open(cfg).unwrap();
    let big = rt
        .block_on(j.append(Kind::Record, Box::new(|_| vec![7u8; MAX_PAYLOAD])))
        .unwrap();
    let e = read_all(&j, big).remove(0);
    assert_eq!(
        e.payload.len(),
        MAX_PAYLOAD,
        "exactly the limit is taken and read back"
    );
    drop(j);
    let j = reopen(&{
        let mut c = small(dir.path());
        c.segment_bytes = 1 << 20;
        c
    });
    assert_eq!(
        read_all(&j, big).remove(0).payload.len(),
        MAX_PAYLOAD,
        "and recovered"
    );
    let r = rt.block_on(j.append(Kind::Record, Box::new(|_| vec![0u8; MAX_PAYLOAD + 1])));
    assert!(matches!(r, Err(JournalError::TooLarge(n)) if n == MAX_PAYLOAD + 1));
    // Still healthy, and the next sequence is the next number.
    assert_eq!(append_n(&j, &rt, 0, 1), [big + 1]);
}

#[test]
fn dropping_the_last_handle_waits_for_the_writer_and_its_spare() {
    // A large spare takes a while to pre-fill on the simulated disk; when the last handle
    // is gone, the writer must have waited for it and removed it.
    for seed in 0..3 {
        let disk = logbook_disk::sim::SimDisk::new(seed);
        let mut cfg = JournalConfig::new("/j");
        cfg.disk = Arc::new(disk.clone());
        cfg.segment_bytes = 64 << 20;
        let rt = rt();
        let j = Journal::open(cfg).unwrap();
        append_n(&j, &rt, 0, 2);
        drop(j);
        let left: Vec<String> = disk
            .list(Path::new("/j/segments"))
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(".spare-"))
            .collect();
        assert!(left.is_empty(), "spare left behind: {left:?}");
    }
}

/// A journal on a simulated disk, opened stepped (deterministic).
fn sim_journal(disk: &logbook_disk::sim::SimDisk, mode: SyncMode) -> (Journal, Stepper) {
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.segment_bytes = 4096;
    cfg.mode = mode;
    Journal::open_stepped(cfg).unwrap()
}

fn submit(j: &Journal, i: u64) -> Acknowledgement {
    j.submit(Kind::Record, Box::new(move |_| payload(i)))
        .unwrap()
}

fn scan_seqs(disk: &logbook_disk::sim::SimDisk) -> Vec<u64> {
    let mut seen = Vec::new();
    scan_on(disk, Path::new("/j"), &Keyring::default(), 1, |e| {
        seen.push(e.seq)
    })
    .unwrap();
    seen
}

#[test]
fn each_fdatasync_lands_in_the_bucket_of_its_duration_and_the_longest_is_kept() {
    let st = JournalStats::default();
    for micros in [50, 100, 101, 900, 4_000, 60_000, 2_000_000] {
        st.note_sync(micros * 1000);
    }
    let h = st.sync_histogram();
    assert_eq!(h.len(), SYNC_BUCKET_MICROS.len() + 1);
    assert_eq!(
        h.last().unwrap().0,
        f64::MAX,
        "the last bucket has no bound"
    );
    let count = |upper: f64| h.iter().find(|(b, _)| *b == upper).unwrap().1;
    assert_eq!(count(0.0001), 2, "50 and 100 µs: a bound is inclusive");
    assert_eq!(count(0.00025), 1, "101 µs");
    assert_eq!(count(0.001), 1, "900 µs");
    assert_eq!(count(0.005), 1, "4 ms");
    assert_eq!(count(0.1), 1, "60 ms");
    assert_eq!(count(f64::MAX), 1, "2 s: past the last bound");
    assert_eq!(h.iter().map(|(_, n)| n).sum::<u64>(), 7);
    assert_eq!(st.syncs.load(Ordering::Relaxed), 7);
    assert_eq!(st.sync_max_nanos.load(Ordering::Relaxed), 2_000_000_000);
}

#[test]
fn a_group_commit_takes_at_most_max_batch_entries() {
    let disk = logbook_disk::sim::SimDisk::new(1);
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.max_batch = 2;
    let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
    let mut acks: Vec<_> = (0..5).map(|i| submit(&j, i)).collect();
    assert_eq!(stepper.step(), 5, "every queued entry taken");
    assert_eq!(j.stats().batches.load(Ordering::Relaxed), 3, "2 + 2 + 1");
    assert_eq!(j.stats().syncs.load(Ordering::Relaxed), 3);
    let in_buckets: u64 = j.stats().sync_histogram().iter().map(|(_, n)| n).sum();
    assert_eq!(
        in_buckets, 3,
        "every commit's fdatasync is in the histogram"
    );
    let seqs: Vec<u64> = acks
        .iter_mut()
        .map(|a| a.try_result().unwrap().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn async_mode_entries_are_durable_after_the_timer_sync_and_after_close() {
    // Written but not synced: a crash may lose them. After `sync_now` (the timer) or a
    // clean close, never.
    for seed in 0..20 {
        let disk = logbook_disk::sim::SimDisk::new(seed);
        let (j, mut stepper) = sim_journal(&disk, SyncMode::Async);
        let mut a = submit(&j, 1);
        stepper.step();
        assert_eq!(a.try_result().unwrap().unwrap(), 1);
        stepper.sync_now();
        drop(j);
        disk.crash();
        assert_eq!(scan_seqs(&disk), [1], "seed {seed}: synced by the timer");

        let (j, mut stepper) = sim_journal(&disk, SyncMode::Async);
        let mut a = submit(&j, 2);
        stepper.step();
        assert_eq!(a.try_result().unwrap().unwrap(), 2);
        drop(j);
        stepper.close();
        disk.crash();
        assert_eq!(scan_seqs(&disk), [1, 2], "seed {seed}: synced at close");
    }
}

#[test]
fn the_writer_thread_syncs_async_entries_when_the_last_handle_goes() {
    for seed in 0..20 {
        let disk = logbook_disk::sim::SimDisk::new(seed);
        let mut cfg = JournalConfig::new("/j");
        cfg.disk = Arc::new(disk.clone());
        cfg.segment_bytes = 4096;
        cfg.mode = SyncMode::Async;
        cfg.async_sync_interval = Duration::from_secs(3600);
        let rt = rt();
        let j = Journal::open(cfg).unwrap();
        append_n(&j, &rt, 0, 3);
        drop(j); // joins the writer, which syncs on its way out
        disk.crash();
        assert_eq!(scan_seqs(&disk), [1, 2, 3], "seed {seed}");
    }
}

#[test]
fn a_failed_fsync_makes_the_journal_unhealthy() {
    let disk = logbook_disk::sim::SimDisk::new(3);
    let (j, mut stepper) = sim_journal(&disk, SyncMode::Strict);
    assert!(j.is_healthy());
    disk.set_faults(logbook_disk::sim::Faults {
        sync_ppm: 1_000_000,
        ..Default::default()
    });
    let mut a = submit(&j, 1);
    stepper.step();
    assert!(a.try_result().unwrap().is_err());
    assert!(!j.is_healthy());
    disk.set_faults(Default::default());
    assert!(
        j.submit(Kind::Record, Box::new(|_| payload(2))).is_err(),
        "refused up front"
    );
}

#[test]
fn collected_segments_stay_collected_after_a_crash() {
    let disk = logbook_disk::sim::SimDisk::new(4);
    let (j, mut stepper) = sim_journal(&disk, SyncMode::Strict);
    for i in 0..200 {
        let _ = submit(&j, i);
        stepper.step();
    }
    let before = list_segments(&disk, Path::new("/j")).unwrap().len();
    assert!(before > 3, "{before}");
    let n = j.collect_garbage(150).unwrap();
    assert!(n > 0);
    drop(j);
    disk.crash();
    let after = list_segments(&disk, Path::new("/j")).unwrap();
    assert_eq!(
        after.len(),
        before - n,
        "a collected segment came back: {after:?}"
    );
}

#[test]
fn an_unreadable_cursor_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cursor::new(dir.path(), "archive");
    assert_eq!(c.load().unwrap(), 1, "never stored: from the start");
    // A cursor that cannot be read must not silently restart delivery from 1.
    fs::create_dir_all(dir.path().join("cursors").join("archive")).unwrap();
    assert!(c.load().is_err());
}

#[test]
fn a_segment_fills_exactly_before_it_rolls() {
    // A header, then frames of 28 + 10 bytes; a segment of exactly three.
    let disk = logbook_disk::sim::SimDisk::new(5);
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.segment_bytes = (START + 3 * (HEADER + 10)) as u64;
    let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
    for _ in 0..4 {
        let _ = j
            .submit(Kind::Record, Box::new(|_| vec![b'x'; 10]))
            .unwrap();
        stepper.step();
    }
    let firsts: Vec<u64> = list_segments(&disk, Path::new("/j"))
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(firsts, [1, 4]);
}

#[test]
fn an_encrypted_payload_of_exactly_the_limit_is_taken_and_read_back() {
    // Sealed, it is the limit plus the seal's overhead: the reader's length check must
    // let exactly that through (found by the mutation re-run, shard 2/3).
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = |d: &std::path::Path| {
        let mut c = keyed(d, Some(3), &[]);
        c.segment_bytes = 1 << 20;
        c
    };
    let j = Journal::open(cfg(dir.path())).unwrap();
    let big = rt
        .block_on(j.append(Kind::Record, Box::new(|_| vec![7u8; MAX_PAYLOAD])))
        .unwrap();
    assert_eq!(read_all(&j, big).remove(0).payload, vec![7u8; MAX_PAYLOAD]);
    drop(j);
    let j = reopen(&cfg(dir.path()));
    assert_eq!(
        read_all(&j, big).remove(0).payload.len(),
        MAX_PAYLOAD,
        "and recovered"
    );
    assert_eq!(append_n(&j, &rt, 0, 1), [big + 1]);
}

#[test]
fn an_encrypted_segment_fills_exactly_before_it_rolls() {
    // The same with a data key: each frame also carries the seal's nonce and tag, and
    // the roll decision counts them (found by the mutation re-run, shard 2/3).
    let disk = logbook_disk::sim::SimDisk::new(5);
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.keys = Arc::new(Keyring::new(Some(master(7)), Vec::new()));
    cfg.segment_bytes = (START + 3 * (HEADER + 10 + logbook_seal::OVERHEAD)) as u64;
    let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
    for _ in 0..4 {
        let _ = j
            .submit(Kind::Record, Box::new(|_| vec![b'x'; 10]))
            .unwrap();
        stepper.step();
    }
    let segs = list_segments(&disk, Path::new("/j")).unwrap();
    assert_eq!(segs.iter().map(|(f, _)| *f).collect::<Vec<_>>(), [1, 4]);
    // And it is full to the byte: its three frames end where the segment does.
    let first = disk.read(&segs[0].1).unwrap();
    assert_eq!(
        first.len() as u64,
        (START + 3 * (HEADER + 10 + logbook_seal::OVERHEAD)) as u64
    );
    assert!(first[first.len() - 1] != 0 || first[first.len() - 16..].iter().any(|&b| b != 0));
}

#[test]
fn a_scan_while_the_writer_appends_sees_everything_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (j, stop) = (j.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                rt.block_on(j.append(Kind::Record, Box::new(move |_| payload(i))))
                    .unwrap();
            }
        })
    };
    for _ in 0..200 {
        let committed = *j.committed().borrow();
        let mut seen = Vec::new();
        scan(dir.path(), &Keyring::default(), 1, |e| seen.push(e.seq)).unwrap();
        assert!(
            seen.len() as u64 + 1 >= committed,
            "scan stopped at {} of {}",
            seen.len(),
            committed - 1
        );
        assert!(seen.iter().copied().eq(1..=seen.len() as u64));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    drop(rt);
}

#[test]
fn segments_are_prefilled_only_with_room_for_four() {
    let disk = logbook_disk::sim::SimDisk::new(6);
    let size = 4096u64;
    let open = |capacity: u64| {
        let d = logbook_disk::sim::SimDisk::new(6);
        d.set_capacity(capacity);
        let mut cfg = JournalConfig::new("/j");
        cfg.disk = Arc::new(d.clone());
        cfg.segment_bytes = size;
        let (j, _s) = Journal::open_stepped(cfg).unwrap();
        drop(j);
        let len = d.read(&segment_path(Path::new("/j"), 1)).unwrap().len() as u64;
        len
    };
    // Exactly four segments' worth free: pre-filled; one byte less: a plain file.
    assert_eq!(open(4 * size), size);
    assert_eq!(open(4 * size - 1), START as u64); // just its header
    drop(disk);
}

#[test]
fn a_failed_write_keeps_the_segment_prefilled_and_the_journal_healthy() {
    let disk = logbook_disk::sim::SimDisk::new(7);
    let (j, mut stepper) = sim_journal(&disk, SyncMode::Strict);
    let mut a = submit(&j, 1);
    stepper.step();
    assert_eq!(a.try_result().unwrap().unwrap(), 1);
    disk.fail_next_writes(1);
    let mut b = submit(&j, 2);
    stepper.step();
    let e = b.try_result().unwrap().unwrap_err().to_string();
    assert!(e.contains("append") && !e.contains("may survive"), "{e}");
    assert!(j.is_healthy(), "a failed write is undone, not poisoning");
    let seg = segment_path(Path::new("/j"), 1);
    assert_eq!(disk.read(&seg).unwrap().len(), 4096, "still pre-filled");
    let mut c = submit(&j, 3);
    stepper.step();
    assert_eq!(
        c.try_result().unwrap().unwrap(),
        2,
        "the sequence was not used up"
    );
    drop(j);
    disk.crash();
    assert_eq!(scan_seqs(&disk), [1, 2]);
}

#[test]
fn a_segment_ending_in_a_few_zero_bytes_is_read_across() {
    // A plain (not pre-filled) segment whose torn header was zeroed on open, then sealed
    // by a roll: readers meet fewer zero bytes than a header at its end.
    let disk = logbook_disk::sim::SimDisk::new(8);
    disk.set_capacity(10_000); // too little room to pre-fill 4 KiB segments
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.segment_bytes = 4096;
    let (j, mut stepper) = Journal::open_stepped(cfg.clone()).unwrap();
    for i in 0..3 {
        let _ = submit(&j, i);
        stepper.step();
    }
    drop(j);
    stepper.close();
    let seg = segment_path(Path::new("/j"), 1);
    let f = disk.open_write(&seg).unwrap();
    let end = f.len().unwrap();
    f.write_at(&[0xAB; 10], end).unwrap(); // a torn header
    f.sync_all().unwrap();
    let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
    assert_eq!(
        disk.read(&seg).unwrap().len() as u64,
        end + 10,
        "zeroed, not cut"
    );
    // Big enough to roll at once.
    let _ = j
        .submit(Kind::Record, Box::new(|_| vec![b'y'; 4000]))
        .unwrap();
    stepper.step();
    assert_eq!(
        list_segments(&disk, Path::new("/j")).unwrap().len(),
        2,
        "rolled"
    );
    let all = read_all(&j, 1);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

/// A disk that passes everything to `inner` except what a test changes: reads of one
/// file fail with a given error (a segment collected between listing and opening, or one
/// that cannot be read), collections wait inside their rename until released (and say
/// when one is waiting), or every `set_len` of the files it opens is noted.
#[derive(Debug)]
struct Wrapped {
    inner: Arc<dyn Disk>,
    fail_open: Option<(PathBuf, io::ErrorKind)>,
    held: Option<(Held, std::sync::mpsc::Sender<()>)>,
    cuts: Option<Arc<Mutex<Vec<u64>>>>,
    /// While true, removing a collected segment fails (and turns it false).
    fail_remove_once: Option<Arc<AtomicBool>>,
}

type Held = Arc<(Mutex<bool>, std::sync::Condvar)>;

impl Wrapped {
    fn new(inner: Arc<dyn Disk>) -> Self {
        Wrapped {
            inner,
            fail_open: None,
            held: None,
            cuts: None,
            fail_remove_once: None,
        }
    }
}

struct NotedFile {
    inner: Arc<dyn DiskFile>,
    cuts: Arc<Mutex<Vec<u64>>>,
    /// The file's length at each `sync_data`.
    synced_at: Arc<Mutex<Vec<u64>>>,
}

impl DiskFile for NotedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.cuts.lock().unwrap().push(len);
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.synced_at.lock().unwrap().push(self.inner.len()?);
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
}

impl Disk for Wrapped {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.inner.create_dir_all(p)
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        self.inner.list(d)
    }
    fn open_read(&self, p: &Path) -> io::Result<Arc<dyn DiskFile>> {
        if let Some((path, kind)) = &self.fail_open {
            if p == path {
                return Err(io::Error::new(*kind, "injected"));
            }
        }
        self.inner.open_read(p)
    }
    fn open_write(&self, p: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let f = self.inner.open_write(p)?;
        Ok(match &self.cuts {
            Some(cuts) => Arc::new(NotedFile {
                inner: f,
                cuts: cuts.clone(),
                synced_at: Arc::default(),
            }),
            None => f,
        })
    }
    fn create(&self, p: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.inner.create(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        // A collection moving a segment aside (under the collection's lock).
        let collecting = a.extension().is_some_and(|e| e == "seg")
            && b.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TRASH_PREFIX));
        if let (true, Some((held, waiting))) = (collecting, &self.held) {
            let _ = waiting.send(());
            let (m, cv) = &**held;
            let mut held = m.lock().unwrap();
            while *held {
                held = cv.wait(held).unwrap();
            }
        }
        self.inner.rename(a, b)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        let trash = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TRASH_PREFIX));
        if let (true, Some(fail)) = (trash, &self.fail_remove_once) {
            if fail.swap(false, Ordering::SeqCst) {
                return Err(io::Error::other("injected"));
            }
        }
        self.inner.remove_file(p)
    }
    fn remove_dir_all(&self, p: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        self.inner.sync_dir(d)
    }
    fn free_bytes(&self, p: &Path) -> io::Result<u64> {
        self.inner.free_bytes(p)
    }
    fn exists(&self, p: &Path) -> bool {
        self.inner.exists(p)
    }
    fn is_dir(&self, p: &Path) -> bool {
        self.inner.is_dir(p)
    }
    fn try_lock(&self, p: &Path) -> io::Result<Option<logbook_disk::LockGuard>> {
        self.inner.try_lock(p)
    }
}

#[test]
fn a_scan_skips_a_segment_collected_meanwhile_and_fails_on_one_it_cannot_read() {
    let disk = logbook_disk::sim::SimDisk::new(9);
    let mut cfg = JournalConfig::new("/j");
    cfg.disk = Arc::new(disk.clone());
    cfg.segment_bytes = 256;
    let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
    for i in 0..20 {
        let _ = submit(&j, i);
        stepper.step();
    }
    let segs = list_segments(&disk, Path::new("/j")).unwrap();
    assert!(segs.len() >= 3);
    let gone = segs[1].clone();
    let skip = Wrapped {
        fail_open: Some((gone.1.clone(), io::ErrorKind::NotFound)),
        ..Wrapped::new(Arc::new(disk.clone()))
    };
    let mut seen = Vec::new();
    scan_on(&skip, Path::new("/j"), &Keyring::default(), 1, |e| {
        seen.push(e.seq)
    })
    .unwrap();
    assert!(!seen.is_empty() && !seen.contains(&gone.0), "{seen:?}");
    let broken = Wrapped {
        fail_open: Some((gone.1, io::ErrorKind::PermissionDenied)),
        ..Wrapped::new(Arc::new(disk.clone()))
    };
    assert!(scan_on(&broken, Path::new("/j"), &Keyring::default(), 1, |_| {}).is_err());
}

fn master(b: u8) -> logbook_seal::MasterKey {
    logbook_seal::MasterKey::from_bytes(&[b; 32]).unwrap()
}

fn keyed(dir: &std::path::Path, active: Option<u8>, old: &[u8]) -> JournalConfig {
    let mut c = small(dir);
    c.keys = Arc::new(Keyring::new(
        active.map(master),
        old.iter().map(|&b| master(b)).collect(),
    ));
    c
}

#[test]
fn every_entry_keeps_its_kind_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    let kinds = [
        Kind::Record,
        Kind::TrailEvent,
        Kind::StreamStarted,
        Kind::StreamProgress,
        Kind::Unknown(77),
    ];
    rt.block_on(async {
        for k in kinds {
            j.append(k, Box::new(|_| b"{}".to_vec())).await.unwrap();
        }
    });
    let got: Vec<(Kind, u16)> = read_all(&j, 1)
        .iter()
        .map(|e| (e.kind, e.version))
        .collect();
    assert_eq!(got, kinds.map(|k| (k, 1)));
    for c in 0..10 {
        assert_eq!(Kind::from_code(c).code(), c);
    }
}

#[test]
fn an_encrypted_journal_keeps_no_plaintext_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = keyed(dir.path(), Some(1), &[]);
    cfg.segment_bytes = 800;
    {
        let j = Journal::open(cfg.clone()).unwrap();
        rt.block_on(async {
            for i in 0..40u64 {
                let p = format!("{{\"secret\":\"prompt number {i}\"}}").into_bytes();
                j.append(Kind::Record, Box::new(move |_| p)).await.unwrap();
            }
        });
        assert!(list_segments(&RealDisk, dir.path()).unwrap().len() > 2);
    }
    for (_, p) in list_segments(&RealDisk, dir.path()).unwrap() {
        let b = fs::read(&p).unwrap();
        assert!(!b.windows(6).any(|w| w == b"secret"), "plaintext in {p:?}");
        assert!(!b.windows(6).any(|w| w == b"prompt"));
        let id = master(1).id().to_string();
        assert!(
            b.windows(id.len()).any(|w| w == id.as_bytes()),
            "key id stored"
        );
    }
    let j = Journal::open(cfg.clone()).unwrap();
    let all = read_all(&j, 1);
    assert_eq!(all.len(), 40);
    assert_eq!(all[7].payload, b"{\"secret\":\"prompt number 7\"}");
    let mut n = 0;
    scan(dir.path(), &cfg.keys, 1, |_| n += 1).unwrap();
    assert_eq!(n, 40);
    drop(j);
    // No key, or another key: the journal refuses to open and names the missing key.
    for c in [small(dir.path()), keyed(dir.path(), Some(2), &[])] {
        let e = Journal::open(c).unwrap_err().to_string();
        assert!(e.contains(master(1).id()), "{e}");
        assert!(e.contains("configured"), "{e}");
    }
    let e = scan(dir.path(), &Keyring::default(), 1, |_| {}).unwrap_err();
    assert!(e.to_string().contains(master(1).id()), "{e}");
}

#[test]
fn rotating_or_switching_off_the_key_starts_a_new_segment_and_rewrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let one = keyed(dir.path(), Some(1), &[]);
    {
        let j = Journal::open(one).unwrap();
        append_n(&j, &rt, 0, 3);
    }
    let before = fs::read(segment_path(dir.path(), 1)).unwrap();
    // Rotated: key 2 active, key 1 kept for reading.
    let two = keyed(dir.path(), Some(2), &[1]);
    {
        let j = Journal::open(two.clone()).unwrap();
        append_n(&j, &rt, 3, 3);
        assert_eq!(read_all(&j, 1).len(), 6);
    }
    assert_eq!(
        fs::read(segment_path(dir.path(), 1)).unwrap(),
        before,
        "old data untouched"
    );
    let h = read_segment_header(&RealDisk, &segment_path(dir.path(), 4)).unwrap();
    assert!(matches!(h, SegmentHeader::V2(Some(ref w)) if w.master_key_id == master(2).id()));
    // Encryption off, old keys kept for reading: plain segments from here on.
    let off = keyed(dir.path(), None, &[1, 2]);
    {
        let j = Journal::open(off.clone()).unwrap();
        append_n(&j, &rt, 6, 2);
        let all = read_all(&j, 1);
        assert_eq!(all.len(), 8);
        assert_eq!(all[7].payload, payload(7));
    }
    let h = read_segment_header(&RealDisk, &segment_path(dir.path(), 7)).unwrap();
    assert_eq!(h, SegmentHeader::V2(None));
    // Without key 1 the oldest segment cannot be read: refused, naming it.
    let e = Journal::open(keyed(dir.path(), None, &[2])).unwrap_err();
    assert!(e.to_string().contains(master(1).id()), "{e}");
}

#[test]
fn an_altered_encrypted_entry_is_reported_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let cfg = keyed(dir.path(), Some(1), &[]);
    {
        let j = Journal::open(cfg.clone()).unwrap();
        append_n(&j, &rt, 0, 3);
    }
    let seg = segment_path(dir.path(), 1);
    let mut b = fs::read(&seg).unwrap();
    // Flip a ciphertext byte of the second entry and fix its CRC, as an attacker would.
    let first_len = HEADER + payload(0).len() + logbook_seal::OVERHEAD;
    let at = START + first_len;
    let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    b[at + HEADER + 20] ^= 1;
    let c = crc32c::crc32c_append(
        crc32c::crc32c(&b[at + 8..at + HEADER]),
        &b[at + HEADER..at + HEADER + len],
    );
    b[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
    fs::write(&seg, &b).unwrap();
    let e = Journal::open(cfg.clone()).unwrap_err().to_string();
    assert!(e.contains("authentication"), "{e}");
    // Nothing was cut: the bytes are as the attacker left them.
    assert_eq!(fs::read(&seg).unwrap(), b);
}

/// A data folder written before entries had kinds (format 1), kept in
/// `tests/fixtures/data-v1` (see `make_data_v1.py` there).
#[test]
fn a_format_1_journal_still_opens_and_goes_on_in_format_2() {
    // The package folder at run time (cargo and nextest set it), not where the test
    // binary was compiled: a target dir shared between clones keeps binaries built
    // elsewhere.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let src = Path::new(&manifest).join("../../tests/fixtures/data-v1/journal");
    let dir = tempfile::tempdir().unwrap();
    for sub in ["segments", "cursors"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for f in fs::read_dir(src.join(sub)).unwrap() {
            let f = f.unwrap();
            fs::copy(f.path(), dir.path().join(sub).join(f.file_name())).unwrap();
        }
    }
    let rt = rt();
    let cfg = keyed(dir.path(), Some(3), &[]);
    let j = Journal::open(cfg.clone()).unwrap();
    assert_eq!(*j.committed().borrow(), 10);
    let kinds: Vec<Kind> = read_all(&j, 1).iter().map(|e| e.kind).collect();
    use Kind::*;
    assert_eq!(
        kinds,
        [
            Record,
            Record,
            Record,
            Record,
            Record,
            Record,
            StreamStarted,
            Record,
            TrailEvent
        ]
    );
    append_n(&j, &rt, 0, 2);
    let all = read_all(&j, 1);
    assert_eq!(all.len(), 11);
    assert_eq!((all[9].seq, all[9].kind), (10, Record));
    drop(j);
    // The old segment was sealed as it was; the new entries are in an encrypted one.
    assert_eq!(
        read_segment_header(&RealDisk, &segment_path(dir.path(), 7)).unwrap(),
        SegmentHeader::V1
    );
    assert!(matches!(
        read_segment_header(&RealDisk, &segment_path(dir.path(), 10)).unwrap(),
        SegmentHeader::V2(Some(_))
    ));
    let mut seqs = Vec::new();
    scan(dir.path(), &cfg.keys, 1, |e| seqs.push(e.seq)).unwrap();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
}

#[test]
fn records_committed_counts_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let j = Journal::open(small(dir.path())).unwrap();
    assert_eq!(j.records_committed(), 0);
    rt.block_on(async {
        let r = j
            .append(Kind::Record, Box::new(|_| b"{}".to_vec()))
            .await
            .unwrap();
        assert_eq!(j.records_committed(), r + 1);
        // A read's own audit event (or a stream's progress) is not waited for.
        j.append(Kind::TrailEvent, Box::new(|_| b"{}".to_vec()))
            .await
            .unwrap();
        j.append(Kind::StreamProgress, Box::new(|_| b"{}".to_vec()))
            .await
            .unwrap();
        assert_eq!(j.records_committed(), r + 1);
        assert_eq!(*j.committed().borrow(), r + 3);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Hostile segment bytes: whatever a file holds, reading its header and its frames
    /// never panics, and a header that is not exactly one of ours is refused with a reason.
    #[test]
    fn any_segment_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                                magic in any::<bool>(), keyed in any::<bool>()) {
        let mut b = bytes;
        if magic && b.len() >= 8 {
            b[..8].copy_from_slice(&format::MAGIC);
        }
        let keys = if keyed { Keyring::new(Some(master(9)), vec![]) } else { Keyring::default() };
        match format::parse_segment_header(&b) {
            Ok(h) => {
                // Whatever it says, asking for its key and reading frames after it is safe.
                if let Ok(fmt) = format::segment_format(&h, &keys) {
                    let mut r = std::io::Cursor::new(&b[(fmt.data_start() as usize).min(b.len())..]);
                    for _ in 0..8 {
                        match format::read_frame(&mut r, &fmt, None, MAX_PAYLOAD).unwrap() {
                            format::Frame::Entry(..) => {}
                            _ => break,
                        }
                    }
                }
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    /// A real header with any one byte changed is refused (checksum) or, if the change is
    /// in the magic, read as a format-1 segment whose frames then fail their checks.
    #[test]
    fn a_changed_header_byte_is_never_trusted(at in 0usize..128, flip in 1u8..=255) {
        let ring = Keyring::new(Some(master(3)), vec![]);
        let (_, w) = ring.new_data_key().unwrap().unwrap();
        let mut h = format::encode_segment_header(Some(&w)).to_vec();
        h[at] ^= flip;
        match format::parse_segment_header(&h) {
            Ok(format::SegmentHeader::V1) => prop_assert!(at < 8),
            Ok(format::SegmentHeader::Blank) => prop_assert!(at < 8),
            Ok(other) => prop_assert!(false, "accepted a changed header: {:?}", other),
            Err(reason) => prop_assert!(reason.contains("checksum") || reason.contains("format"), "{}", reason),
        }
    }
}

/// A first segment whose header was torn while it was being created: with nothing but
/// zeros after the header's place (a pre-filled segment, longer than one 64 KiB read), it
/// is started again; with one byte of data anywhere after it, that is damage and the
/// journal refuses to open rather than overwrite it.
#[test]
fn a_torn_header_is_started_again_only_when_nothing_follows_it() {
    for data_at in [None, Some(150 * 1024)] {
        let disk = logbook_disk::sim::SimDisk::new(11);
        let dir = Path::new("/j");
        disk.create_dir_all(&segments_dir(dir)).unwrap();
        let seg = segment_path(dir, 1);
        let f = disk.create(&seg).unwrap();
        f.write_at(&vec![0u8; 200 * 1024], 0).unwrap();
        // The torn header: the first 20 bytes of a real one (its magic, then zeros where
        // the rest and its checksum belong).
        f.write_at(&format::encode_segment_header(None)[..20], 0)
            .unwrap();
        if let Some(at) = data_at {
            f.write_at(b"x", at).unwrap();
        }
        f.sync_all().unwrap();
        disk.sync_dir(&segments_dir(dir)).unwrap();
        let mut cfg = JournalConfig::new(dir);
        cfg.disk = Arc::new(disk.clone());
        match (data_at, Journal::open_stepped(cfg)) {
            (None, Ok((j, mut stepper))) => {
                let mut a = submit(&j, 1);
                stepper.step();
                assert_eq!(a.try_result().unwrap().unwrap(), 1, "started again");
            }
            (Some(_), Err(_)) => {}
            (None, Err(e)) => panic!("a torn header with only zeros after it: {e}"),
            (Some(at), Ok(_)) => panic!("data at {at} after a torn header was overwritten"),
        }
    }
}

/// `Journal::segments` (the journal's disk budget reads it): each segment's first sequence
/// and size, oldest first; one collected meanwhile is left out; one that cannot be opened
/// is an error, not a smaller journal.
#[test]
fn segments_lists_every_segment_with_its_first_sequence_and_size() {
    let run = |wrap: Option<(u64, io::ErrorKind)>| {
        let disk = logbook_disk::sim::SimDisk::new(9);
        let mut cfg = JournalConfig::new("/j");
        cfg.disk = match wrap {
            None => Arc::new(disk.clone()),
            Some((first, kind)) => Arc::new(Wrapped {
                fail_open: Some((segment_path(Path::new("/j"), first), kind)),
                ..Wrapped::new(Arc::new(disk.clone()))
            }),
        };
        cfg.segment_bytes = 256;
        let (j, mut stepper) = Journal::open_stepped(cfg).unwrap();
        for i in 0..20 {
            let _ = submit(&j, i);
            stepper.step();
        }
        (disk, j, stepper)
    };
    let (disk, j, _stepper) = run(None);
    let segs = j.segments().unwrap();
    let listed = list_segments(&disk, Path::new("/j")).unwrap();
    assert!(segs.len() >= 3, "{segs:?}");
    assert_eq!(
        segs.iter().map(|s| s.0).collect::<Vec<_>>(),
        listed.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    assert_eq!(segs[0].0, 1);
    for ((_, len), (_, path)) in segs.iter().zip(&listed) {
        assert_eq!(*len, disk.open_read(path).unwrap().len().unwrap());
        assert!(*len > 0);
    }
    let second = segs[1].0;
    // The same schedule, with the second segment gone when it is opened: left out.
    let (_d, j, _s) = run(Some((second, io::ErrorKind::NotFound)));
    let without = j.segments().unwrap();
    assert_eq!(without.len(), segs.len() - 1);
    assert!(without.iter().all(|s| s.0 != second));
    // ... and unreadable: an error.
    let (_d, j, _s) = run(Some((second, io::ErrorKind::PermissionDenied)));
    assert!(j.segments().is_err());
}

#[test]
fn a_segment_roll_does_not_wait_for_a_garbage_collection_in_progress() {
    // Collections run on delivery tasks and hold their lock across deletes and a folder
    // fsync; the writer's roll used to take the same lock, so every call waited behind a
    // slow delete. Hold a collection inside its rename (under its lock), then append past a roll.
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
    let (tx, waiting) = std::sync::mpsc::channel();
    let mut cfg = small(dir.path());
    cfg.disk = Arc::new(Wrapped {
        held: Some((held.clone(), tx)),
        ..Wrapped::new(RealDisk::shared())
    });
    let j = Journal::open(cfg).unwrap();
    let rt = rt();
    append_n(&j, &rt, 0, 3000); // several 64 KiB segments
    let rolls = j.stats().rolls.load(Ordering::Relaxed);
    assert!(rolls >= 2, "{rolls}");
    let gc = {
        let j = j.clone();
        std::thread::spawn(move || j.collect_garbage(u64::MAX))
    };
    waiting
        .recv_timeout(Duration::from_secs(10))
        .expect("the collection reached a delete");
    // Enough for at least one more roll, each append bounded in time.
    let more = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..1500u64 {
            let a = j.append(Kind::Record, Box::new(move |_| payload(i)));
            match tokio::time::timeout(Duration::from_secs(10), a).await {
                Ok(r) => out.push(r.unwrap()),
                Err(_) => return Err(i),
            }
        }
        Ok(out)
    });
    let (m, cv) = &*held;
    *m.lock().unwrap() = false;
    cv.notify_all();
    let deleted = gc.join().unwrap().unwrap();
    let more = more.unwrap_or_else(|i| panic!("append {i} waited for the collection"));
    assert_eq!(more.len(), 1500);
    assert!(j.stats().rolls.load(Ordering::Relaxed) > rolls);
    assert!(deleted >= 1);
    // Nothing acknowledged was lost: everything after the collected segments reads back.
    let first = j.first_available().unwrap();
    let last = *more.last().unwrap();
    let entries = read_all(&j, first);
    assert_eq!(entries.last().map(|e| e.seq), Some(last));
}

#[test]
fn a_collected_segment_is_cut_a_mib_at_a_time_before_it_is_removed() {
    // One discard per MiB rather than one of the whole segment (file systems mounted with
    // `discard` make every fdatasync behind it wait for it).
    let dir = tempfile::tempdir().unwrap();
    let cuts = Arc::new(Mutex::new(Vec::new()));
    let disk = Wrapped {
        cuts: Some(cuts.clone()),
        ..Wrapped::new(RealDisk::shared())
    };
    let path = dir.path().join("old.seg");
    let f = disk.create(&path).unwrap();
    f.write_at(&vec![7u8; 3 * 1024 * 1024 + 512 * 1024], 0)
        .unwrap();
    drop(f);
    shrink_and_remove(&disk, &path).unwrap();
    let mib = 1024 * 1024;
    assert_eq!(
        *cuts.lock().unwrap(),
        vec![2 * mib + mib / 2, mib + mib / 2, mib / 2]
    );
    assert!(!path.exists());
    // Removed meanwhile by another collection (retrying leftovers): not an error.
    shrink_and_remove(&disk, &path).unwrap();
}

#[test]
fn collected_segments_leave_nothing_behind_and_a_crash_mid_collection_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, j) = sixty_in_small_segments(dir.path(), None);
    let before = list_segments(&RealDisk, dir.path()).unwrap().len();
    let n = j.collect_garbage(40).unwrap();
    assert!(n > 0);
    assert_eq!(trash_in(dir.path()), Vec::<String>::new());
    assert_eq!(
        list_segments(&RealDisk, dir.path()).unwrap().len(),
        before - n
    );
    // A segment moved aside but not yet removed when the process died: gone at the next
    // open, and not read as a segment meanwhile.
    drop(j);
    let sdir = dir.path().join("segments");
    fs::write(sdir.join(".trash-00000000000000000001.tmp"), [1u8; 100]).unwrap();
    assert_eq!(
        list_segments(&RealDisk, dir.path()).unwrap().len(),
        before - n
    );
    let j = reopen(&cfg);
    assert_eq!(trash_in(dir.path()), Vec::<String>::new());
    assert_eq!(read_all(&j, 40).len(), 21);
}

#[test]
fn a_collected_segment_that_could_not_be_removed_goes_at_the_next_collection() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let disk = Wrapped {
        fail_remove_once: Some(fail.clone()),
        ..Wrapped::new(RealDisk::shared())
    };
    let (_, j) = sixty_in_small_segments(dir.path(), Some(Arc::new(disk)));
    assert!(j.collect_garbage(40).is_err());
    assert!(!fail.load(Ordering::SeqCst), "a removal was tried");
    assert!(
        !trash_in(dir.path()).is_empty(),
        "moved aside, not yet removed"
    );
    // Out of the listing meanwhile: readers never see it.
    assert_eq!(read_all(&j, 40).len(), 21);
    assert_eq!(j.collect_garbage(40).unwrap(), 0, "nothing new to collect");
    assert_eq!(
        trash_in(dir.path()),
        Vec::<String>::new(),
        "the leftovers went at the next collection"
    );
}

#[test]
fn a_spare_is_filled_a_quarter_mib_at_a_time_each_piece_synced() {
    // A strict commit's fdatasync waits behind whatever the spare has in flight: one
    // piece, not the whole segment.
    let dir = tempfile::tempdir().unwrap();
    let synced_at = Arc::new(Mutex::new(Vec::new()));
    let f = NotedFile {
        inner: RealDisk.create(&dir.path().join("spare")).unwrap(),
        cuts: Arc::default(),
        synced_at: synced_at.clone(),
    };
    let k = 1024;
    zero_fill_paced(&f, 1024 * k + 100).unwrap();
    assert_eq!(
        *synced_at.lock().unwrap(),
        vec![256 * k, 512 * k, 768 * k, 1024 * k, 1024 * k + 100]
    );
    assert_eq!(f.len().unwrap(), 1024 * k + 100);
}
