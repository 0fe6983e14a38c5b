//! The payload limit as the server is built with it (unit tests use a small one): a
//! 25 MB Bedrock body, JSON-escaped, must fit, and come back byte for byte, also after a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use logbook_journal::{Journal, JournalConfig, Kind, MAX_PAYLOAD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_record_fits_and_reads_back_whole() {
    assert_eq!(MAX_PAYLOAD, 256 << 20, "the documented limit");
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path().join("journal"));
    // 30 MiB: a 25 MB body with JSON escaping's overhead, past any buffer or segment
    // size the journal picks by default.
    let big: Vec<u8> = (0..30u32 << 20).map(|i| b'a' + (i % 23) as u8).collect();
    let seq = {
        let j = Journal::open(cfg.clone()).unwrap();
        let b = big.clone();
        let seq = j.append(Kind::Record, Box::new(move |_| b)).await.unwrap();
        let mut r = j.reader(seq);
        let e = r.next_entry(seq + 1).unwrap().unwrap();
        assert_eq!(e.payload.len(), big.len());
        assert!(e.payload == big, "read back byte for byte");
        seq
    };
    let j = Journal::open(cfg).unwrap();
    let mut r = j.reader(seq);
    let e = r.next_entry(seq + 1).unwrap().unwrap();
    assert!(e.payload == big, "and after a restart");
}
