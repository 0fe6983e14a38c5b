#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]
//! The Logs Insights engine end to end over a real store: queries from the reference and
//! the seed, checked against answers computed directly from the generated records.

use logbook_query::{Engine, Language, QueryError, QueryRequest};
use logbook_store::{parse_row, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Rec {
    rid: String,
    ts: String,
    model: String,
    arn: String,
    inp: i64,
    out: i64,
    team: String,
    prompt: String,
}

fn records() -> Vec<Rec> {
    let models = [
        "anthropic.claude-3-haiku",
        "amazon.nova-lite-v1:0",
        "meta.llama3",
    ];
    let arns = [
        "arn:aws:sts::123456789012:assumed-role/ci-runner/job1",
        "arn:aws:sts::123456789012:assumed-role/analytics-Team/s2",
        "arn:aws:iam::123456789012:user/alice",
    ];
    (0..60)
        .map(|i| Rec {
            rid: format!("req-{i:03}"),
            ts: format!(
                "2025-03-11T{:02}:{:02}:{:02}Z",
                i / 20,
                (i * 7) % 60,
                i % 60
            ),
            model: models[i % 3].into(),
            arn: arns[(i / 2) % 3].into(),
            inp: 10 + i as i64,
            out: (i as i64 * 37) % 101,
            team: format!("team-{}", i % 4),
            prompt: if i == 42 {
                "find the rare-phrase here".into()
            } else {
                format!("prompt {i}")
            },
        })
        .collect()
}

fn line(r: &Rec) -> String {
    serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": r.ts,
        "accountId": "123456789012", "identity": {"arn": r.arn}, "region": "us-east-1",
        "requestId": r.rid, "operation": "Converse", "modelId": r.model,
        "input": {"inputContentType": "application/json",
                  "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": r.prompt}]},
                                                 {"role": "assistant", "content": [{"text": "ok"}]}]},
                  "inputTokenCount": r.inp},
        "output": {"outputContentType": "application/json",
                   "outputBodyJson": {"stopReason": "end_turn", "metrics": {"latencyMs": r.out * 10},
                                      "usage": {"inputTokens": r.inp, "outputTokens": r.out}},
                   "outputTokenCount": r.out},
        "requestMetadata": {"team": r.team}
    })
    .to_string()
}

fn engine() -> (tempfile::TempDir, Engine, Vec<Rec>) {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group("/aws/bedrock/invocations").unwrap();
    let recs = records();
    // Half in Parquet files, half in the in-memory tail.
    let rows: Vec<_> = recs[..30]
        .iter()
        .map(|r| parse_row(&line(r)).unwrap())
        .collect();
    store.import_rows("/aws/bedrock/invocations", rows).unwrap();
    let entries: Vec<_> = recs[30..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v: serde_json::Value = serde_json::from_str(&line(r)).unwrap();
            v["logbook"] = serde_json::json!({"destination": {"bucket": "", "keyPrefix": "", "logGroup": "/aws/bedrock/invocations"}});
            logbook_journal::Entry { kind: logbook_journal::Kind::Record, version: 1, seq: i as u64, time_ms: 0, payload: v.to_string().into_bytes() }
        })
        .collect();
    store.add_entries(&entries);
    (d, Engine::new(store, None), recs)
}

fn run(e: &Engine, q: &str) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), QueryError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(e.run(&QueryRequest {
        groups: vec!["/aws/bedrock/invocations".into()],
        start_ms: 0,
        end_ms: i64::MAX / 2,
        query: q.into(),
        language: if q.to_ascii_lowercase().starts_with("select") {
            Language::Sql
        } else {
            Language::Insights
        },
        limit: 10_000,
        after_seq: 0,
        content: Default::default(),
    }))?;
    Ok((r.columns, r.rows))
}

fn cell(rows: &[Vec<Option<String>>], r: usize, c: usize) -> String {
    rows[r][c].clone().unwrap_or_default()
}

