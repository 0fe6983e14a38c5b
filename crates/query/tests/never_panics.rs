//! No input makes the Insights parser or the engine panic: random text, and random
//! sequences of the language's own tokens (which reach the compiler and DataFusion).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use logbook_query::{Engine, Language, QueryRequest};
use logbook_store::{parse_row, Store};
use proptest::prelude::*;
use std::sync::Arc;

const TOKENS: &[&str] = &[
    "fields",
    "display",
    "filter",
    "stats",
    "sort",
    "limit",
    "parse",
    "dedup",
    "unnest",
    "into",
    "by",
    "as",
    "asc",
    "desc",
    "and",
    "or",
    "not",
    "in",
    "like",
    "=~",
    "|",
    ",",
    "(",
    ")",
    "[",
    "]",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "@timestamp",
    "@message",
    "@ptr",
    "@log",
    "@logStream",
    "modelId",
    "identity.arn",
    "inputTokenCount",
    "input.inputBodyJson.messages.0.content.0.text",
    "requestMetadata.team",
    "x",
    "`a b`",
    "0",
    "1",
    "2.5",
    "-3",
    "5m",
    "1h",
    "1mo",
    "1q",
    "1y",
    "'s'",
    "\"t*u*\"",
    "/re(?<g>.)/",
    "/(/",
    "count",
    "count_distinct",
    "sum",
    "avg",
    "min",
    "max",
    "pct",
    "stddev",
    "earliest",
    "latest",
    "bin",
    "datefloor",
    "dateceil",
    "strlen",
    "substr",
    "concat",
    "toupper",
    "ispresent",
    "coalesce",
    "isempty",
    "isblank",
    "abs",
    "sqrt",
    "log",
    "greatest",
    "least",
    "fromMillis",
    "toMillis",
    "jsonParse",
    "strcontains",
    "replace",
    "trim",
    "if",
    "#c\n",
    "\n",
];

fn engine() -> (tempfile::TempDir, Engine) {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group("g").unwrap();
    let line = r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2025-03-11T00:38:02Z","accountId":"123456789012","identity":{"arn":"arn:aws:iam::1:user/a"},"region":"us-east-1","requestId":"r1","operation":"Converse","modelId":"m","input":{"inputBodyJson":{"messages":[{"role":"user","content":[{"text":"hi"}]}]},"inputTokenCount":3},"output":{"outputTokenCount":4},"requestMetadata":{"team":"t"}}"#;
    store
        .import_rows("g", vec![parse_row(line).unwrap()])
        .unwrap();
    (d, Engine::new(store, None))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_text(s in "\\PC{0,80}") {
        let _ = logbook_query::insights::parse(&s);
    }

    #[test]
    fn engine_never_panics_on_token_soup(toks in proptest::collection::vec(0..TOKENS.len(), 1..14)) {
        let q: Vec<&str> = toks.iter().map(|i| TOKENS[*i]).collect();
        let q = q.join(" ");
        thread_local! {
            static ENV: (tempfile::TempDir, Engine, tokio::runtime::Runtime) = {
                let (d, e) = engine();
                (d, e, tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
            };
        }
        ENV.with(|(_, e, rt)| {
            let _ = rt.block_on(e.run(&QueryRequest {
                groups: vec!["g".into()],
                start_ms: 0,
                end_ms: i64::MAX / 2,
                query: q.clone(),
                language: Language::Insights,
                limit: 100,
            }));
        });
    }
}
