//! Chargeback over generated records: every call allocated exactly once whatever tags it
//! carries, totals equal to the sum of the records' costs digit for digit, periods cut in
//! the chosen time zone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use logbook_query::report::{Chargeback, Dimension, Period};
use logbook_query::{Engine, Language, QueryRequest};
use logbook_store::schema::scaled_decimal;
use logbook_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::{record, rfc3339};

const GROUP: &str = "g";

struct Call {
    ts: i64,
    tag: Option<&'static str>,
    meta: Option<&'static str>,
    cost: Option<String>,
}

fn entry(seq: u64, c: &Call) -> logbook_journal::Entry {
    let mut v = serde_json::json!({
        "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": rfc3339(c.ts),
        "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/a"},
        "region": "us-east-1", "requestId": format!("req-{seq}"), "operation": "Converse",
        "modelId": if seq.is_multiple_of(2) { "amazon.nova-lite-v1:0" } else { "gpt-4o-mini" },
        "input": {"inputTokenCount": seq, "cacheReadInputTokenCount": 1, "cacheWriteInputTokenCount": 0},
        "output": {"outputTokenCount": 2 * seq},
        "logbook": {"destination": {"bucket": "", "keyPrefix": "", "logGroup": GROUP}, "cost": c.cost},
    });
    if let Some(t) = c.tag {
        v["logbook"]["principalTags"] = serde_json::json!({"team": t, "env": "prod"});
    }
    if let Some(m) = c.meta {
        v["requestMetadata"] = serde_json::json!({"team": m, "app": "x"});
    }
    record(seq, &v)
}

fn run(e: &Engine, rt: &tokio::runtime::Runtime, c: &Chargeback) -> logbook_query::report::Report {
    let r = rt
        .block_on(e.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: c.sql().unwrap(),
            language: Language::Sql,
            limit: 1_000_000,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap();
    c.report(&r).unwrap()
}

#[test]
fn every_call_is_allocated_once_and_totals_are_exact() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    // 2026-11-30T23:30:00Z is 2026-12-01 00:30 in Berlin.
    let base = 1_796_081_400_000_i64;
    let tags = [Some("search"), Some("ads"), None];
    let metas = [Some("ads"), None, Some("billing")];
    let mut calls = Vec::new();
    let mut state = 7u64;
    for i in 0..3000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = state >> 33;
        let cost = match r % 10 {
            0 => None, // unpriced
            _ => Some(format!("0.{:012}", (r % 999_999_999) * 7 + 1)),
        };
        calls.push(Call {
            ts: base + ((r % 7200) as i64 - 3600) * 1000, // an hour either side of the cut
            tag: tags[(i % 3) as usize],
            meta: metas[((i / 3) % 3) as usize],
            cost,
        });
    }
    let entries: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    store.add_entries(&entries[..1500]);
    store.flush().unwrap();
    store.add_entries(&entries[1500..]);
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let exact_sum: i128 = calls
        .iter()
        .filter_map(|c| c.cost.as_deref())
        .map(|c| scaled_decimal(c).unwrap())
        .sum();
    let exact = logbook_query::report::format_scaled(exact_sum);
    for by in [
        vec![],
        vec!["team"],
        vec!["tag:team", "meta:team"],
        vec!["model", "principal", "meta:app"],
    ] {
        let c = Chargeback {
            by: by.iter().map(|d| Dimension::parse(d).unwrap()).collect(),
            period: Period::Day,
            tz: "UTC".into(),
        };
        let r = run(&engine, &rt, &c);
        assert_eq!(r.total.calls, 3000, "{by:?}");
        assert_eq!(r.total.cost, exact, "{by:?}");
        assert_eq!(
            r.total.unpriced_calls,
            calls.iter().filter(|c| c.cost.is_none()).count() as u64
        );
        let rows_sum: i128 = r
            .rows
            .iter()
            .map(|row| scaled_decimal(&row.cost).unwrap())
            .sum();
        assert_eq!(rows_sum, exact_sum, "{by:?}");
    }
    // The allocation rule: the principal tag wins over requestMetadata, which fills in.
    let c = Chargeback {
        by: vec![Dimension::parse("team").unwrap()],
        period: Period::Month,
        tz: "UTC".into(),
    };
    let r = run(&engine, &rt, &c);
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for call in &calls {
        let month = &rfc3339(call.ts)[..7];
        let team = call.tag.or(call.meta).unwrap_or("(none)");
        *want.entry((month.to_string(), team.into())).or_default() += 1;
    }
    let got: BTreeMap<(String, String), u64> = r
        .rows
        .iter()
        .map(|row| ((row.period.clone(), row.values[0].clone()), row.calls))
        .collect();
    assert_eq!(got, want);
    // Days cut in Berlin: a call at 23:30 UTC on Nov 30 is on Dec 1 there.
    let day_of = |tz: &str| {
        let c = Chargeback {
            by: vec![],
            period: Period::Day,
            tz: tz.into(),
        };
        run(&engine, &rt, &c)
            .rows
            .into_iter()
            .map(|r| (r.period, r.calls))
            .collect::<BTreeMap<_, _>>()
    };
    let utc = day_of("UTC");
    let berlin = day_of("Europe/Berlin");
    let utc_nov30 = calls
        .iter()
        .filter(|c| rfc3339(c.ts).starts_with("2026-11-30"))
        .count() as u64;
    let berlin_nov30 = calls
        .iter()
        .filter(|c| c.ts < base - 30 * 60 * 1000) // before 23:00Z
        .count() as u64;
    assert_eq!(utc.get("2026-11-30"), Some(&utc_nov30));
    assert_eq!(berlin.get("2026-11-30"), Some(&berlin_nov30));
    assert_eq!(berlin.values().sum::<u64>(), 3000);
    assert!(berlin_nov30 < utc_nov30);
}

