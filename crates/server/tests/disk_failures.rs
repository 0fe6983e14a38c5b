//! What a call sees when the disk fails under the journal (a simulated disk that fails
//! fsync on demand): strict mode withholds the answer whose record failed (500), then
//! refuses with the API's own 503 before the provider is called while the journal is
//! poisoned; fail-open serves and counts every unrecorded call;
//! a control-plane change whose audit event cannot be made durable is rolled back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{harness, send, send_with, Harness, Options};
use logbook_disk::sim::{Faults, SimDisk};
use logbook_server::config::{OnFailure, ProviderConfig, RouteConfig};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An OpenAI-compatible upstream that counts the calls it gets.
fn upstream(rt: &tokio::runtime::Runtime, calls: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                    "model": "up-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                }))
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

fn counted(disk: &SimDisk, on_failure: OnFailure, calls: Arc<AtomicU64>) -> Harness {
    // The upstream needs a runtime before the harness exists: give it its own.
    let rt = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    ));
    let base = upstream(rt, calls);
    harness(Options {
        disk: Some(disk.clone()),
        on_failure: Some(on_failure),
        providers: vec![ProviderConfig {
            name: "up".into(),
            kind: "openai".into(),
            base_url: Some(base),
            api_key: Some("sk-test".into()),
            timeout: Duration::from_secs(10),
            delay: Duration::ZERO,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }],
        routes: vec![RouteConfig {
            model: "counted".into(),
            provider: "up".into(),
            upstream_model: None,
        }],
        ..Options::default()
    })
}

