//! Deterministic simulation of the journal on a disk that lies (`logbook_disk::sim`).
//!
//! Each seed drives one schedule of appends (group commits), sink reads with durable
//! cursors, garbage collection, injected write/fsync/metadata failures, crashes (power
//! loss: unsynced bytes dropped, last write torn, unsynced renames lost) and clean
//! restarts — all on this thread, every random choice from the seed, so a failing seed
//! replays exactly: `SIM_SEED=<n> cargo test -p logbook-journal --test simulation`.
//!
//! After every recovery it checks the promises of ARCHITECTURE.md:
//! * every acknowledged entry is in the journal, once, with its payload;
//! * sequence numbers have no gaps (from the oldest segment kept to the end);
//! * no payload appears twice, and an entry that was never acknowledged appears only if
//!   it was submitted (a failed call's record may survive; it is never invented);
//! * garbage collection never removed an entry a sink's durable cursor still needs.

#![allow(clippy::panic)]

use logbook_disk::sim::{Faults, SimDisk};
use logbook_disk::Disk;
use logbook_journal::{scan_on, Acknowledgement, Journal, JournalConfig, Keyring, Kind, Stepper};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SINKS: [&str; 2] = ["archive", "store"];

struct Sim {
    seed: u64,
    disk: SimDisk,
    cfg: JournalConfig,
    journal: Option<(Journal, Stepper)>,
    /// seq -> payload id, for every acknowledged append.
    acked: BTreeMap<u64, u64>,
    /// Appends refused with an error that says nothing of theirs was kept (anything but a
    /// failed fsync, after which written bytes may survive): they must never appear.
    refused: BTreeSet<u64>,
    submitted: BTreeSet<u64>,
    next_id: u64,
    /// The cursor each sink last stored successfully.
    cursors: BTreeMap<&'static str, u64>,
    faults: Faults,
    log: Vec<String>,
    stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    acked: u64,
    failed: u64,
    crashes: u64,
    restarts: u64,
    collected: u64,
    delivered: u64,
}

fn payload(id: u64, seq: u64) -> Vec<u8> {
    format!("{id}@{seq}").into_bytes()
}