#[test]
fn the_focus_export_has_the_spec_columns_and_the_same_total() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path()).unwrap());
    store.create_group(GROUP).unwrap();
    let base = 1_796_081_400_000_i64; // 2026-11-30T23:30Z
    let calls: Vec<Call> = (0..40)
        .map(|i| Call {
            ts: base + (i - 20) * 60_000 * 3,
            tag: if i % 2 == 0 { Some("search") } else { None },
            meta: Some("ads"),
            cost: Some(format!("0.{:012}", 1_234_567 * (i + 1))),
        })
        .collect();
    let entries: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    store.add_entries(&entries);
    let engine = Engine::new(store.clone(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Chargeback {
        by: vec![Dimension::parse("team").unwrap()],
        period: Period::Day,
        tz: "Europe/Berlin".into(),
    };
    let r = rt
        .block_on(engine.run(&QueryRequest {
            groups: vec![GROUP.into()],
            start_ms: 0,
            end_ms: i64::MAX / 2,
            query: c.focus_sql().unwrap(),
            language: Language::Sql,
            limit: 1_000_000,
            after_seq: 0,
            content: Default::default(),
        }))
        .unwrap();
    let csv = c.focus_csv(&r).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "BilledCost",
        "BillingCurrency",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ServiceName",
        "Tags",
        "EffectiveCost",
        "ListCost",
    ] {
        assert!(header.contains(&col), "{col}");
    }
    let idx = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<String>> = lines
        .map(|l| {
            // Split a CSV line with quoted fields.
            let mut out = Vec::new();
            let mut cur = String::new();
            let mut q = false;
            let mut chars = l.chars().peekable();
            while let Some(ch) = chars.next() {
                match (ch, q) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        cur.push('"');
                        chars.next();
                    }
                    ('"', _) => q = !q,
                    (',', false) => out.push(std::mem::take(&mut cur)),
                    _ => cur.push(ch),
                }
            }
            out.push(cur);
            out
        })
        .collect();
    let total: i128 = rows
        .iter()
        .map(|r| scaled_decimal(&r[idx("BilledCost")]).unwrap())
        .sum();
    let want: i128 = calls
        .iter()
        .map(|c| scaled_decimal(c.cost.as_deref().unwrap()).unwrap())
        .sum();
    assert_eq!(total, want);
    // Berlin days in UTC: the day starting 2026-12-01 00:00 local starts 2026-11-30T23:00:00Z.
    let starts: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r[idx("ChargePeriodStart")].as_str())
        .collect();
    assert_eq!(
        starts.into_iter().collect::<Vec<_>>(),
        ["2026-11-29T23:00:00Z", "2026-11-30T23:00:00Z"]
    );
    assert!(rows
        .iter()
        .all(|r| r[idx("BillingCurrency")] == "USD" && r[idx("ChargeCategory")] == "Usage"));
    let tags: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r[idx("Tags")].as_str()).collect();
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        [r#"{"team":"ads"}"#, r#"{"team":"search"}"#]
    );
    let ends: Vec<&str> = rows
        .iter()
        .map(|r| r[idx("ChargePeriodEnd")].as_str())
        .collect();
    assert!(ends.contains(&"2026-12-01T23:00:00Z"), "{ends:?}");
}
