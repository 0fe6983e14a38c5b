use super::*;
use serde_json::json;

fn record(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn converse() -> Value {
    json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": "2026-12-03T10:00:00.250Z", "accountId": "123456789012", "region": "eu-west-1",
        "identity": {"arn": "arn:aws:iam::123456789012:user/ana"},
        "requestId": "req-1", "operation": "Converse", "modelId": "anthropic.claude-3-haiku",
        "input": {"inputContentType": "application/json",
                  "inputBodyJson": {"system": [{"text": "be brief"}],
                                    "messages": [{"role": "user", "content": [{"text": "hello"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}]}],
                                    "inferenceConfig": {"maxTokens": 64, "temperature": 0.5, "topP": 0.9}},
                  "inputTokenCount": 12, "cacheReadInputTokenCount": 4},
        "output": {"outputContentType": "application/json",
                   "outputBodyJson": {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}, {"toolUse": {"toolUseId": "t1", "name": "search", "input": {"q": "x"}}}]}},
                                      "stopReason": "tool_use"},
                   "outputTokenCount": 5},
        "requestMetadata": {"team": "search"},
        "logbook": {"latencyMs": 1500, "httpStatus": 200, "provider": "bedrock", "api": "bedrock", "cost": "0.000123"}
    })
}

fn get<'a>(s: &'a SpanData, k: &str) -> Option<&'a OtelValue> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == k)
        .map(|kv| &kv.value)
}

#[test]
fn a_converse_record_is_one_client_span_with_genai_attributes() {
    let (s, f) = span(&record(converse()), false, &scope()).unwrap();
    assert_eq!(s.name, "chat anthropic.claude-3-haiku");
    assert_eq!(s.span_kind, SpanKind::Client);
    let start = UNIX_EPOCH + Duration::from_millis(1_796_292_000_250);
    assert_eq!(s.start_time, start);
    assert_eq!(s.end_time, start + Duration::from_millis(1500));
    for (k, v) in [
        ("gen_ai.operation.name", OtelValue::from("chat")),
        ("gen_ai.provider.name", "aws.bedrock".into()),
        ("gen_ai.request.model", "anthropic.claude-3-haiku".into()),
        ("gen_ai.usage.input_tokens", 12i64.into()),
        ("gen_ai.usage.output_tokens", 5i64.into()),
        ("gen_ai.usage.cache_read.input_tokens", 4i64.into()),
        ("gen_ai.request.max_tokens", 64i64.into()),
        ("gen_ai.request.temperature", 0.5f64.into()),
        ("gen_ai.request.top_p", 0.9f64.into()),
        ("aws.request_id", "req-1".into()),
        ("cloud.region", "eu-west-1".into()),
        ("user.id", "arn:aws:iam::123456789012:user/ana".into()),
        ("logbook.request_metadata.team", "search".into()),
        ("logbook.cost", "0.000123".into()),
    ] {
        assert_eq!(get(&s, k), Some(&v), "{k}");
    }
    assert!(get(&s, "gen_ai.usage.cache_creation.input_tokens").is_none());
    assert_eq!(
        get(&s, "gen_ai.response.finish_reasons"),
        Some(&OtelValue::Array(opentelemetry::Array::String(vec![
            "tool_use".into()
        ])))
    );
    assert_eq!(s.status, Status::Unset);
    // No content unless asked for.
    assert!(get(&s, "gen_ai.input.messages").is_none());
    assert!(get(&s, "gen_ai.output.messages").is_none());
    assert_eq!(f.outcome, CallOutcome::Ok);
    assert!(f.reached_model);
    // The same record always gives the same ids; another request id, others.
    let (again, _) = span(&record(converse()), false, &scope()).unwrap();
    assert_eq!(again.span_context, s.span_context);
    let mut other = converse();
    other["requestId"] = "req-2".into();
    let (o, _) = span(&record(other), false, &scope()).unwrap();
    assert_ne!(o.span_context.trace_id(), s.span_context.trace_id());
    assert!(s.span_context.is_valid() && s.span_context.is_sampled());
}