fn parse(p: &[u8]) -> (u64, u64) {
    let s = String::from_utf8_lossy(p);
    let (a, b) = s.split_once('@').unwrap_or(("x", "x"));
    (a.parse().unwrap_or(u64::MAX), b.parse().unwrap_or(u64::MAX))
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let disk = SimDisk::new(seed);
        let mut cfg = JournalConfig::new("/data/journal");
        cfg.disk = std::sync::Arc::new(disk.clone());
        cfg.segment_bytes = 128 + disk.random(2048);
        cfg.max_batch = 1 + disk.random(12) as usize;
        // Half the schedules run encrypted (the frames are longer; the promises the same).
        if seed % 2 == 1 {
            let key = logbook_seal::MasterKey::from_bytes(&[seed as u8; 32]).ok();
            cfg.keys = std::sync::Arc::new(Keyring::new(key, vec![]));
        }
        let faults = match disk.random(4) {
            0 => Faults::default(),
            1 => Faults {
                write_ppm: 20_000,
                sync_ppm: 0,
                read_ppm: 0,
                meta_ppm: 0,
            },
            2 => Faults {
                write_ppm: 10_000,
                sync_ppm: 10_000,
                meta_ppm: 10_000,
                read_ppm: 0,
            },
            _ => Faults {
                write_ppm: 0,
                sync_ppm: 20_000,
                read_ppm: 0,
                meta_ppm: 20_000,
            },
        };
        // One schedule in seven also fails reads (EIO). Decided by the seed, not drawn, so
        // every other seed (the regression seeds among them) replays as before.
        let faults = if seed % 7 == 3 && faults != Faults::default() {
            Faults {
                read_ppm: 2_000,
                ..faults
            }
        } else {
            faults
        };
        Sim {
            seed,
            disk,
            cfg,
            journal: None,
            acked: BTreeMap::new(),
            refused: BTreeSet::new(),
            submitted: BTreeSet::new(),
            next_id: 1,
            cursors: SINKS.iter().map(|s| (*s, 1)).collect(),
            faults,
            log: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(25).collect();
        panic!(
            "seed {}: {what}\nlast steps (newest first): {tail:#?}\nreplay: SIM_SEED={} cargo test -p logbook-journal --test simulation",
            self.seed, self.seed
        );
    }

    /// Open the journal; a restart that fails (an injected error) is retried on a disk
    /// that behaves, as an operator would after the disk recovers.
    fn open(&mut self) {
        self.disk.set_faults(self.faults);
        for attempt in 0..2 {
            match Journal::open_stepped(self.cfg.clone()) {
                Ok(j) => {
                    self.journal = Some(j);
                    self.disk.set_faults(self.faults);
                    return;
                }
                Err(e) => {
                    self.log.push(format!("open failed ({attempt}): {e}"));
                    self.disk.set_faults(Faults::default());
                }
            }
        }
        self.fail("the journal does not open on a disk that behaves".into());
    }

    fn append(&mut self, k: u64) {
        let Some((j, stepper)) = self.journal.as_mut() else {
            return;
        };
        let mut acks: Vec<(u64, Acknowledgement)> = Vec::new();
        for _ in 0..k {
            let id = self.next_id;
            self.next_id += 1;
            self.submitted.insert(id);
            match j.submit(Kind::Record, Box::new(move |seq| payload(id, seq))) {
                Ok(a) => acks.push((id, a)),
                Err(_) => self.stats.failed += 1,
            }
        }
        stepper.step();
        let mut got = Vec::new();
        for (id, mut a) in acks {
            match a.try_result() {
                Some(Ok(seq)) => got.push((id, seq)),
                Some(Err(e)) => {
                    self.stats.failed += 1;
                    let e = e.to_string();
                    self.log.push(format!("{id} refused: {e}"));
                    if !e.contains("fdatasync") && !e.contains("may survive") {
                        self.refused.insert(id);
                    }
                }
                None => self.fail(format!("append {id} undecided after a step")),
            }
        }
        self.log.push(format!("append {k}: acked {got:?}"));
        for (id, seq) in got {
            if let Some(old) = self.acked.insert(seq, id) {
                self.fail(format!(
                    "sequence {seq} acknowledged twice ({old}, then {id})"
                ));
            }
            self.stats.acked += 1;
        }
    }

    /// A sink reads from its durable cursor to the committed end, checks what it reads,
    /// stores its cursor, and collects garbage at the minimum over all sinks.
    fn deliver(&mut self, sink: &'static str) {
        let Some((j, _)) = self.journal.as_ref() else {
            return;
        };
        let cursor = j.cursor(sink);
        let Ok(from) = cursor.load() else {
            self.log.push(format!("{sink}: cursor unreadable"));
            return;
        };
        let upto = *j.committed().borrow();
        let mut r = j.reader(from);
        let mut n = 0;
        loop {
            match r.next_entry(upto) {
                Ok(Some(e)) => {
                    let (id, tag) = parse(&e.payload);
                    if tag != e.seq {
                        self.fail(format!("entry {} carries the payload of {tag}", e.seq));
                    }
                    if let Some(want) = self.acked.get(&e.seq) {
                        if *want != id {
                            self.fail(format!("entry {} is {id}, acknowledged as {want}", e.seq));
                        }
                    }
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    // A read error is allowed only as an injected one (the sink retries):
                    // read again without faults, and a real one (damage a reader cannot
                    // pass, as bytes left after a segment's last entry) is still there.
                    if self.faults == Faults::default() {
                        self.fail(format!("{sink} cannot read from {from}: {e}"));
                    }
                    let at = r.position();
                    self.disk.set_faults(Faults::default());
                    let again = j.reader(at).next_entry(upto);
                    self.disk.set_faults(self.faults);
                    if let Err(real) = again {
                        self.fail(format!(
                            "{sink} cannot read {at}, even without faults: {real}"
                        ));
                    }
                    self.log.push(format!("{sink}: read error {e}"));
                    return;
                }
            }
        }
        let next = r.position();
        if cursor.store(next).is_ok() {
            self.cursors.insert(sink, next);
            self.stats.delivered += n;
            let min = self.cursors.values().copied().min().unwrap_or(1);
            if let Ok(k) = j.collect_garbage(min) {
                self.stats.collected += k as u64;
            }
            self.log
                .push(format!("{sink}: delivered {from}..{next}, gc at {min}"));
        } else {
            self.log
                .push(format!("{sink}: cursor store failed at {next}"));
        }
    }

    fn crash(&mut self) {
        self.journal = None; // the process dies: no final sync
        self.disk.crash();
        self.stats.crashes += 1;
        self.log.push("crash".into());
        self.open();
        self.check();
    }

    fn restart(&mut self) {
        if let Some((j, stepper)) = self.journal.take() {
            drop(j);
            stepper.close();
        }
        self.stats.restarts += 1;
        self.log.push("restart".into());
        self.open();
        self.check();
    }

    fn check(&mut self) {
        let disk = self.disk.clone();
        let Some((j, _)) = self.journal.as_ref() else {
            return;
        };
        let first = match j.first_available() {
            Ok(f) => f,
            Err(e) => self.fail(format!("first_available: {e}")),
        };
        let mut seen = Vec::new();
        disk.set_faults(Faults::default());
        let r = scan_on(&disk, Path::new("/data/journal"), &self.cfg.keys, 1, |e| {
            seen.push(e)
        });
        disk.set_faults(self.faults);
        if let Err(e) = r {
            self.fail(format!("scan: {e}"));
        }
        let committed = *j.committed().borrow();
        let mut ids = BTreeSet::new();
        for (i, e) in seen.iter().enumerate() {
            if e.seq != first + i as u64 {
                self.fail(format!(
                    "gap: entry {i} has sequence {}, expected {}",
                    e.seq,
                    first + i as u64
                ));
            }
            let (id, tag) = parse(&e.payload);
            if tag != e.seq || !self.submitted.contains(&id) {
                self.fail(format!(
                    "entry {} holds {:?}, never submitted as such",
                    e.seq,
                    String::from_utf8_lossy(&e.payload)
                ));
            }
            if !ids.insert(id) {
                self.fail(format!("payload {id} twice"));
            }
            if self.refused.contains(&id) {
                self.fail(format!(
                    "entry {} holds {id}, whose append was refused",
                    e.seq
                ));
            }
            if let Some(want) = self.acked.get(&e.seq) {
                if *want != id {
                    self.fail(format!("acknowledged entry {} is {id}, not {want}", e.seq));
                }
            }
        }
        let end = first + seen.len() as u64;
        if committed != end {
            self.fail(format!(
                "committed {committed} but the journal ends at {end}"
            ));
        }
        for (seq, id) in &self.acked {
            if *seq >= first && *seq >= end {
                let segs = disk
                    .list(Path::new("/data/journal/segments"))
                    .unwrap_or_default();
                self.fail(format!("acknowledged entry {seq} ({id}) lost; journal holds {first}..{end}, segments {segs:?}"));
            }
        }
        // Garbage collection never ran ahead of a sink's durable cursor.
        for sink in SINKS {
            // The check's own read may not fail (a failing read is the system's to handle).
            disk.set_faults(Faults::default());
            let durable = j.cursor(sink).load();
            disk.set_faults(self.faults);
            let durable = durable.unwrap_or_else(|e| self.fail(format!("{sink}'s cursor: {e}")));
            if durable < first {
                self.fail(format!(
                    "{sink} needs {durable} but segments before {first} were collected"
                ));
            }
            // Forget acknowledgements a crash may have rewound the cursor past (never below
            // what the sink stored successfully: that was fsync'd).
            if durable < *self.cursors.get(sink).unwrap_or(&1) {
                self.fail(format!(
                    "{sink}'s cursor went back from {} to {durable}",
                    self.cursors[sink]
                ));
            }
        }
        // Entries past the end of a recovered journal were never acknowledged; forget the
        // sequence numbers so they can be reused.
        self.acked.retain(|s, _| *s < end);
    }

    fn run(&mut self, steps: u32) -> Stats {
        self.open();
        for _ in 0..steps {
            let poisoned = self.journal.as_ref().is_some_and(|(j, _)| !j.is_healthy());
            match self.disk.random(100) {
                _ if poisoned => {
                    if self.disk.random(2) == 0 {
                        self.crash()
                    } else {
                        self.restart()
                    }
                }
                0..=54 => {
                    let k = 1 + self.disk.random(8);
                    self.append(k)
                }
                55..=64 => self.deliver(SINKS[0]),
                65..=74 => self.deliver(SINKS[1]),
                75..=84 => self.crash(),
                85..=89 => self.restart(),
                90..=94 => {
                    let quiet = self.disk.random(2) == 0;
                    self.disk.set_faults(if quiet {
                        Faults::default()
                    } else {
                        self.faults
                    });
                    self.log
                        .push(format!("faults {}", if quiet { "off" } else { "on" }));
                }
                _ => {
                    if let Some((_, s)) = self.journal.as_mut() {
                        s.sync_now();
                    }
                }
            }
        }
        self.crash();
        self.stats
    }
}

