//! The shared budget ledger against a real Redis (`redis-server` from Debian, installed
//! by scripts/test.sh), started here on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;
use std::time::Duration;

use logbook_cluster::ledger::{Ledger, LedgerError};

struct Redis {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Redis {
    let bin =
        std::env::var("LOGBOOK_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "the ledger tests need redis-server at {bin}: run `bash scripts/test.sh` once (it installs Debian's redis-server) or set LOGBOOK_REDIS_SERVER"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
        _dir: dir,
    }
}

const USD: i128 = 1_000_000_000_000;
const T: i64 = 1_800_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_pass_a_limit_and_charges_count_once() {
    let r = redis();
    let l = Arc::new(Ledger::connect(&r.url).await.unwrap());
    let acct = vec![("team-a".to_string(), 10 * USD, T)];
    // 40 calls at once, each reserving 1 USD of a 10 USD budget: exactly 10 are let in.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (l, acct) = (l.clone(), acct.clone());
        tasks.push(tokio::spawn(async move { l.admit(&acct, USD, T).await }));
    }
    let mut held = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => held.push(id),
            Err(LedgerError::Refused {
                index: 0, reserved, ..
            }) => assert!(reserved <= 10 * USD),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(held.len(), 10);
    assert_eq!(l.state("team-a", T).await.unwrap(), (0, 10 * USD));
    // Calls end: their reservations go, their costs are charged once each.
    let keys = vec![("team-a".to_string(), T)];
    for (i, id) in held.iter().enumerate() {
        l.release(&keys, id).await.unwrap();
        assert!(l
            .charge(&format!("req-{i}"), i as u64 + 1, &keys, USD / 2)
            .await
            .unwrap());
        assert!(
            !l.charge(&format!("req-{i}"), i as u64 + 1, &keys, USD / 2)
                .await
                .unwrap(),
            "a replay adds nothing"
        );
    }
    assert_eq!(l.state("team-a", T).await.unwrap(), (5 * USD, 0));
    // 5 USD left: a 6 USD worst case is refused, a 5 USD one admitted.
    assert!(matches!(
        l.admit(&acct, 6 * USD, T).await,
        Err(LedgerError::Refused { .. })
    ));
    let id = l.admit(&acct, 5 * USD, T).await.unwrap();
    // A replica that died with a reservation: it expires after its lifetime.
    let later = T + logbook_cluster::ledger::RESERVATION_TTL_MS + 1;
    assert!(matches!(
        l.admit(&acct, USD, T + 1).await,
        Err(LedgerError::Refused { .. })
    ));
    l.admit(&acct, USD, later).await.unwrap();
    let _ = id;
}

#[tokio::test]
async fn a_call_is_admitted_only_if_every_budget_it_matches_has_room() {
    let r = redis();
    let l = Ledger::connect(&r.url).await.unwrap();
    let both = vec![
        ("wide".to_string(), 100 * USD, T),
        ("narrow".to_string(), 2 * USD, T),
    ];
    l.admit(&both, USD, T).await.unwrap();
    l.admit(&both, USD, T).await.unwrap();
    match l.admit(&both, USD, T).await {
        Err(LedgerError::Refused {
            index: 1, reserved, ..
        }) => assert_eq!(reserved, 2 * USD),
        other => panic!("{other:?}"),
    }
    // The refused call reserved nothing in the budget that had room.
    assert_eq!(l.state("wide", T).await.unwrap(), (0, 2 * USD));
    // A spent budget refuses even a free call.
    let keys = vec![("narrow".to_string(), T)];
    l.charge("r1", 1, &keys, 2 * USD).await.unwrap();
    assert!(matches!(
        l.admit(&both[1..], 0, T).await,
        Err(LedgerError::Refused { .. })
    ));
    // Out of the ledger's range: said, not wrapped.
    assert!(matches!(
        l.admit(&[("x".to_string(), i128::from(i64::MAX) + 1, T)], USD, T)
            .await,
        Err(LedgerError::Range(_))
    ));
}

#[tokio::test]
async fn an_unreachable_ledger_is_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = match Ledger::connect(&format!("redis://:hunter2@127.0.0.1:{port}/")).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(e.contains(&format!("redis://127.0.0.1:{port}/")), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_charges_exactly_one_crosses_each_threshold() {
    let r = redis();
    let l = Arc::new(Ledger::connect(&r.url).await.unwrap());
    let keys = vec![("team-a".to_string(), T), ("all".to_string(), T)];
    // 50 % and 80 % of 10 USD in the first account; 100 % of 20 USD in the second.
    let thresholds = vec![vec![5 * USD, 8 * USD], vec![20 * USD]];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (l, keys, thresholds) = (l.clone(), keys.clone(), thresholds.clone());
        tasks.push(tokio::spawn(async move {
            l.charge_watching(
                &format!("req-{i}"),
                i as u64 + 1,
                &keys,
                USD / 2,
                &thresholds,
            )
            .await
            .unwrap()
        }));
    }
    let mut crossed = Vec::new();
    for t in tasks {
        let c = t.await.unwrap();
        assert!(c.added);
        crossed.extend(
            c.crossed
                .into_iter()
                .map(|x| (x.account, x.threshold, x.spent)),
        );
    }
    crossed.sort();
    // Each threshold once, at the first spend at or past it (charges of 0.5 USD).
    assert_eq!(
        crossed,
        vec![(0, 0, 5 * USD), (0, 1, 8 * USD), (1, 0, 20 * USD)]
    );
    // A replayed charge crosses nothing and adds nothing.
    let again = l
        .charge_watching("req-0", 1, &keys, USD / 2, &thresholds)
        .await
        .unwrap();
    assert!(!again.added && again.crossed.is_empty());
    assert_eq!(l.state("all", T).await.unwrap(), (20 * USD, 0));
}

/// A replica's binding for the rebuild tests: its spend is what `spend` holds, and the
/// epoch it keeps lands in `kept`.
fn replica(
    node: &str,
    known: Option<String>,
    spend: Arc<std::sync::Mutex<logbook_cluster::ledger::Spend>>,
    kept: Arc<std::sync::Mutex<Option<String>>>,
) -> logbook_cluster::ledger::Binding {
    logbook_cluster::ledger::Binding {
        node: node.into(),
        known_epoch: known,
        spend: Box::new(move || spend.lock().unwrap().clone()),
        keep: Box::new(move |e| {
            *kept.lock().unwrap() = Some(e.to_string());
            Ok(())
        }),
    }
}

async fn flushall(url: &str) {
    let c = redis::Client::open(url).unwrap();
    let mut c = c.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_that_lost_its_data_is_rebuilt_from_each_replicas_spend_exactly_once() {
    use logbook_cluster::ledger::Spend;
    let r = redis();
    let acct = vec![("team-a".to_string(), 10 * USD, T)];
    let keys = vec![("team-a".to_string(), T)];
    let spend = |through, amount| {
        Arc::new(std::sync::Mutex::new(Spend {
            through,
            accounts: vec![("team-a".to_string(), T, amount)],
        }))
    };
    // Two replicas, each charging its own records (sequences are per replica).
    let (sa, sb) = (spend(0, 0), spend(0, 0));
    let (ka, kb) = (Arc::default(), Arc::default());
    let a = Ledger::connect_as(&r.url, replica("a", None, sa.clone(), Arc::clone(&ka)))
        .await
        .unwrap();
    let b = Ledger::connect_as(&r.url, replica("b", None, sb.clone(), Arc::clone(&kb)))
        .await
        .unwrap();
    let epoch = a.epoch().unwrap();
    assert_eq!(b.epoch().as_deref(), Some(epoch.as_str()));
    assert_eq!(ka.lock().unwrap().as_deref(), Some(epoch.as_str()));
    for seq in 1..=3 {
        assert!(a.charge(&format!("a{seq}"), seq, &keys, USD).await.unwrap());
    }
    for seq in 1..=2 {
        assert!(b.charge(&format!("b{seq}"), seq, &keys, USD).await.unwrap());
    }
    *sa.lock().unwrap() = Spend {
        through: 3,
        accounts: vec![("team-a".to_string(), T, 3 * USD)],
    };
    *sb.lock().unwrap() = Spend {
        through: 2,
        accounts: vec![("team-a".to_string(), T, 2 * USD)],
    };
    assert_eq!(a.state("team-a", T).await.unwrap(), (5 * USD, 0));
    // Redis restarts empty. A's next admission notices before deciding: it rebuilds
    // with its own 3 USD, then admits against them, never against an empty ledger.
    flushall(&r.url).await;
    let id = a.admit(&acct, 6 * USD, T).await.unwrap();
    let new_epoch = a.epoch().unwrap();
    assert_ne!(new_epoch, epoch);
    assert_eq!(a.rebuilds(), 1);
    assert_eq!(a.state("team-a", T).await.unwrap(), (3 * USD, 6 * USD));
    a.release(&keys, &id).await.unwrap();
    // B, idle, notices at its check and adds its 2 USD once.
    b.check().await.unwrap();
    b.check().await.unwrap();
    assert_eq!(b.epoch().as_deref(), Some(new_epoch.as_str()));
    assert_eq!(kb.lock().unwrap().as_deref(), Some(new_epoch.as_str()));
    assert_eq!(a.state("team-a", T).await.unwrap(), (5 * USD, 0));
    // Charges replayed from the journals (at or below what each added) count nothing;
    // a new record counts once.
    for seq in 1..=3 {
        assert!(!a.charge(&format!("a{seq}"), seq, &keys, USD).await.unwrap());
    }
    assert!(!b.charge("b2", 2, &keys, USD).await.unwrap());
    assert!(b.charge("b3", 3, &keys, USD).await.unwrap());
    assert!(!b.charge("b3", 3, &keys, USD).await.unwrap());
    assert_eq!(a.state("team-a", T).await.unwrap(), (6 * USD, 0));
    // (B's budgets now hold b3 too.) A replica that was down through a second reset
    // rebuilds when it starts: its kept epoch is an old one. Started twice (a crash after
    // adding), it adds once.
    *sb.lock().unwrap() = Spend {
        through: 3,
        accounts: vec![("team-a".to_string(), T, 3 * USD)],
    };
    flushall(&r.url).await;
    a.check().await.unwrap();
    b.check().await.unwrap();
    let c_spend = spend(7, USD / 2);
    for _ in 0..2 {
        let c = Ledger::connect_as(
            &r.url,
            replica("c", Some(epoch.clone()), c_spend.clone(), Arc::default()),
        )
        .await
        .unwrap();
        assert_eq!(c.epoch(), a.epoch());
    }
    assert_eq!(
        a.state("team-a", T).await.unwrap(),
        (3 * USD + 3 * USD + USD / 2, 0)
    );
    // A replica that never knew an epoch (a new folder, or a ledger older than epochs)
    // takes the current one and adds nothing.
    let d = Ledger::connect_as(
        &r.url,
        replica("d", None, spend(9, 9 * USD), Arc::default()),
    )
    .await
    .unwrap();
    assert_eq!(d.epoch(), a.epoch());
    assert_eq!(d.rebuilds(), 0);
    assert_eq!(
        a.state("team-a", T).await.unwrap(),
        (3 * USD + 3 * USD + USD / 2, 0)
    );
}
