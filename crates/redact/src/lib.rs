//! Redaction of what prompts and answers carry: email addresses, phone numbers, payment
//! card numbers (Luhn-checked), US social security numbers (invalid areas excluded),
//! IBANs (mod-97-checked), AWS access key ids and secret keys, JSON Web Tokens, private
//! keys, IP addresses, and custom patterns. Each match becomes `[EMAIL]`, `[CARD]`, ...;
//! counts per detector are kept.
//!
//! The built-in detectors run as one ASCII regular expression over bytes (one pass, no
//! Unicode tables); checksums then reject what only looks like a number of that kind.
//! Custom patterns are compiled with a size limit (a pattern is configuration, but a
//! pathological one must not eat the gateway's memory).

use regex::bytes::{Regex, RegexBuilder};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors in a redaction profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedactError {
    /// A detector name this build does not know.
    #[error("unknown detector {0:?}: expected one of {1}, or \"all\"")]
    UnknownDetector(String, String),
    /// A custom pattern that does not compile.
    #[error("custom pattern {name:?}: {message}")]
    BadPattern {
        /// Its name.
        name: String,
        /// Why.
        message: String,
    },
    /// A custom name that cannot be a replacement token.
    #[error("custom pattern name {0:?}: use 1 to 40 letters, digits or underscores")]
    BadName(String),
}

/// The built-in detectors: (name, replacement token, pattern).
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "private_key",
        "PRIVATE_KEY",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    ),
    (
        "jwt",
        "JWT",
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    (
        "aws_access_key",
        "AWS_ACCESS_KEY",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
    ),
    (
        "aws_secret_key",
        "AWS_SECRET_KEY",
        r#"(?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret)["']?\s*[:=]\s*["']?[A-Za-z0-9/+]{40}\b"#,
    ),
    (
        "email",
        "EMAIL",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    ),
    (
        "iban",
        "IBAN",
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    ),
    ("card", "CARD", r"\b[0-9](?:[ -]?[0-9]){12,18}\b"),
    ("ssn", "SSN", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"),
    (
        "phone",
        "PHONE",
        r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?|\b[0-9]{2,4}[ .-])[0-9]{3,4}[ .-][0-9]{3,4}\b|\+[0-9]{8,15}\b",
    ),
    (
        "ip_address",
        "IP",
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b|\b(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}:){0,5}[0-9a-fA-F]{1,4}\b",
    ),
];