#[test]
fn simulation() {
    let t = std::time::Instant::now();
    let mut total = Stats::default();
    let seeds = logbook_disk::sim::seeds(1500);
    for &seed in &seeds {
        let s = Sim::new(seed).run(150);
        total.acked += s.acked;
        total.failed += s.failed;
        total.crashes += s.crashes;
        total.restarts += s.restarts;
        total.collected += s.collected;
        total.delivered += s.delivered;
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "journal simulation: {} schedules in {secs:.1} s ({:.0}/s): {total:?}",
        seeds.len(),
        seeds.len() as f64 / secs
    );
    // The schedules must exercise what they claim to.
    if seeds.len() >= 100 {
        assert!(total.crashes > seeds.len() as u64 * 5, "{total:?}");
        assert!(total.collected > seeds.len() as u64, "{total:?}");
        assert!(total.failed > 0 && total.acked > total.failed, "{total:?}");
    }
}

/// Same seed, same story: the simulation is deterministic.
#[test]
fn a_seed_replays_exactly() {
    let a = format!("{:?}", Sim::new(77).run(150));
    let b = format!("{:?}", Sim::new(77).run(150));
    assert_eq!(a, b);
}

/// Seeds that once failed, kept as regression cases (each found a real bug):
/// * 0: a restart after a failed fsync built on a tail that was only in the page cache
///   (now rewritten and synced on open);
/// * 21: a restart appended to a segment whose folder entry was never made durable (the
///   folder is now fsync'd on open);
/// * 6: a commit that failed mid-batch rewound the sequence counter, and the next payload,
///   built with the old number, was written out of order.
#[test]
fn regression_seeds() {
    for seed in [0, 6, 21] {
        Sim::new(seed).run(150);
    }
}