#[test]
fn seed_token_totals_by_model_with_unqualified_names() {
    let (_d, e, recs) = engine();
    let (cols, rows) = run(&e, "stats sum(inputTokenCount) as totalInput, sum(outputTokenCount) as totalOutput by modelId | sort modelId asc").unwrap();
    assert_eq!(cols, ["modelId", "totalInput", "totalOutput"]);
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &recs {
        let w = want.entry(r.model.clone()).or_default();
        w.0 += r.inp;
        w.1 += r.out;
    }
    let got: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                (
                    r[1].clone().unwrap().parse().unwrap(),
                    r[2].clone().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    // The qualified form gives the same answer.
    let (_, rows2) = run(&e, "stats sum(input.inputTokenCount) as totalInput, sum(output.outputTokenCount) as totalOutput by modelId | sort modelId asc").unwrap();
    assert_eq!(rows, rows2);
}

#[test]
fn filters_regex_substring_in_and_not() {
    let (_d, e, recs) = engine();
    let n = |q: &str| run(&e, q).unwrap().1.len();
    let want = recs.iter().filter(|r| r.arn.contains("ci-runner")).count();
    assert_eq!(
        n(r"filter identity.arn like /assumed-role\/ci-runner/"),
        want
    );
    assert_eq!(n("filter identity.arn like 'ci-runner'"), want);
    assert_eq!(n("filter identity.arn like /(?i)ANALYTICS/ and operation in [\"Converse\", \"ConverseStream\"]"), recs.iter().filter(|r| r.arn.contains("analytics")).count());
    assert_eq!(
        n("filter identity.arn not like /ci-runner/"),
        recs.len() - want
    );
    assert_eq!(
        n("filter output.outputTokenCount > 50"),
        recs.iter().filter(|r| r.out > 50).count()
    );
    assert_eq!(
        n("filter outputTokenCount >= 50 and not (inputTokenCount < 40)"),
        recs.iter().filter(|r| r.out >= 50 && r.inp >= 40).count()
    );
    assert_eq!(n("filter input.inputBodyJson like /rare-phrase/"), 1);
    assert_eq!(n("filter modelId =~ /nova/ or modelId = 'meta.llama3'"), 40);
    assert_eq!(n("filter inputTokenCount in [10, 11, 12]"), 3);
    assert_eq!(n("filter requestMetadata.team = 'team-1'"), 15);
    assert_eq!(
        n("filter output.outputBodyJson.metrics.latencyMs > 500"),
        recs.iter().filter(|r| r.out * 10 > 500).count()
    );
}

#[test]
fn fields_sort_limit_and_ptr() {
    let (_d, e, recs) = engine();
    let (cols, rows) = run(
        &e,
        "fields @timestamp, requestId, outputTokenCount | sort outputTokenCount desc | limit 10",
    )
    .unwrap();
    assert_eq!(
        cols,
        ["@timestamp", "requestId", "outputTokenCount", "@ptr"]
    );
    assert_eq!(rows.len(), 10);
    let mut outs: Vec<i64> = recs.iter().map(|r| r.out).collect();
    outs.sort_unstable_by(|a, b| b.cmp(a));
    let got: Vec<i64> = rows
        .iter()
        .map(|r| r[2].clone().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, outs[..10]);
    assert!(cell(&rows, 0, 3).ends_with("@/aws/bedrock/invocations"));
    // Default projection and order: @timestamp, @message, newest first.
    let (cols, rows) = run(&e, "filter modelId = 'meta.llama3' | limit 2").unwrap();
    assert_eq!(cols, ["@timestamp", "@message", "@ptr"]);
    assert_eq!(cell(&rows, 0, 0), "2025-03-11 02:53:59.000");
    // Arithmetic and functions.
    let (_, rows) = run(&e, "filter requestId = 'req-005' | fields inputTokenCount + outputTokenCount as tok, strlen(modelId) as l, toupper(substr(modelId, 0, 4)) as p, outputTokenCount / 2 as half, 2 ^ 3 as e, concat(requestId, '-', modelId) as c, strcontains(modelId, 'llama') as has, ispresent(errorCode) as err, toMillis(@timestamp) as ms").unwrap();
    let r5 = &recs[5];
    assert_eq!(cell(&rows, 0, 0), (r5.inp + r5.out).to_string());
    assert_eq!(cell(&rows, 0, 1), r5.model.len().to_string());
    assert_eq!(cell(&rows, 0, 2), r5.model[..4].to_uppercase());
    assert_eq!(cell(&rows, 0, 3), format!("{}", r5.out as f64 / 2.0));
    assert_eq!(cell(&rows, 0, 4), "8");
    assert_eq!(cell(&rows, 0, 5), format!("req-005-{}", r5.model));
    assert_eq!(cell(&rows, 0, 6), "1");
    assert_eq!(cell(&rows, 0, 7), "false");
}

#[test]
fn stats_bin_pct_distinct_earliest_latest() {
    let (_d, e, recs) = engine();
    let (cols, rows) = run(&e, "stats count(*) by bin(1h)").unwrap();
    assert_eq!(cols, ["bin(1h)", "count(*)"]);
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("2025-03-11 00:00:00.000".to_string(), "20".to_string()),
            ("2025-03-11 01:00:00.000".into(), "20".into()),
            ("2025-03-11 02:00:00.000".into(), "20".into())
        ]
    );
    let (_, rows) = run(&e, "stats count_distinct(identity.arn) as callers, count(*) as n, avg(outputTokenCount) as a, pct(outputTokenCount, 50) as p50, max(inputTokenCount) as mx by modelId | sort modelId asc").unwrap();
    assert_eq!(rows.len(), 3);
    let m0 = cell(&rows, 0, 0);
    let of_m0: Vec<&Rec> = recs.iter().filter(|r| r.model == m0).collect();
    let callers: std::collections::BTreeSet<&str> = of_m0.iter().map(|r| r.arn.as_str()).collect();
    assert_eq!(cell(&rows, 0, 1), callers.len().to_string());
    assert_eq!(cell(&rows, 0, 2), of_m0.len().to_string());
    let mut outs: Vec<i64> = of_m0.iter().map(|r| r.out).collect();
    outs.sort_unstable();
    let avg = outs.iter().sum::<i64>() as f64 / outs.len() as f64;
    assert_eq!(cell(&rows, 0, 3), format!("{avg}"));
    let median = (outs[outs.len() / 2 - 1] + outs[outs.len() / 2]) as f64 / 2.0;
    assert_eq!(cell(&rows, 0, 4), format!("{median}"));
    let (_, rows) = run(&e, "stats earliest(requestId) as first, latest(requestId) as last, sum(outputTokenCount) / count(*) as mean").unwrap();
    let first = recs.iter().min_by_key(|r| r.ts.clone()).unwrap();
    let last = recs.iter().max_by_key(|r| r.ts.clone()).unwrap();
    assert_eq!(cell(&rows, 0, 0), first.rid);
    assert_eq!(cell(&rows, 0, 1), last.rid);
    let mean = recs.iter().map(|r| r.out).sum::<i64>() as f64 / recs.len() as f64;
    assert_eq!(cell(&rows, 0, 2), format!("{mean}"));
    let (_, rows) = run(&e, "fields datefloor(@timestamp, 1h) as hour | stats sum(inputTokenCount) as inTok by hour, modelId | sort hour asc").unwrap();
    assert_eq!(rows.len(), 9);
    // The top-10 by output tokens across the seed's phrasing.
    let (_, rows) = run(&e, "sort outputTokenCount desc | limit 10").unwrap();
    assert_eq!(rows.len(), 10);
}