/// Names of the built-in detectors.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|d| d.0).collect()
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn iban_ok(m: &[u8]) -> bool {
    let s: Vec<u8> = m.iter().copied().filter(|c| *c != b' ').collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let (head, tail) = s.split_at(4);
    let mut rem = 0u32;
    for c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn_ok(m: &[u8]) -> bool {
    let area = &m[0..3];
    area != b"000" && area != b"666" && area[0] != b'9' && &m[4..6] != b"00" && &m[7..11] != b"0000"
}

/// Does the match `m` of detector `name` pass its checksum?
fn valid(name: &str, m: &[u8]) -> bool {
    match name {
        "card" => {
            let digits: Vec<u8> = m.iter().copied().filter(u8::is_ascii_digit).collect();
            (13..=19).contains(&digits.len()) && luhn(&digits)
        }
        "iban" => iban_ok(m),
        "ssn" => m.len() == 11 && ssn_ok(m),
        _ => true,
    }
}

/// Counts of what was masked, per detector (shared by whoever reports them).
#[derive(Debug)]
pub struct Counts {
    names: Vec<String>,
    values: Vec<AtomicU64>,
}

impl Counts {
    /// `(detector, count)` for each detector of the profile.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| (n.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A compiled redaction profile.
#[derive(Debug)]
pub struct Redactor {
    /// Built-in detectors in use: one alternation, a capture group per detector.
    builtin: Option<Regex>,
    /// (name, token) per capture group of `builtin`.
    groups: Vec<(&'static str, &'static str)>,
    /// (token, pattern) of custom detectors.
    custom: Vec<(String, Regex)>,
    counts: std::sync::Arc<Counts>,
}

impl Redactor {
    /// A profile of the named built-in detectors (`"all"` for every one) and custom
    /// `(name, pattern)` detectors.
    pub fn new(detectors: &[String], custom: &[(String, String)]) -> Result<Self, RedactError> {
        let mut chosen: Vec<&(&str, &str, &str)> = Vec::new();
        for d in detectors {
            if d == "all" {
                chosen = BUILTIN.iter().collect();
                continue;
            }
            let Some(b) = BUILTIN.iter().find(|b| b.0 == d) else {
                return Err(RedactError::UnknownDetector(
                    d.clone(),
                    builtin_names().join(", "),
                ));
            };
            if !chosen.iter().any(|c| c.0 == b.0) {
                chosen.push(b);
            }
        }
        // Keep the built-in order: longer, more specific kinds win where they overlap.
        chosen.sort_by_key(|c| BUILTIN.iter().position(|b| b.0 == c.0));
        let builtin = if chosen.is_empty() {
            None
        } else {
            let alternation: Vec<String> = chosen.iter().map(|c| format!("({})", c.2)).collect();
            Some(
                RegexBuilder::new(&format!("(?-u){}", alternation.join("|")))
                    .build()
                    .map_err(|e| RedactError::BadPattern {
                        name: "built-in".into(),
                        message: e.to_string(),
                    })?,
            )
        };
        let mut compiled = Vec::new();
        for (name, pattern) in custom {
            if name.is_empty()
                || name.len() > 40
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(RedactError::BadName(name.clone()));
            }
            let re = RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
                .map_err(|e| RedactError::BadPattern {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            compiled.push((name.to_ascii_uppercase(), re));
        }
        let mut names: Vec<String> = chosen.iter().map(|c| c.0.to_string()).collect();
        names.extend(compiled.iter().map(|(n, _)| n.clone()));
        let values = names.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Redactor {
            builtin,
            groups: chosen.iter().map(|c| (c.0, c.1)).collect(),
            custom: compiled,
            counts: std::sync::Arc::new(Counts { names, values }),
        })
    }

    /// Its counts.
    pub fn counts(&self) -> std::sync::Arc<Counts> {
        self.counts.clone()
    }

    fn count(&self, i: usize) {
        if let Some(c) = self.counts.values.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `text` with every match masked.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        if let Some(re) = &self.builtin {
            let bytes = out.as_bytes();
            let mut masked: Option<Vec<u8>> = None;
            let mut last = 0;
            for caps in re.captures_iter(bytes) {
                let Some((gi, m)) = caps
                    .iter()
                    .enumerate()
                    .skip(1)
                    .find_map(|(i, g)| g.map(|g| (i - 1, g)))
                else {
                    continue;
                };
                let (name, token) = self.groups[gi];
                if !valid(name, m.as_bytes()) {
                    continue;
                }
                let buf = masked.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                buf.extend_from_slice(&bytes[last..m.start()]);
                buf.push(b'[');
                buf.extend_from_slice(token.as_bytes());
                buf.push(b']');
                last = m.end();
                self.count(gi);
            }
            if let Some(mut buf) = masked {
                buf.extend_from_slice(&bytes[last..]);
                // The patterns are ASCII, so every cut is at a character boundary.
                out = Cow::Owned(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        for (ci, (token, re)) in self.custom.iter().enumerate() {
            let n = re.find_iter(out.as_bytes()).count();
            if n == 0 {
                continue;
            }
            let replaced = re.replace_all(out.as_bytes(), format!("[{token}]").as_bytes());
            let s = String::from_utf8_lossy(&replaced).into_owned();
            for _ in 0..n {
                self.count(self.groups.len() + ci);
            }
            out = Cow::Owned(s);
        }
        out
    }

    /// Mask every string inside `v` (keys are kept; base64 media under `bytes` is left).
    pub fn redact_value(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_text(s) {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_value(x)),
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if k != "bytes" {
                        self.redact_value(x);
                    }
                }
            }
            _ => {}
        }
    }

    /// A record (JSON) with its bodies masked: `input` and `output` (prompts, answers,
    /// tool calls). Identity and metadata are kept. Not JSON: returned as it is.
    pub fn redact_record<'a>(&self, record: &'a [u8]) -> Cow<'a, [u8]> {
        let Ok(mut v) = serde_json::from_slice::<Value>(record) else {
            return Cow::Borrowed(record);
        };
        let before: Vec<u64> = self.counts.snapshot().iter().map(|c| c.1).collect();
        for k in ["input", "output"] {
            if let Some(x) = v.get_mut(k) {
                self.redact_value(x);
            }
        }
        let after: Vec<u64> = self.counts.snapshot().iter().map(|c| c.1).collect();
        if before == after {
            return Cow::Borrowed(record);
        }
        match serde_json::to_vec(&v) {
            Ok(b) => Cow::Owned(b),
            Err(_) => Cow::Borrowed(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&["all".into()], &[("EMPLOYEE".into(), r"E-\d{6}".into())]).unwrap()
    }

    #[test]
    fn each_detector_masks_its_kind_and_counts_it() {
        let r = all();
        let cases = [
            ("mail jane.doe+x@example.co.uk now", "mail [EMAIL] now"),
            ("call +1 415-555-0132 today", "call [PHONE] today"),
            ("call (030) 1234 5678", "call [PHONE]"),
            ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
            ("card 5500-0000-0000-0004", "card [CARD]"),
            ("ssn 123-45-6789", "ssn [SSN]"),
            ("iban DE89 3704 0044 0532 0130 00 end", "iban [IBAN] end"),
            ("iban GB82WEST12345698765432", "iban [IBAN]"),
            ("key AKIAIOSFODNN7EXAMPLE used", "key [AWS_ACCESS_KEY] used"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "[AWS_SECRET_KEY]",
            ),
            (
                "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U x",
                "tok [JWT] x",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----",
                "[PRIVATE_KEY]",
            ),
            ("from 10.0.12.7 and 2001:db8::8a2e:370:7334", "from [IP] and [IP]"),
            ("badge E-123456", "badge [EMPLOYEE]"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_text(input), want, "{input}");
        }
        let counts: std::collections::BTreeMap<String, u64> =
            r.counts().snapshot().into_iter().collect();
        assert_eq!(counts["card"], 2);
        assert_eq!(counts["ip_address"], 2);
        assert_eq!(counts["EMPLOYEE"], 1);
    }

    #[test]
    fn checksums_reject_lookalikes_and_plain_text_is_untouched() {
        let r = all();
        for s in [
            "order 4111 1111 1111 1112 shipped", // Luhn fails
            "ssn 666-45-6789 and 000-12-3456",   // invalid areas
            "DE89 3704 0044 0532 0130 01",       // mod 97 fails
            "version 1.2.3 released in 2026",    // not an IP
            "plain text with nothing to hide",
        ] {
            assert!(
                matches!(r.redact_text(s), Cow::Borrowed(_)),
                "{s} -> {}",
                r.redact_text(s)
            );
        }
    }

    #[test]
    fn profiles_refuse_unknown_detectors_bad_patterns_and_names() {
        let e = Redactor::new(&["emails".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("unknown detector \"emails\""), "{e}");
        assert!(e.to_string().contains("email"));
        let e = Redactor::new(&[], &[("X".into(), "(".into())]).unwrap_err();
        assert!(matches!(e, RedactError::BadPattern { .. }), "{e}");
        let e = Redactor::new(&[], &[("has space".into(), "a".into())]).unwrap_err();
        assert!(matches!(e, RedactError::BadName(_)));
        // A pattern too big for the limit is refused, not compiled.
        let e = Redactor::new(&[], &[("BIG".into(), "(?:a{1000}){1000}".into())]).unwrap_err();
        assert!(matches!(e, RedactError::BadPattern { .. }), "{e}");
    }

    #[test]
    fn records_keep_metadata_and_media_and_mask_bodies() {
        let r = Redactor::new(&["email".into()], &[]).unwrap();
        let rec = br#"{"identity":{"arn":"arn:aws:iam::1:user/a@b.com"},"input":{"inputBodyJson":{"messages":[{"content":[{"text":"write to bob@example.com"},{"image":{"source":{"bytes":"a@b.co"}}}]}]}},"output":{"outputBodyJson":{"text":"ok"}}}"#;
        let out = r.redact_record(rec);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["identity"]["arn"], "arn:aws:iam::1:user/a@b.com");
        assert_eq!(
            v["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"],
            "write to [EMAIL]"
        );
        assert_eq!(
            v["input"]["inputBodyJson"]["messages"][0]["content"][1]["image"]["source"]["bytes"],
            "a@b.co"
        );
        // Nothing to mask: the same bytes, not re-serialized.
        let clean = br#"{"input":{"inputBodyJson":{"text":"hi"}}}"#;
        assert!(matches!(r.redact_record(clean), Cow::Borrowed(_)));
    }
}
