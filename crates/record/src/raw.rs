//! The one parser of a journaled record, shared by every consumer (the archive, the
//! CloudWatch delivery, the store): each member borrowed as raw JSON, so reading the few a
//! consumer needs costs one pass over the bytes and no copy of the bodies. Field names
//! are Bedrock's (`ModelInvocationLog`), plus Logbook's `logbook` extension.
#![allow(missing_docs)] // the members are the record's own, documented in lib.rs

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRecord<'a> {
    #[serde(borrow)]
    pub schema_type: Option<&'a RawValue>,
    #[serde(borrow)]
    pub schema_version: Option<&'a RawValue>,
    #[serde(borrow)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    pub account_id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub identity: Option<RawIdentity<'a>>,
    #[serde(borrow)]
    pub region: Option<&'a RawValue>,
    #[serde(borrow)]
    pub request_id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub operation: Option<&'a RawValue>,
    #[serde(borrow)]
    pub model_id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub input: Option<RawInput<'a>>,
    #[serde(borrow)]
    pub output: Option<RawOutput<'a>>,
    #[serde(borrow)]
    pub request_metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    pub inference_region: Option<&'a RawValue>,
    #[serde(borrow)]
    pub error_code: Option<&'a RawValue>,
    #[serde(borrow)]
    pub logbook: Option<RawExt<'a>>,
}

#[derive(Deserialize)]
pub struct RawIdentity<'a> {
    #[serde(borrow)]
    pub arn: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawInput<'a> {
    #[serde(borrow)]
    pub input_content_type: Option<&'a RawValue>,
    #[serde(borrow)]
    pub input_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    pub cache_read_input_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    pub cache_write_input_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    pub input_body_json: Option<&'a RawValue>,
    #[serde(borrow)]
    pub input_body_s3_path: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawOutput<'a> {
    #[serde(borrow)]
    pub output_content_type: Option<&'a RawValue>,
    #[serde(borrow)]
    pub output_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    pub output_body_json: Option<&'a RawValue>,
    #[serde(borrow)]
    pub output_body_s3_path: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawExt<'a> {
    #[serde(borrow)]
    pub latency_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    pub time_to_first_token_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    pub http_status: Option<&'a RawValue>,
    #[serde(borrow)]
    pub stream: Option<&'a RawValue>,
    #[serde(borrow)]
    pub provider: Option<&'a RawValue>,
    #[serde(borrow)]
    pub api: Option<&'a RawValue>,
    #[serde(borrow)]
    pub error_message: Option<&'a RawValue>,
    #[serde(borrow)]
    pub destination: Option<RawDestination<'a>>,
    #[serde(borrow)]
    pub cost: Option<&'a RawValue>,
    #[serde(borrow)]
    pub price_catalog: Option<&'a RawValue>,
    #[serde(borrow)]
    pub unpriced: Option<&'a RawValue>,
    #[serde(borrow)]
    pub principal_tags: Option<&'a RawValue>,
    #[serde(borrow)]
    pub trace_parent: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDestination<'a> {
    #[serde(borrow)]
    pub bucket: Option<&'a RawValue>,
    #[serde(borrow)]
    pub key_prefix: Option<&'a RawValue>,
    #[serde(borrow)]
    pub log_group: Option<&'a RawValue>,
    #[serde(borrow)]
    pub large_data: Option<&'a RawValue>,
}

/// A record's text value: JSON strings unquoted, `null` as none, anything else verbatim.
pub fn text(v: Option<&RawValue>) -> Option<String> {
    text_ref(v).map(std::borrow::Cow::into_owned)
}

/// [`text`], borrowed from the record where it can be: a JSON string without escapes is
/// the bytes between its quotes.
pub fn text_ref(v: Option<&RawValue>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = v?.get();
    if raw.starts_with('"') {
        match raw.get(1..raw.len().saturating_sub(1)) {
            Some(inner) if raw.len() >= 2 && raw.ends_with('"') && !inner.contains('\\') => {
                Some(std::borrow::Cow::Borrowed(inner))
            }
            _ => serde_json::from_str::<String>(raw)
                .ok()
                .map(std::borrow::Cow::Owned),
        }
    } else if raw == "null" {
        None
    } else {
        Some(std::borrow::Cow::Borrowed(raw))
    }
}

pub fn int(v: Option<&RawValue>) -> Option<i64> {
    let raw = v?.get();
    let s = raw.trim_matches('"');
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f as i64)
    })
}

pub fn boolean(v: Option<&RawValue>) -> Option<bool> {
    match v?.get() {
        "true" | "\"true\"" => Some(true),
        "false" | "\"false\"" => Some(false),
        _ => None,
    }
}

pub fn json(v: Option<&RawValue>) -> Option<String> {
    json_ref(v).map(str::to_string)
}

/// [`json`], borrowed from the record.
pub fn json_ref(v: Option<&RawValue>) -> Option<&str> {
    let raw = v?.get();
    (raw != "null").then_some(raw)
}