#[test]
fn parse_dedup_unnest_and_array_paths() {
    let (_d, e, _recs) = engine();
    let (_, rows) = run(&e, "parse identity.arn \"arn:aws:sts::*:assumed-role/*/*\" as acct, role, session | filter ispresent(role) | stats count(*) as n by role | sort role asc").unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("analytics-Team".into()), Some("20".into())],
            vec![Some("ci-runner".into()), Some("20".into())]
        ]
    );
    let (_, rows) = run(&e, "parse identity.arn /assumed-role\\/(?<role>[^\\/]+)\\// | stats count(*) by role | sort role").unwrap();
    assert_eq!(rows.len(), 3, "non-matching rows stay, with a null role");
    let (cols, rows) = run(
        &e,
        "fields @timestamp, identity.arn, modelId | sort @timestamp desc | dedup identity.arn",
    )
    .unwrap();
    assert_eq!(cols, ["@timestamp", "identity.arn", "modelId", "@ptr"]);
    assert_eq!(rows.len(), 3);
    let (_, rows) = run(&e, "fields input.inputBodyJson.messages.0.content.0.text as firstPrompt | filter firstPrompt like /rare/ | fields strlen(firstPrompt) as promptLen").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(cell(&rows, 0, 1), "25");
    let (_, rows) = run(&e, "fields jsonParse(@message) as j | unnest j.input.inputBodyJson.messages into m | stats count(*) as n by m.role | sort n").unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("assistant".into()), Some("60".into())],
            vec![Some("user".into()), Some("60".into())]
        ]
    );
}

#[test]
fn errors_are_precise() {
    let (_d, e, _) = engine();
    match run(&e, "fields modelId |\n  stats sum(x) bogus") {
        Err(QueryError::Syntax(s)) => {
            assert_eq!((s.line, s.column), (2, 16), "{s}");
            assert!(s.message.contains("expected '|'"), "{s}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(&e, "frobnicate x"),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        run(&e, "filter x like"),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        run(&e, "filter modelId like /(/"),
        Err(QueryError::Syntax(_))
    ));
    assert!(matches!(
        run(&e, "stats nosuch(x)"),
        Err(QueryError::Invalid(_))
    ));
    assert!(matches!(
        run(
            &e,
            "stats count(*) by modelId | dedup modelId | sort modelId"
        ),
        Err(QueryError::Invalid(_))
    ));
    assert!(matches!(
        run(&e, "fields strlen(a, b)"),
        Err(QueryError::Invalid(_))
    ));
}

#[test]
fn sql_over_the_same_data() {
    let (_d, e, recs) = engine();
    let (cols, rows) = run(&e, "SELECT model_id, sum(input_token_count) AS i, count(*) AS n FROM invocations GROUP BY model_id ORDER BY model_id").unwrap();
    assert_eq!(cols, ["model_id", "i", "n"]);
    assert_eq!(rows.len(), 3);
    let want: i64 = recs
        .iter()
        .filter(|r| r.model == cell(&rows, 0, 0))
        .map(|r| r.inp)
        .sum();
    assert_eq!(cell(&rows, 0, 1), want.to_string());
    let (_, rows) = run(&e, "SELECT json_get(request_metadata, 'team') AS team, count(*) FROM invocations GROUP BY 1 ORDER BY 1").unwrap();
    assert_eq!(rows.len(), 4);
    let err = run(&e, "SELECT * FROM nowhere").unwrap_err();
    assert!(matches!(err, QueryError::Invalid(_)), "{err:?}");
}