#[test]
fn content_is_in_the_conventions_message_shape_only_when_asked_for() {
    let (s, _) = span(&record(converse()), true, &scope()).unwrap();
    let text = |k: &str| match get(&s, k) {
        Some(OtelValue::String(v)) => serde_json::from_str::<Value>(v.as_str()).unwrap(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        text("gen_ai.input.messages"),
        json!([{"role": "user", "parts": [{"type": "text", "content": "hello"}, {"type": "image"}]}])
    );
    assert_eq!(
        text("gen_ai.system_instructions"),
        json!([{"type": "text", "content": "be brief"}])
    );
    assert_eq!(
        text("gen_ai.output.messages"),
        json!([{"role": "assistant", "finish_reason": "tool_use", "parts": [
            {"type": "text", "content": "hi"},
            {"type": "tool_call", "id": "t1", "name": "search", "arguments": {"q": "x"}}]}])
    );
}

#[test]
fn openai_anthropic_and_responses_bodies_convert_too() {
    let (system, msgs) = messages::input(&json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]}));
    assert!(system.is_none());
    assert_eq!(
        msgs,
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "rules"}]},
            {"role": "user", "parts": [{"type": "text", "content": "q"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]}])
    );
    let out = messages::output(
        &json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a"}}]}),
    );
    assert_eq!(
        out,
        json!([{"role": "assistant", "finish_reason": "stop", "parts": [{"type": "text", "content": "a"}]}])
    );
    // Anthropic Messages.
    let out = messages::output(
        &json!({"role": "assistant", "stop_reason": "end_turn", "content": [{"type": "text", "text": "b"}, {"type": "tool_use", "id": "u", "name": "n", "input": {}}]}),
    );
    assert_eq!(out[0]["parts"][1]["type"], "tool_call");
    assert_eq!(out[0]["finish_reason"], "end_turn");
    // Responses.
    let (_, msgs) = messages::input(&json!({"input": "plain question", "instructions": "sys"}));
    assert_eq!(
        msgs,
        json!([{"role": "user", "parts": [{"type": "text", "content": "plain question"}]}])
    );
    let out = messages::output(
        &json!({"status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": "c"}]}]}),
    );
    assert_eq!(out[0]["parts"], json!([{"type": "text", "content": "c"}]));
    // Titan-style prompt bodies.
    let (_, msgs) = messages::input(&json!({"inputText": "t"}));
    assert_eq!(msgs[0]["parts"][0]["content"], "t");
    // Nothing recognisable: empty, never a panic.
    assert_eq!(messages::input(&json!(7)).1, json!([]));
    assert_eq!(messages::output(&json!("x")), json!([]));
}

#[test]
fn a_throttled_call_is_an_error_span_and_counts_only_as_a_throttle() {
    let mut v = converse();
    v["errorCode"] = "ThrottlingException".into();
    v["logbook"]["httpStatus"] = 429.into();
    v["logbook"]["errorMessage"] = "Too many requests".into();
    v["output"] = Value::Null;
    let (s, f) = span(&record(v), false, &scope()).unwrap();
    assert_eq!(
        s.status,
        Status::error("ThrottlingException: Too many requests")
    );
    assert_eq!(get(&s, "error.type"), Some(&"ThrottlingException".into()));
    assert_eq!(f.outcome, CallOutcome::Throttled);
    assert!(!f.outcome.invoked(f.reached_model));
    // A 500 without an error code is an error span too.
    let mut v = converse();
    v["logbook"]["httpStatus"] = 502.into();
    let (s, f) = span(&record(v), false, &scope()).unwrap();
    assert_eq!(s.status, Status::error("HTTP 502"));
    assert_eq!(f.outcome, CallOutcome::ServerError);
}

