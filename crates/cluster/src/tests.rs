use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::claim::{self, ClaimError, Claimant};
use super::*;

fn folder() -> (tempfile::TempDir, Arc<dyn SharedState>) {
    let d = tempfile::tempdir().unwrap();
    let s: Arc<dyn SharedState> = Arc::new(FolderState::new(d.path().join("home")));
    (d, s)
}

fn memory() -> Arc<dyn SharedState> {
    Arc::new(BucketState::new("memory", Arc::new(InMemory::new())))
}

/// Both implementations, for tests that hold for each.
fn each() -> Vec<(Option<tempfile::TempDir>, Arc<dyn SharedState>)> {
    let (d, f) = folder();
    vec![(Some(d), f), (None, memory())]
}

#[tokio::test]
async fn a_write_takes_effect_only_at_the_version_it_was_read_at() {
    for (_keep, s) in each() {
        assert!(s.read("a/b").await.unwrap().is_none());
        let v1 = s
            .write("a/b", Bytes::from_static(b"one"), None)
            .await
            .unwrap();
        // "Only if absent" over an existing object: a conflict, and nothing changes.
        let e = s
            .write("a/b", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        let v2 = s
            .write("a/b", Bytes::from_static(b"two"), Some(&v1))
            .await
            .unwrap();
        assert_ne!(v1, v2);
        // A stale version: a conflict, and nothing changes.
        let e = s
            .write("a/b", Bytes::from_static(b"stale"), Some(&v1))
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        let (data, v) = s.read("a/b").await.unwrap().unwrap();
        assert_eq!((&data[..], v), (&b"two"[..], v2.clone()));
        // An update of an object that is gone is a conflict too, not a create.
        s.remove("a/b").await.unwrap();
        s.remove("a/b").await.unwrap();
        let e = s
            .write("a/b", Bytes::from_static(b"back"), Some(&v2))
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert!(s.read("a/b").await.unwrap().is_none());
        check_conditional_writes(&*s).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_nothing() {
    // 16 writers add their own line to one object at once, each retrying its lost races:
    // every line is there at the end, once.
    for (_keep, s) in each() {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                update(&*s, "shared/list", 1000, |cur| {
                    let mut lines: Vec<String> = cur
                        .map(|b| {
                            String::from_utf8_lossy(b)
                                .lines()
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default();
                    lines.push(format!("writer {i}"));
                    Some(lines.join("\n").into_bytes())
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (data, _) = s.read("shared/list").await.unwrap().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&data)
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        let mut want: Vec<String> = (0..16).map(|i| format!("writer {i}")).collect();
        want.sort();
        assert_eq!(lines, want);
    }
}

#[tokio::test]
async fn a_typed_change_writes_only_what_changed_and_never_over_what_it_cannot_read() {
    let dec = |b: &[u8]| -> Result<Vec<String>, String> {
        serde_json::from_slice(b).map_err(|e| format!("not a list: {e}"))
    };
    let enc = |d: &Vec<String>| serde_json::to_vec(d).unwrap();
    for (_keep, s) in each() {
        // Absent: written even when the change changes nothing (the home gets a copy).
        let c = change(&*s, "doc", 5, dec, enc, |d| {
            Ok::<_, String>((d.len(), false))
        })
        .await
        .unwrap();
        assert_eq!((c.doc.len(), c.out), (0, 0));
        let (_, v0) = s.read("doc").await.unwrap().unwrap();
        assert_eq!(c.version, v0);
        // Nothing changed: nothing written, the version stays.
        let c = change(&*s, "doc", 5, dec, enc, |_| Ok::<_, String>(((), false)))
            .await
            .unwrap();
        assert_eq!(c.version, v0);
        // A change is written and returned.
        let c = change(&*s, "doc", 5, dec, enc, |d| {
            d.push("x".into());
            Ok::<_, String>(((), true))
        })
        .await
        .unwrap();
        assert_eq!(c.doc, vec!["x".to_string()]);
        assert_ne!(c.version, v0);
        // A refusal writes nothing.
        let e = change(&*s, "doc", 5, dec, enc, |d| {
            d.clear();
            Err::<((), bool), _>("no".to_string())
        })
        .await
        .unwrap_err();
        assert!(matches!(e, ChangeError::Doc(m) if m == "no"));
        assert_eq!(&s.read("doc").await.unwrap().unwrap().0[..], br#"["x"]"#);
        // A copy it cannot decode is left as it is.
        let (_, v) = s.read("doc").await.unwrap().unwrap();
        s.write("doc", Bytes::from_static(b"{}"), Some(&v))
            .await
            .unwrap();
        let e = change(&*s, "doc", 5, dec, enc, |_| Ok::<_, String>(((), true)))
            .await
            .unwrap_err();
        assert!(matches!(e, ChangeError::Doc(m) if m.starts_with("not a list")));
        assert_eq!(&s.read("doc").await.unwrap().unwrap().0[..], b"{}");
    }
}

#[tokio::test]
async fn folder_state_keys_never_leave_the_folder() {
    let (_d, s) = folder();
    for bad in ["", "../x", "a/../../x", "a//b", "./a", "a\\b"] {
        assert!(
            s.write(bad, Bytes::from_static(b"x"), None).await.is_err(),
            "{bad:?}"
        );
        assert!(s.read(bad).await.is_err(), "{bad:?}");
    }
}

/// An S3-compatible store that ignores preconditions, as some do: every put overwrites.
#[derive(Debug)]
struct Unconditional(InMemory);

impl std::fmt::Display for Unconditional {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unconditional")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Unconditional {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.0
            .put_opts(location, payload, PutOptions::default())
            .await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_store_that_ignores_conditions_is_refused_naming_what_it_lacks() {
    let s = BucketState::new(
        "s3://ignores at http://x",
        Arc::new(Unconditional(InMemory::new())),
    );
    let e = check_conditional_writes(&s).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StateError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("If-None-Match"), "{msg}");
    assert!(msg.contains("s3://ignores"), "{msg}");
    // The probe leaves nothing behind.
    let left: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s.store.list(None)).await;
    assert!(left.is_empty(), "{left:?}");
}

fn who(node: &str, dir: &str) -> Claimant {
    Claimant {
        node: node.into(),
        host: "host-a".into(),
        pid: 100,
        data_dir: dir.into(),
        ttl: Duration::from_secs(30),
    }
}

const T0: u64 = 1_800_000_000_000;

#[tokio::test]
async fn a_live_claim_refuses_a_copy_and_a_stale_or_released_one_is_taken() {
    for (_keep, s) in each() {
        let a = who("n1", "/data/a");
        let mut held = claim::claim(&*s, &a, 10, T0).await.unwrap();
        // A copy of the folder elsewhere, while the holder renews: refused, named.
        let copy = who("n1", "/data/copy");
        held.renew(&*s, 20, T0 + 10_000).await.unwrap();
        let e = claim::claim(&*s, &copy, 20, T0 + 20_000).await.unwrap_err();
        assert!(matches!(e, ClaimError::Live { .. }), "{e}");
        assert!(e.to_string().contains("/data/a"), "{e}");
        // The same on another host with the same path.
        let mut other_host = who("n1", "/data/a");
        other_host.host = "host-b".into();
        let e = claim::claim(&*s, &other_host, 20, T0 + 20_000)
            .await
            .unwrap_err();
        assert!(matches!(e, ClaimError::Live { .. }), "{e}");
        // The holder dies; after the lease (30 s) a replica at the same position takes it.
        let mut taken = claim::claim(&*s, &copy, 20, T0 + 40_001).await.unwrap();
        // The old holder, back from a pause, has lost it and is told so on renewal.
        let e = held.renew(&*s, 21, T0 + 40_002).await.unwrap_err();
        assert!(matches!(e, ClaimError::Lost { .. }), "{e}");
        // A clean stop releases it: the next start takes it at once.
        taken.renew(&*s, 25, T0 + 41_000).await.unwrap();
        taken.release(&*s, 26, T0 + 42_000).await.unwrap();
        let again = claim::claim(&*s, &a, 26, T0 + 42_001).await.unwrap();
        assert_eq!(again.body().journal_next, 26);
        assert!(!again.body().released);
    }
}

#[tokio::test]
async fn the_same_folder_on_the_same_host_takes_its_claim_back_after_a_crash() {
    for (_keep, s) in each() {
        let a = who("n1", "/data/a");
        let _crashed = claim::claim(&*s, &a, 5, T0).await.unwrap();
        // Restarted a second later (its data folder lock proves the old process is gone).
        let back = claim::claim(&*s, &a, 5, T0 + 1_000).await.unwrap();
        assert_eq!(back.body().heartbeat_ms, T0 + 1_000);
    }
}

#[tokio::test]
async fn a_folder_behind_what_the_node_wrote_is_refused() {
    for (_keep, s) in each() {
        let a = who("n1", "/data/a");
        let held = claim::claim(&*s, &a, 100, T0).await.unwrap();
        held.release(&*s, 500, T0 + 1).await.unwrap();
        // A backup of the folder taken at position 300, restored: it would rewrite keys.
        let e = claim::claim(&*s, &a, 300, T0 + 2).await.unwrap_err();
        assert!(
            matches!(
                e,
                ClaimError::Behind {
                    claimed: 500,
                    ours: 300,
                    ..
                }
            ),
            "{e}"
        );
        // Even when the holder's lease has long expired.
        let e = claim::claim(&*s, &who("n1", "/data/b"), 499, T0 + 3_600_000)
            .await
            .unwrap_err();
        assert!(matches!(e, ClaimError::Behind { .. }), "{e}");
        claim::claim(&*s, &a, 500, T0 + 3).await.unwrap();
    }
}

#[tokio::test]
async fn a_lost_claim_is_released_on_its_behalf_and_a_live_one_is_not() {
    let s = memory();
    let ttl = Duration::from_secs(30);
    let c = claim::claim(&*s, &who("n1", "/data/a"), 7, 1_000)
        .await
        .unwrap();
    // Live: refused, and left as it was.
    let e = claim::release_lost(&*s, "n1", ttl, 2_000)
        .await
        .unwrap_err();
    assert!(e.contains("is running"), "{e}");
    assert!(!c.body().released);
    let (b, _) = s.read(&claim::key("n1")).await.unwrap().unwrap();
    assert!(
        !serde_json::from_slice::<claim::ClaimBody>(&b)
            .unwrap()
            .released
    );
    // Past its lease: released, its journal position kept.
    let held = claim::release_lost(&*s, "n1", ttl, 40_000).await.unwrap();
    assert!(!held.released);
    let (b, _) = s.read(&claim::key("n1")).await.unwrap().unwrap();
    let now = serde_json::from_slice::<claim::ClaimBody>(&b).unwrap();
    assert!(now.released && now.journal_next == 7, "{now:?}");
    // Again: nothing to do; an unknown node is named.
    assert!(
        claim::release_lost(&*s, "n1", ttl, 50_000)
            .await
            .unwrap()
            .released
    );
    let e = claim::release_lost(&*s, "n2", ttl, 50_000)
        .await
        .unwrap_err();
    assert!(e.contains("no replica"), "{e}");
    // Another folder may now take the node, but not one behind what it wrote.
    assert!(claim::claim(&*s, &who("n1", "/data/b"), 3, 60_000)
        .await
        .is_err());
    claim::claim(&*s, &who("n1", "/data/b"), 7, 60_000)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_foreign_or_corrupt_claim_object_is_never_overwritten() {
    for (_keep, s) in each() {
        for (node, body) in [
            ("n-garbage", &b"\x00\x01 not json"[..]),
            ("n-other", &br#"{"kind":"someone-else/1","node":"n-other"}"#[..]),
            ("n-extra", &br#"{"kind":"logbook-node-claim/1","node":"n-extra","incarnation":"1","host":"h","pid":1,"dataDir":"/d","heartbeatMs":0,"journalNext":0,"released":true,"admin":true}"#[..]),
        ] {
            let k = claim::key(node);
            s.write(&k, Bytes::copy_from_slice(body), None).await.unwrap();
            let e = claim::claim(&*s, &who(node, "/d"), 0, T0).await.unwrap_err();
            assert!(matches!(e, ClaimError::Foreign { .. }), "{node}: {e}");
            let (data, _) = s.read(&k).await.unwrap().unwrap();
            assert_eq!(&data[..], body, "{node}: left as it was");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_replicas_starting_at_once_with_one_node_id_exactly_one_wins() {
    for (_keep, s) in each() {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                claim::claim(&*s, &who("n1", &format!("/data/{i}")), 0, T0).await
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
}

mod leases {
    use super::*;
    use crate::lease::{key, Lease, LeaseError};

    const TTL: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn one_replica_holds_a_job_until_its_lease_runs_out_or_it_releases() {
        for (_keep, s) in each() {
            let mut a = Lease::new("alarms", "node-a", TTL);
            let mut b = Lease::new("alarms", "node-b", TTL);
            let t = 1_000_000;
            assert!(!a.held(t) && a.due(t));
            assert_eq!(a.hold(&*s, t).await.unwrap().node, "node-a");
            assert!(a.held(t + 29_999) && !a.held(t + 30_000));
            // Not due again before a third of the lease.
            assert!(!a.due(t + 9_999) && a.due(t + 10_000));
            // Another replica finds it held, and says by whom.
            let h = b.hold(&*s, t + 1_000).await.unwrap();
            assert_eq!((h.node.as_str(), h.expires_ms), ("node-a", t + 30_000));
            assert!(!b.held(t + 1_000));
            // A renewal moves the end.
            assert_eq!(
                a.hold(&*s, t + 10_000).await.unwrap().expires_ms,
                t + 40_000
            );
            assert_eq!(b.hold(&*s, t + 39_999).await.unwrap().node, "node-a");
            // The holder died: the other takes over once the lease ran out.
            assert_eq!(b.hold(&*s, t + 40_000).await.unwrap().node, "node-b");
            assert!(b.held(t + 40_000));
            // The old holder's renewal now finds b, and it no longer holds it.
            assert_eq!(a.hold(&*s, t + 41_000).await.unwrap().node, "node-b");
            assert!(!a.held(t + 41_000));
            // A release hands it over at once; releasing what one does not hold is a no-op.
            a.release(&*s).await.unwrap();
            assert_eq!(a.hold(&*s, t + 42_000).await.unwrap().node, "node-b");
            b.release(&*s).await.unwrap();
            assert!(!b.held(t + 42_000));
            assert_eq!(a.hold(&*s, t + 42_000).await.unwrap().node, "node-a");
        }
    }

    #[tokio::test]
    async fn of_replicas_asking_at_once_exactly_one_holds_the_job() {
        for (_keep, s) in each() {
            let mut tasks = Vec::new();
            for i in 0..8 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let mut l = Lease::new("alarms", &format!("node-{i}"), TTL);
                    let h = l.hold(&*s, 5_000).await;
                    (l.held(5_000), h.map(|h| h.node).unwrap_or_default())
                }));
            }
            let mut holders = 0;
            let mut named = std::collections::BTreeSet::new();
            for t in tasks {
                let (held, node) = t.await.unwrap();
                holders += usize::from(held);
                named.insert(node);
            }
            assert_eq!(holders, 1);
            // Everyone that answered names the same winner (an answer may be a
            // conflict after three lost races: then it names nobody).
            named.remove("");
            assert_eq!(named.len(), 1, "{named:?}");
        }
    }

    #[tokio::test]
    async fn a_foreign_object_where_the_lease_lives_is_never_overwritten() {
        for (_keep, s) in each() {
            s.write(
                &key("alarms"),
                Bytes::from_static(b"{\"not\":\"a lease\"}"),
                None,
            )
            .await
            .unwrap();
            let mut a = Lease::new("alarms", "node-a", TTL);
            let e = a.hold(&*s, 1).await.unwrap_err();
            assert!(matches!(e, LeaseError::Foreign { .. }), "{e}");
            assert!(!a.held(1));
            let (b, _) = s.read(&key("alarms")).await.unwrap().unwrap();
            assert_eq!(&b[..], b"{\"not\":\"a lease\"}");
        }
    }
}

mod store_mirror {
    use super::*;
    use crate::store::{node_prefix, Mirror, Peers, Published};
    use logbook_query::PeerFiles as _;
    use logbook_store::{parse_row, Store};

    fn line(rid: &str, ms: i64) -> String {
        let t = logbook_record::record_timestamp(
            time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap(),
        );
        format!(
            r#"{{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"{t}","accountId":"123456789012","identity":{{"arn":"arn:aws:iam::123456789012:user/a"}},"region":"us-east-1","requestId":"{rid}","operation":"Converse","modelId":"m","input":{{"inputContentType":"application/json","inputBodyJson":{{"messages":[]}},"inputTokenCount":1}}}}"#
        )
    }

    fn published(home: &std::path::Path, node: &str) -> Published {
        let p = home.join(node_prefix(node)).join("manifest.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    /// Every file a published manifest names is in the home.
    fn whole(home: &std::path::Path, node: &str) -> usize {
        let p = published(home, node);
        let mut n = 0;
        for f in p.store.groups.values().flat_map(|g| &g.files) {
            let key = format!(
                "{}files/{}",
                node_prefix(node),
                crate::store::remote_name(&f.path)
            );
            assert!(home.join(&key).exists(), "{key} named but missing");
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn a_published_store_names_only_files_in_the_home_and_peers_read_them() {
        let d = tempfile::tempdir().unwrap();
        let home_dir = d.path().join("home");
        let home = logbook_bucket::Bucket::open(
            "home",
            &logbook_bucket::BucketSpec::Local(home_dir.clone()),
            logbook_disk::RealDisk::shared(),
        )
        .unwrap();
        let store = Arc::new(Store::open(d.path().join("store")).unwrap());
        let group = "/aws/bedrock/modelinvocations";
        store.create_group(group).unwrap();
        let now = logbook_store::now_ms();
        let old = now - 3 * 86_400_000;
        store
            .import_rows(group, vec![parse_row(&line("old", old)).unwrap()])
            .unwrap();
        let mut m = Mirror::new(store.clone(), home.clone(), "n1", Duration::ZERO)
            .await
            .unwrap();
        assert!(m.sync().await.unwrap());
        assert_eq!(whole(&home_dir, "n1"), 1);
        assert!(!m.sync().await.unwrap(), "unchanged: nothing published");
        store
            .import_rows(group, vec![parse_row(&line("new", now - 60_000)).unwrap()])
            .unwrap();
        assert!(m.sync().await.unwrap());
        assert_eq!(whole(&home_dir, "n1"), 2);
        assert_eq!(m.health().lock().unwrap().files_uploaded, 2);

        // Another replica's queries get both files, by time range.
        let peers = Peers::new(home.clone(), "n2", Duration::ZERO);
        assert_eq!(peers.files(group, i64::MIN, i64::MAX).await.len(), 2);
        let recent = peers.files(group, now - 3_600_000, i64::MAX).await;
        assert_eq!(recent.len(), 1);
        assert!(
            std::path::Path::new(&recent[0].0).exists(),
            "{}",
            recent[0].0
        );
        // Its own store is not read twice.
        assert!(Peers::new(home.clone(), "n1", Duration::ZERO)
            .files(group, i64::MIN, i64::MAX)
            .await
            .is_empty());

        // Retention drops the old file: it leaves the manifest first, then the home
        // (after the grace period, zero here).
        store.set_retention(group, Some(1)).unwrap();
        assert_eq!(store.apply_retention(now).unwrap(), 1);
        assert!(m.sync().await.unwrap());
        assert_eq!(whole(&home_dir, "n1"), 1);
        assert_eq!(m.health().lock().unwrap().files_deleted, 1);
        let files_left = std::fs::read_dir(home_dir.join(node_prefix("n1")).join("files"))
            .unwrap()
            .count();
        assert_eq!(files_left, 1);

        // A restart uploads nothing it already published.
        let mut again = Mirror::new(store.clone(), home.clone(), "n1", Duration::ZERO)
            .await
            .unwrap();
        assert!(again.sync().await.unwrap());
        assert_eq!(again.health().lock().unwrap().files_uploaded, 0);
    }

    #[tokio::test]
    async fn peers_files_are_read_from_a_local_copy_once_copied_within_its_cap() {
        let d = tempfile::tempdir().unwrap();
        let home_dir = d.path().join("home");
        let home = logbook_bucket::Bucket::open(
            "home",
            &logbook_bucket::BucketSpec::Local(home_dir.clone()),
            logbook_disk::RealDisk::shared(),
        )
        .unwrap();
        let store = Arc::new(Store::open(d.path().join("store")).unwrap());
        let group = "/aws/bedrock/modelinvocations";
        store.create_group(group).unwrap();
        let now = logbook_store::now_ms();
        let (old, new) = (now - 3 * 86_400_000, now - 60_000);
        for (rid, ms) in [("old", old), ("new", new)] {
            store
                .import_rows(group, vec![parse_row(&line(rid, ms)).unwrap()])
                .unwrap();
        }
        let mut m = Mirror::new(store.clone(), home.clone(), "n1", Duration::ZERO)
            .await
            .unwrap();
        assert!(m.sync().await.unwrap());
        let sizes: Vec<u64> = published(&home_dir, "n1")
            .store
            .groups
            .values()
            .flat_map(|g| g.files.iter().map(|f| f.bytes))
            .collect();
        assert_eq!(sizes.len(), 2);
        let cache_dir = d.path().join("cache");
        // Room for one file: the newest is copied, the other read from the home.
        let cap = *sizes.iter().max().unwrap();
        std::fs::create_dir_all(&cache_dir).unwrap();
        std::fs::write(cache_dir.join("x.parquet.tmp"), b"an unfinished copy").unwrap();
        let cache = crate::store::FileCache::open(cache_dir.clone(), cap, home.clone())
            .unwrap()
            .with_grace(Duration::ZERO);
        assert!(
            !cache_dir.join("x.parquet.tmp").exists(),
            "unfinished copies are removed"
        );
        let peers = Peers::new(home.clone(), "n2", Duration::ZERO)
            .with_cache(cache, tokio::runtime::Handle::current());
        let first = peers.files(group, i64::MIN, i64::MAX).await;
        assert!(first
            .iter()
            .all(|(p, _)| p.starts_with(&*home_dir.to_string_lossy())));
        let mut local = Vec::new();
        for _ in 0..200 {
            local = peers.files(group, i64::MIN, i64::MAX).await;
            if local
                .iter()
                .any(|(p, _)| p.starts_with(&*cache_dir.to_string_lossy()))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (cached, remote): (Vec<_>, Vec<_>) = local
            .iter()
            .partition(|(p, _)| p.starts_with(&*cache_dir.to_string_lossy()));
        assert_eq!((cached.len(), remote.len()), (1, 1), "{local:?}");
        assert!(
            cached[0].1.max_ts >= new - 1000,
            "the newest is the one copied"
        );
        // The copy is byte for byte the file in the home.
        let key = format!(
            "{}files/{}",
            node_prefix("n1"),
            crate::store::remote_name(&cached[0].1.path)
        );
        assert_eq!(
            std::fs::read(&cached[0].0).unwrap(),
            std::fs::read(home_dir.join(key)).unwrap()
        );
        let h = peers.cache_health().unwrap();
        assert_eq!((h.files, h.copied, h.cap_bytes), (1, 1, cap));

        // The group is deleted and made again with another record: a copy no manifest
        // names any more is no longer handed out, then deleted (after the grace, zero
        // here).
        store.delete_group(group).unwrap();
        store.create_group(group).unwrap();
        store
            .import_rows(group, vec![parse_row(&line("newer", now)).unwrap()])
            .unwrap();
        assert!(m.sync().await.unwrap());
        let stale = cached[0].0.clone();
        for _ in 0..200 {
            let now_files = peers.files(group, i64::MIN, i64::MAX).await;
            if !now_files.iter().any(|(p, _)| *p == stale) && !std::path::Path::new(&stale).exists()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!std::path::Path::new(&stale).exists(), "{stale} kept");
    }

    #[tokio::test]
    async fn a_file_whose_size_is_not_what_its_manifest_says_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        let home_dir = d.path().join("home");
        let home = logbook_bucket::Bucket::open(
            "home",
            &logbook_bucket::BucketSpec::Local(home_dir.clone()),
            logbook_disk::RealDisk::shared(),
        )
        .unwrap();
        let store = Arc::new(Store::open(d.path().join("store")).unwrap());
        let group = "/aws/bedrock/modelinvocations";
        store.create_group(group).unwrap();
        store
            .import_rows(
                group,
                vec![parse_row(&line("r", logbook_store::now_ms())).unwrap()],
            )
            .unwrap();
        let mut m = Mirror::new(store.clone(), home.clone(), "n1", Duration::ZERO)
            .await
            .unwrap();
        assert!(m.sync().await.unwrap());
        // The object in the home grew (or the manifest lies about it): 1 MiB more.
        let f = published(&home_dir, "n1").store.groups[group].files[0].clone();
        let obj = home_dir
            .join(node_prefix("n1"))
            .join("files")
            .join(crate::store::remote_name(&f.path));
        let mut bytes = std::fs::read(&obj).unwrap();
        bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
        std::fs::write(&obj, bytes).unwrap();
        let cache_dir = d.path().join("cache");
        let cache =
            crate::store::FileCache::open(cache_dir.clone(), 1 << 30, home.clone()).unwrap();
        let peers = Peers::new(home.clone(), "n2", Duration::ZERO)
            .with_cache(cache, tokio::runtime::Handle::current());
        for _ in 0..50 {
            let got = peers.files(group, i64::MIN, i64::MAX).await;
            assert!(
                got[0].0.starts_with(&*home_dir.to_string_lossy()),
                "{got:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let h = peers.cache_health().unwrap();
        assert_eq!((h.files, h.copied, h.bytes), (0, 0, 0));
        assert_eq!(
            std::fs::read_dir(&cache_dir).unwrap().count(),
            0,
            "nothing left behind"
        );
    }
}