impl<'a> RawRecord<'a> {
    /// Parse a record. A payload that is not a JSON object, or whose `schemaType` is
    /// present and not `ModelInvocationLog`, is refused.
    pub fn parse(payload: &'a [u8]) -> Result<RawRecord<'a>, serde_json::Error> {
        Self::checked(serde_json::from_slice(payload)?)
    }

    /// [`RawRecord::parse`] of text already known to be UTF-8: its strings and bodies are
    /// not validated a second time (from bytes, every borrowed body is; a twentieth of
    /// an import's CPU).
    pub fn parse_str(text: &'a str) -> Result<RawRecord<'a>, serde_json::Error> {
        Self::checked(serde_json::from_str(text)?)
    }

    fn checked(r: RawRecord<'a>) -> Result<RawRecord<'a>, serde_json::Error> {
        if let Some(t) = text(r.schema_type) {
            if t != crate::SCHEMA_TYPE {
                return Err(serde::de::Error::custom(
                    "schemaType is not ModelInvocationLog",
                ));
            }
        }
        Ok(r)
    }

    /// The `logbook.destination` the logging configuration chose, if any.
    pub fn destination(&self) -> Option<&RawDestination<'a>> {
        self.logbook.as_ref().and_then(|l| l.destination.as_ref())
    }
}

/// A whole record without its bodies (the `*Body*` members of `input` and `output`; the
/// `*BodyS3Path` pointers stay): what a reader whose content level is `metadata` sees, and
/// what a log group keeps after its body retention. `None` when `record` is not JSON.
pub fn strip_bodies(record: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(record).ok()?;
    for side in ["input", "output"] {
        if let Some(serde_json::Value::Object(o)) = v.get_mut(side) {
            o.retain(|k, _| !k.contains("Body") || k.ends_with("S3Path"));
        }
    }
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A string without escapes is borrowed between its quotes; one with escapes is
    /// unescaped; anything else is its JSON text; `null` is none. `text` agrees.
    #[test]
    fn text_is_borrowed_unless_it_must_be_unescaped() {
        let v = |s: &str| serde_json::from_str::<Box<RawValue>>(s).unwrap();
        let cases: [(&str, Option<&str>, bool); 7] = [
            (r#""plain""#, Some("plain"), true),
            (r#""""#, Some(""), true),
            (r#""a\"b""#, Some("a\"b"), false),
            (r#""caf\u00e9 \\ x""#, Some("café \\ x"), false),
            ("12", Some("12"), true),
            (r#"{"a":1}"#, Some(r#"{"a":1}"#), true),
            ("null", None, true),
        ];
        for (raw, want, borrowed) in cases {
            let raw = v(raw);
            let got = text_ref(Some(&raw));
            assert_eq!(got.as_deref(), want, "{raw}");
            if let Some(g) = &got {
                assert_eq!(matches!(g, Cow::Borrowed(_)), borrowed, "{raw}");
            }
            assert_eq!(text(Some(&raw)).as_deref(), want, "{raw}");
        }
        assert_eq!(json_ref(Some(&v("null"))), None);
        assert_eq!(json_ref(Some(&v(r#"{"a":"\n"}"#))), Some(r#"{"a":"\n"}"#));
        assert_eq!(text_ref(None), None);
    }

    #[test]
    fn reads_what_consumers_need_and_refuses_what_is_not_a_record() {
        let line = br#"{"schemaType":"ModelInvocationLog","timestamp":"2025-03-11T00:38:02Z","accountId":"123456789012","region":"eu-west-1","input":{"inputBodyJson":{"a":"\u00e9"},"inputTokenCount":"12"},"logbook":{"stream":true,"destination":{"bucket":"b","keyPrefix":"p/","logGroup":"/g","largeData":{"bucket":"l"}}}}"#;
        let r = RawRecord::parse(line).unwrap();
        assert_eq!(text(r.account_id).as_deref(), Some("123456789012"));
        assert_eq!(text(r.region).as_deref(), Some("eu-west-1"));
        let d = r.destination().unwrap();
        assert_eq!(text(d.bucket).as_deref(), Some("b"));
        assert_eq!(text(d.key_prefix).as_deref(), Some("p/"));
        assert_eq!(text(d.log_group).as_deref(), Some("/g"));
        assert_eq!(d.large_data.map(|v| v.get()), Some(r#"{"bucket":"l"}"#));
        let i = r.input.as_ref().unwrap();
        assert_eq!(int(i.input_token_count), Some(12));
        assert_eq!(
            json(i.input_body_json).as_deref(),
            Some(r#"{"a":"\u00e9"}"#)
        );
        assert_eq!(boolean(r.logbook.as_ref().unwrap().stream), Some(true));
        assert!(RawRecord::parse(br#"{"schemaType":"Other"}"#).is_err());
        assert!(RawRecord::parse(b"[1]").is_err());
        assert!(RawRecord::parse(b"{").is_err());
        assert!(
            RawRecord::parse(br#"{"eventVersion":"1.09"}"#).is_ok_and(|r| r.schema_type.is_none())
        );
    }

    /// From text, a record reads as from its bytes, and is refused alike.
    #[test]
    fn parse_str_reads_as_parse_does() {
        let line = r#"{"schemaType":"ModelInvocationLog","timestamp":"2025-03-11T00:38:02Z","requestId":"r\u00e9","input":{"inputBodyJson":{"a":"\u00e9 é"},"inputTokenCount":7},"output":{"outputBodyJson":[1,{"b":null}]}}"#;
        let (a, b) = (
            RawRecord::parse(line.as_bytes()).unwrap(),
            RawRecord::parse_str(line).unwrap(),
        );
        assert_eq!(text(a.request_id), text(b.request_id));
        assert_eq!(text(b.request_id).as_deref(), Some("ré"));
        let body = |r: &RawRecord| json(r.input.as_ref().and_then(|i| i.input_body_json));
        assert_eq!(body(&a), body(&b));
        assert_eq!(body(&b).as_deref(), Some(r#"{"a":"\u00e9 é"}"#));
        let out = |r: &RawRecord| json(r.output.as_ref().and_then(|o| o.output_body_json));
        assert_eq!(out(&a), out(&b));
        assert_eq!(
            int(b.input.as_ref().and_then(|i| i.input_token_count)),
            Some(7)
        );
        for bad in [r#"{"schemaType":"Other"}"#, "[1]", "{", ""] {
            assert!(RawRecord::parse_str(bad).is_err(), "{bad}");
        }
    }
}
