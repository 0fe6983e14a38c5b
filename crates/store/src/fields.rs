//! Field discovery: the dotted paths (`input.inputBodyJson.messages.0.role`) found in a
//! group's records, as Logs Insights discovers JSON fields, kept per group so queries can
//! resolve unqualified names.

use arrow_array::{Array, RecordBatch, StringArray, TimestampMillisecondArray};
use serde_json::Value;
use std::collections::BTreeSet;

/// At most this many paths per group.
pub const MAX_FIELDS: usize = 1000;
/// Rows sampled per batch.
const SAMPLE_ROWS: usize = 16;
/// Array elements looked at per array.
const MAX_INDEX: usize = 4;

/// Add the dotted paths of one JSON value.
pub fn flatten(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if out.len() >= MAX_FIELDS {
        return;
    }
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(v, &join(k), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().take(MAX_INDEX).enumerate() {
                flatten(v, &join(&i.to_string()), out);
            }
        }
        _ => {
            if !prefix.is_empty() && out.len() < MAX_FIELDS {
                out.insert(prefix.to_string());
            }
        }
    }
}

/// Add the paths found in a sample of a batch's records.
pub fn discover_batch(b: &RecordBatch, out: &mut BTreeSet<String>) {
    let text = |c: usize| b.column(c).as_any().downcast_ref::<StringArray>();
    let (Some(msgs), Some(inb), Some(outb)) = (
        text(crate::schema::MESSAGE),
        text(crate::schema::INPUT_BODY),
        text(crate::schema::OUTPUT_BODY),
    ) else {
        return;
    };
    let n = msgs.len();
    let step = (n / SAMPLE_ROWS).max(1);
    for i in (0..n).step_by(step).take(SAMPLE_ROWS) {
        if msgs.is_valid(i) {
            fn get(a: &StringArray, i: usize) -> Option<&str> {
                a.is_valid(i).then(|| a.value(i))
            }
            let m = crate::schema::rebuild_message(msgs.value(i), get(inb, i), get(outb, i));
            if let Ok(v) = serde_json::from_str::<Value>(&m) {
                flatten(&v, "", out);
            }
        }
    }
}

/// Merge discovered paths, keeping the cap.
pub fn merge(into: &mut BTreeSet<String>, from: &BTreeSet<String>) {
    for f in from {
        if into.len() >= MAX_FIELDS {
            break;
        }
        into.insert(f.clone());
    }
}

/// Earliest and latest timestamp of a batch.
pub fn time_range(b: &RecordBatch) -> Option<(i64, i64)> {
    let ts = b
        .column(crate::schema::TIMESTAMP)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()?;
    let lo = ts.iter().flatten().min()?;
    let hi = ts.iter().flatten().max()?;
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare value has no path; the cap holds; merging adds what is new up to the cap;
    /// a batch's bodies are searched too (they are stored apart from `message`).
    #[test]
    fn discovery_names_body_paths_and_keeps_its_cap() {
        let mut out = BTreeSet::new();
        flatten(&serde_json::json!(5), "", &mut out);
        assert!(out.is_empty(), "{out:?}");
        let mut wide = serde_json::Map::new();
        for i in 0..MAX_FIELDS + 10 {
            wide.insert(format!("k{i}"), serde_json::json!(i));
        }
        flatten(&Value::Object(wide), "", &mut out);
        assert_eq!(out.len(), MAX_FIELDS);
        let mut into = BTreeSet::from(["a".to_string()]);
        merge(
            &mut into,
            &BTreeSet::from(["a".to_string(), "b".to_string()]),
        );
        assert_eq!(into, BTreeSet::from(["a".to_string(), "b".to_string()]));
        let mut full = out.clone();
        merge(&mut full, &BTreeSet::from(["zz".to_string()]));
        assert_eq!(full.len(), MAX_FIELDS);
        let line = r#"{"schemaType":"ModelInvocationLog","schemaVersion":"1.0","timestamp":"2025-03-11T00:38:02Z","accountId":"123456789012","identity":{"arn":"arn:aws:iam::123456789012:user/a"},"region":"us-east-1","requestId":"r","operation":"Converse","modelId":"m","input":{"inputContentType":"application/json","inputBodyJson":{"messages":[{"role":"user"}]},"inputTokenCount":1},"output":{"outputContentType":"application/json","outputBodyJson":{"stopReason":"end_turn"},"outputTokenCount":1}}"#;
        let b = crate::schema::to_batch(&[crate::schema::parse_row(line).unwrap()]).unwrap();
        let mut found = BTreeSet::new();
        discover_batch(&b, &mut found);
        assert!(
            found.contains("input.inputBodyJson.messages.0.role"),
            "{found:?}"
        );
        assert!(
            found.contains("output.outputBodyJson.stopReason"),
            "{found:?}"
        );
        assert!(found.contains("identity.arn"), "{found:?}");
    }

    #[test]
    fn flattens_objects_and_arrays() {
        let v: Value = serde_json::json!({"identity": {"arn": "x"}, "input": {"inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}, "n": 1});
        let mut out = BTreeSet::new();
        flatten(&v, "", &mut out);
        let got: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "identity.arn",
                "input.inputBodyJson.messages.0.content.0.text",
                "input.inputBodyJson.messages.0.role",
                "n"
            ]
        );
    }
}
