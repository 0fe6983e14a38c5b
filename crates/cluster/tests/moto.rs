//! Shared state on a real S3 implementation (moto's server from the test venv): its
//! `If-None-Match`/`If-Match` handling passes the probe, and racing writers lose nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use logbook_bucket::{Bucket, BucketSpec, S3Spec};
use logbook_cluster::claim::{self, ClaimError, Claimant};
use logbook_cluster::{check_conditional_writes, update, SharedState};

/// moto's server on a free loopback port, stopped when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let venv = std::env::var_os("LOGBOOK_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/logbook/venv")
        });
    let bin = venv.join("bin/moto_server");
    assert!(
        bin.exists(),
        "these tests need moto's server at {}: run `bash scripts/test.sh` once or set LOGBOOK_TEST_VENV",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    m
}

async fn home(m: &Moto) -> Arc<dyn SharedState> {
    // moto checks no signature; a path-style PUT creates the bucket.
    let r = reqwest::Client::new()
        .put(format!("{}/home", m.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let spec = BucketSpec::S3(S3Spec {
        bucket: "home".into(),
        region: "us-east-1".into(),
        endpoint: Some(m.url.clone()),
        path_style: true,
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
        sse: None,
    });
    let b = Bucket::open("home", &spec, logbook_disk::RealDisk::shared()).unwrap();
    logbook_cluster::for_bucket(&b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moto_honours_conditional_writes_and_racing_writers_lose_nothing() {
    let m = tokio::task::spawn_blocking(moto).await.unwrap();
    let s = home(&m).await;
    check_conditional_writes(&*s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            update(&*s, "shared/list", 1000, |cur| {
                let mut v: Vec<u32> = cur
                    .map(|b| serde_json::from_slice(b).unwrap())
                    .unwrap_or_default();
                v.push(i);
                Some(serde_json::to_vec(&v).unwrap())
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (data, _) = s.read("shared/list").await.unwrap().unwrap();
    let mut v: Vec<u32> = serde_json::from_slice(&data).unwrap();
    v.sort();
    assert_eq!(v, (0..8).collect::<Vec<_>>());

    // Claims race on the same store: one of four wins.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let who = Claimant {
                node: "n1".into(),
                host: "h".into(),
                pid: i,
                data_dir: format!("/d/{i}"),
                ttl: Duration::from_secs(30),
            };
            claim::claim(&*s, &who, 0, 1_800_000_000_000).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(ClaimError::Live { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}
