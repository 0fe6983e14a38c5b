//! Text searches through the store files' text index (issue #13): every form of a text
//! filter over the bodies or the whole record must answer exactly what the records say,
//! whether the index narrows the read or not, and the index must narrow it when the
//! filter needs bytes few blocks hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::{Engine, Language, QueryRequest};
use logbook_store::textindex::BLOCK_ROWS;
use logbook_store::Store;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::{rfc3339, rt};

const GROUP: &str = "g";
/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000_000;
const N: u64 = 5 * BLOCK_ROWS + 1234;

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "please",
    "summarise",
    "report",
    "about",
    "data",
    "with",
    "for",
    "and",
    "table",
    "chart",
    "value",
    "user",
    "system",
    "review",
    "code",
];

/// Record `i`'s prompt and answer: words, with rare pieces in a few records.
fn texts(i: u64) -> (String, String) {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut words = |n: usize| {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                WORDS[(state % WORDS.len() as u64) as usize]
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut prompt = format!("start-{i}-x {}", words(30));
    let mut answer = words(20);
    match i {
        3 | 9_000 | 17_000 => prompt.push_str(" rare-phrase"),
        12_000 => prompt.push_str(" A Zebra Crossing"),
        5_000 => answer.push_str(" the-answer-needle"),
        15_000 => prompt.push_str(" my desk-lamp broke"),
        _ => {}
    }
    (prompt, answer)
}

fn entry(i: u64) -> logbook_journal::Entry {
    let (prompt, answer) = texts(i);
    let v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
        "timestamp": rfc3339(BASE + i as i64 * 1000),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/u"},
        "region": "us-east-1", "requestId": format!("req-{i}"), "operation": "Converse",
        "modelId": "amazon.nova-lite-v1:0",
        "input": {"inputBodyJson": {"messages": [{"content": [{"text": prompt}], "role": "user"}]},
                  "inputTokenCount": 10},
        "output": {"outputBodyJson": {"output": {"message": {"content": [{"text": answer}]}}},
                   "outputTokenCount": 5},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}},
    });
    logbook_journal::Entry {
        kind: logbook_journal::Kind::Record,
        version: 1,
        seq: i + 1,
        time_ms: 0,
        payload: v.to_string().into_bytes(),
    }
}

/// Request ids a query returns, and the records it read.
fn ids(e: &Engine, language: Language, query: &str) -> (BTreeSet<String>, u64) {
    let r = rt()
        .block_on(e.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: BASE - 1000,
            end_ms: BASE + 86_400_000,
            query: query.into(),
            language,
            limit: 100_000,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let ids = r
        .rows
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    (ids, r.stats.records_scanned)
}

/// Every record's whole text (`@message`), made once.
fn messages() -> &'static [String] {
    static M: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        (0..N)
            .map(|i| String::from_utf8(entry(i).payload).unwrap())
            .collect()
    })
}

/// The records whose whole text (`@message`) satisfies `keep`.
fn truth(keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    messages()
        .iter()
        .enumerate()
        .filter(|(_, m)| keep(m))
        .map(|(i, _)| format!("req-{i}"))
        .collect()
}