fn chat(h: &Harness) -> (http::StatusCode, Value) {
    let body = br#"{"model":"counted","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let (s, _, b) = send(
        h,
        "POST",
        "/v1/chat/completions",
        Some("application/json"),
        body,
    );
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn converse(h: &Harness) -> (http::StatusCode, http::HeaderMap, Value) {
    let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#.to_vec();
    let (s, hd, b) = send(
        h,
        "POST",
        "/model/counted/converse",
        Some("application/json"),
        body,
    );
    (s, hd, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

const ALWAYS: u32 = 1_000_000;

fn error_type(h: &http::HeaderMap) -> &str {
    h.get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[test]
fn an_fsync_failure_poisons_the_journal_and_later_calls_never_reach_the_provider() {
    let disk = SimDisk::new(1);
    let calls = Arc::new(AtomicU64::new(0));
    let h = counted(&disk, OnFailure::FailClosed, calls.clone());

    let (s, v) = chat(&h);
    assert_eq!(s, 200, "{v}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let before = *h.journal.committed().borrow();

    // The record of this call cannot be made durable: the answer is withheld (an internal
    // error: the provider answered, Logbook could not keep the record).
    disk.set_faults(Faults {
        sync_ppm: ALWAYS,
        ..Faults::default()
    });
    let (s, v) = chat(&h);
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["error"]["code"], "logging_failed", "OpenAI-shaped: {v}");
    assert!(
        v["choices"].is_null(),
        "no completion leaves without its record: {v}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the provider answered this one"
    );
    assert!(
        !h.journal.is_healthy(),
        "a failed fsync poisons the journal"
    );
    assert_eq!(*h.journal.committed().borrow(), before, "nothing committed");

    // The disk works again, but the journal stays poisoned until a restart: calls are
    // refused before the provider is called, in each API's own error shape.
    disk.set_faults(Faults::default());
    let (s, v) = chat(&h);
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("journal"),
        "{v}"
    );
    let (s, hd, v) = converse(&h);
    assert_eq!(s, 503, "{v}");
    assert!(
        error_type(&hd).starts_with("ServiceUnavailableException:"),
        "{hd:?}"
    );
    assert!(v["message"].is_string(), "{v}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no call reached the provider"
    );
    assert_eq!(*h.journal.committed().borrow(), before);
}

#[test]
fn fail_open_serves_and_counts_every_unrecorded_call() {
    let disk = SimDisk::new(2);
    let calls = Arc::new(AtomicU64::new(0));
    let h = counted(&disk, OnFailure::FailOpen, calls.clone());
    assert_eq!(chat(&h).0, 200);
    assert_eq!(h.state.recorder.unrecorded(), 0);
    disk.set_faults(Faults {
        sync_ppm: ALWAYS,
        ..Faults::default()
    });
    for i in 1..=3u64 {
        let (s, v) = chat(&h);
        assert_eq!(s, 200, "fail-open serves the call: {v}");
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(
            h.state.recorder.unrecorded(),
            i,
            "every unrecorded call is counted"
        );
    }
    let (s, _, v) = converse(&h);
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.state.recorder.unrecorded(), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[test]
fn a_logging_change_that_cannot_be_audited_is_rolled_back() {
    let disk = SimDisk::new(3);
    let h = harness(Options {
        disk: Some(disk.clone()),
        ..Options::default()
    });
    let (account, region) = (
        h.state.config.account_id.clone(),
        h.state.config.region.clone(),
    );
    let before = format!("{:?}", h.state.logging.effective(&account, &region));
    let put = |prefix: &str| {
        let body = format!(
            r#"{{"loggingConfig":{{"s3Config":{{"bucketName":"logbook-archive","keyPrefix":"{prefix}"}},"textDataDeliveryEnabled":true}}}}"#
        );
        send(
            &h,
            "PUT",
            "/logging/modelinvocations",
            Some("application/json"),
            body.into_bytes(),
        )
    };
    // Audited: the change holds.
    let (s, _, b) = put("audited/");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let audited = format!("{:?}", h.state.logging.effective(&account, &region));
    assert_ne!(audited, before);
    assert!(audited.contains("audited/"), "{audited}");

    // Not audited: refused, and the configuration is what it was.
    disk.set_faults(Faults {
        sync_ppm: ALWAYS,
        ..Faults::default()
    });
    let (s, hd, b) = put("unaudited/");
    assert_eq!(s, 500, "{}", String::from_utf8_lossy(&b));
    assert!(
        error_type(&hd).starts_with("InternalServerException:"),
        "{hd:?}"
    );
    assert!(String::from_utf8_lossy(&b).contains("audited"));
    let after = format!("{:?}", h.state.logging.effective(&account, &region));
    assert_eq!(after, audited, "the unaudited change was rolled back");
    // And it stays rolled back across a reload of the stored configuration.
    let reloaded = logbook_server::control::LoggingConfigs::open(
        &h.dir.path().join("control"),
        h.state.config.logging_default.clone(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        format!("{:?}", reloaded.effective(&account, &region)),
        audited
    );
}

#[test]
fn an_alarm_change_that_cannot_be_audited_is_undone() {
    let disk = SimDisk::new(5);
    let h = harness(Options {
        disk: Some(disk.clone()),
        ..Options::default()
    });
    let put = |threshold: u32| {
        let body = format!(
            r#"{{"AlarmName":"errors","Namespace":"AWS/Bedrock","MetricName":"InvocationClientErrors","Statistic":"Sum","Period":60,"EvaluationPeriods":1,"Threshold":{threshold},"ComparisonOperator":"GreaterThanThreshold"}}"#
        );
        send_with(
            &h,
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.0"),
                (
                    "x-amz-target",
                    "GraniteServiceVersion20100801.PutMetricAlarm",
                ),
            ],
            body.into_bytes(),
        )
    };
    let threshold = |h: &Harness| {
        h.state
            .alarms
            .list()
            .iter()
            .find(|e| e.def.alarm_name == "errors")
            .map(|e| e.def.threshold)
    };
    // Audited: the alarm is there, and its change is an event.
    let (s, _, b) = put(1);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(threshold(&h), Some(1.0));

    // Not audited: refused, and the alarm is what it was.
    disk.set_faults(Faults {
        sync_ppm: ALWAYS,
        ..Faults::default()
    });
    let (s, _, b) = put(7);
    assert_eq!(s, 500, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("could not be audited"));
    assert_eq!(threshold(&h), Some(1.0), "the unaudited change was undone");
    // A new alarm whose audit fails is not left behind either.
    let body = br#"{"AlarmName":"fresh","Namespace":"AWS/Bedrock","MetricName":"Invocations","Statistic":"Sum","Period":60,"EvaluationPeriods":1,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold"}"#;
    let (s, _, _) = send_with(
        &h,
        "POST",
        "/",
        &[
            ("content-type", "application/x-amz-json-1.0"),
            (
                "x-amz-target",
                "GraniteServiceVersion20100801.PutMetricAlarm",
            ),
        ],
        body.to_vec(),
    );
    assert_eq!(s, 500);
    assert!(h
        .state
        .alarms
        .list()
        .iter()
        .all(|e| e.def.alarm_name != "fresh"));
}