#[test]
fn names_for_operations_and_providers() {
    assert_eq!(
        operation_name("Embeddings", "text-embedding-3-small"),
        "embeddings"
    );
    assert_eq!(
        operation_name("InvokeModel", "amazon.titan-embed-text-v2:0"),
        "embeddings"
    );
    assert_eq!(operation_name("InvokeModel", "anthropic.claude"), "chat");
    assert_eq!(
        operation_name("Completions", "gpt-3.5-turbo-instruct"),
        "text_completion"
    );
    assert_eq!(operation_name("Responses", "gpt-4o"), "chat");
    assert_eq!(provider_name(Some("mock"), Some("bedrock")), "logbook.mock");
    assert_eq!(provider_name(None, Some("openai")), "openai");
    assert_eq!(provider_name(None, None), "aws.bedrock");
}

#[test]
fn the_format_takes_records_only_and_forgets_on_reset() {
    let mut f = SpanFormat::new(false);
    let entry = |seq: u64, kind: Kind, payload: Vec<u8>| Entry {
        seq,
        time_ms: 1,
        kind,
        version: 1,
        payload,
    };
    assert_eq!(
        f.add(entry(1, Kind::TrailEvent, b"{}".to_vec())).unwrap(),
        0
    );
    assert_eq!(
        f.add(entry(2, Kind::Record, b"not json".to_vec())).unwrap(),
        0
    );
    assert!(f.add(entry(3, Kind::Record, record(converse()))).unwrap() > 0);
    let b = f.take().unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].spans.len(), 1);
    assert!(f.take().unwrap().is_empty());
    f.add(entry(4, Kind::Record, record(converse()))).unwrap();
    f.reset();
    assert!(f.take().unwrap().is_empty());
}

#[test]
fn hostile_records_never_panic() {
    for v in [
        json!({}),
        json!({"timestamp": "2026-12-03T10:00:00Z", "logbook": {"latencyMs": 9223372036854775807i64}}),
        json!({"timestamp": "not a time", "logbook": {"latencyMs": -5, "httpStatus": 99999}}),
        json!({"input": {"inputBodyJson": {"messages": "not a list", "inferenceConfig": {"maxTokens": "x"}}}}),
        json!({"output": {"outputBodyJson": {"choices": [1, "two", null]}}}),
        json!({"requestMetadata": {"k": {"nested": true}}, "modelId": 5}),
    ] {
        let _ = span(&record(v), true, &scope());
    }
}

#[test]
fn header_values_never_show_in_debug_output() {
    let c = OtlpConfig {
        endpoint: "http://127.0.0.1:4318".into(),
        protocol: Protocol::HttpProtobuf,
        headers: [("x-api-key".to_string(), "secret-value".to_string())].into(),
        content: false,
        service_name: "logbook".into(),
        instance_id: "n".into(),
        metrics_interval: Duration::from_secs(60),
        metrics: true,
        timeout: Duration::from_secs(10),
    };
    let d = format!("{c:?}");
    assert!(
        d.contains("x-api-key") && !d.contains("secret-value"),
        "{d}"
    );
}

/// A one-shot HTTP server answering any request with a `len`-byte body.
async fn answering(len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = s.read(&mut buf).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ncontent-type: application/x-protobuf\r\n\r\n");
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&vec![0u8; len]).await;
    });
    format!("http://{addr}/v1/traces")
}

#[tokio::test]
async fn a_collector_answer_over_4_mib_is_refused_as_it_arrives() {
    use opentelemetry_http::HttpClient as _;
    let client = Http(reqwest::Client::new());
    let req = |url: String| {
        opentelemetry_http::Request::builder()
            .method("POST")
            .uri(url)
            .body(bytes::Bytes::from_static(b"x"))
            .unwrap()
    };
    let ok = client.send_bytes(req(answering(10).await)).await.unwrap();
    assert_eq!(ok.body().len(), 10);
    let e = client
        .send_bytes(req(answering(MAX_RESPONSE_BYTES + 1).await))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over 4 MiB"), "{e}");
}