/// (query, language, the records it must return, whether the index must narrow the read)
fn cases() -> Vec<(&'static str, Language, BTreeSet<String>, bool)> {
    let has = |s: &'static str| move |m: &str| m.contains(s);
    let has_ci = |s: &'static str| move |m: &str| m.to_lowercase().contains(&s.to_lowercase());
    let spanning = r#"Json":{"messages":[{"content":[{"text":"start-777-x"#;
    let i = Language::Insights;
    let q = Language::Sql;
    vec![
        ("filter input.inputBodyJson like /rare-phrase/ | fields requestId", i, truth(has("rare-phrase")), true),
        ("filter input.inputBodyJson like 'rare-phrase' | fields requestId", i, truth(has("rare-phrase")), true),
        ("filter @message like /rare-phrase/ | fields requestId", i, truth(has("rare-phrase")), true),
        ("filter @message like /(?i)A ZEBRA crossing/ | fields requestId", i, truth(has_ci("a zebra crossing")), true),
        ("filter output.outputBodyJson like /the-answer-needle/ | fields requestId", i, truth(has("the-answer-needle")), true),
        // The needle starts in the stored message and ends in the body put back into it.
        (
            r#"filter @message like 'Json":{"messages":[{"content":[{"text":"start-777-x' | fields requestId"#,
            i,
            truth(has(spanning)),
            true,
        ),
        ("filter @message like /rare-phrase|the-answer-needle/ | fields requestId", i, truth(|m| m.contains("rare-phrase") || m.contains("the-answer-needle")), true),
        ("filter input.inputBodyJson like /rare-phrase/ and input.inputBodyJson like /start-9000-x/ | fields requestId", i, truth(|m| m.contains("rare-phrase") && m.contains("start-9000-x")), true),
        // Nothing to narrow: a negation, a pattern without three literal bytes in a row.
        ("filter input.inputBodyJson not like /rare-phrase/ | fields requestId", i, truth(|m| !input_body(m).contains("rare-phrase")), false),
        ("filter input.inputBodyJson like /ra.e/ | fields requestId", i, truth(|m| regex::Regex::new("ra.e").unwrap().is_match(&input_body(m))), false),
        ("SELECT request_id FROM invocations WHERE input_body_json LIKE '%rare-phrase%'", q, truth(has("rare-phrase")), true),
        ("SELECT request_id FROM invocations WHERE input_body_json ILIKE '%RARE-PHRASE%'", q, truth(has("rare-phrase")), true),
        ("SELECT request_id FROM invocations WHERE message ~* 'a zebra CROSSING'", q, truth(has_ci("a zebra crossing")), true),
        ("SELECT request_id FROM invocations WHERE regexp_like(message, 'ZEBRA', 'i')", q, truth(has_ci("zebra")), true),
        ("SELECT request_id FROM invocations WHERE contains(output_body_json, 'answer-needle')", q, truth(has("answer-needle")), true),
        // k and s fold with non-ASCII letters: the run is cut there, what is left narrows.
        ("SELECT request_id FROM invocations WHERE input_body_json ILIKE '%DESK-LAMP broke%'", q, truth(has_ci("desk-lamp broke")), true),
        ("SELECT request_id FROM invocations WHERE input_body_json LIKE '%rare-phrase%' OR output_body_json LIKE '%the-answer-needle%'", q, truth(|m| m.contains("rare-phrase") || m.contains("the-answer-needle")), true),
        ("SELECT request_id FROM invocations WHERE input_body_json LIKE '%rare-phrase%' OR model_id = 'x'", q, truth(has("rare-phrase")), false),
        ("SELECT request_id FROM invocations WHERE input_body_json LIKE '%no such text anywhere%'", q, BTreeSet::new(), true),
    ]
}

fn input_body(m: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(m).unwrap();
    v["input"]["inputBodyJson"].to_string()
}

fn check(e: &Engine, total: u64, when: &str) {
    for (query, lang, want, narrows) in cases() {
        let (got, scanned) = ids(e, lang, query);
        assert_eq!(got, want, "{when}: {query}");
        if narrows {
            assert!(
                scanned < total,
                "{when}: {query} read {scanned} of {total} records"
            );
        } else {
            assert_eq!(scanned, total, "{when}: {query}");
        }
    }
}

#[test]
fn text_searches_answer_exactly_and_read_only_the_blocks_that_may_match() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let entries: Vec<_> = (0..N).map(entry).collect();
    // Two files (the second starts mid-block), then a tail.
    let cut = (2 * BLOCK_ROWS + 77) as usize;
    store.add_entries(&entries[..cut]);
    store.flush().unwrap();
    store.add_entries(&entries[cut..(N - 300) as usize]);
    store.flush().unwrap();
    store.add_entries(&entries[(N - 300) as usize..]);
    let engine = Engine::new(store.clone(), None);
    check(&engine, N, "two files and a tail");
    // The needle is in three records: at most three blocks and the tail are read.
    let (_, scanned) = ids(
        &engine,
        Language::Insights,
        "filter input.inputBodyJson like /rare-phrase/ | fields requestId",
    );
    assert!(scanned <= 3 * BLOCK_ROWS + 300, "read {scanned}");
    // Compaction writes one file; its index is built anew from the rows.
    store.flush().unwrap();
    store.compact(BASE + 400 * 86_400_000).unwrap();
    let snap = store.snapshot(GROUP, BASE, BASE + 86_400_000).unwrap();
    assert_eq!(snap.files.len(), 1, "compacted into one day file");
    let idx = store.text_index(&snap.files[0].0).unwrap().unwrap();
    assert_eq!(idx.rows, N);
    assert_eq!(idx.blocks.len() as u64, N.div_ceil(BLOCK_ROWS));
    let engine = Engine::new(store.clone(), None);
    check(&engine, N, "one compacted file");
}
