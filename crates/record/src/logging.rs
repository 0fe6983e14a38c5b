//! Bedrock's model-invocation logging configuration (botocore `bedrock/2023-04-20`
//! `LoggingConfig`), its validation with Bedrock/Coral-style messages, and how a call's
//! data type is decided.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `S3Config`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    /// Bucket (3..=63).
    pub bucket_name: String,
    /// Key prefix (0..=1024).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// `CloudWatchConfig`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchConfig {
    /// Log group (1..=512).
    pub log_group_name: String,
    /// Role ARN.
    pub role_arn: String,
    /// Where large data goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_data_delivery_s3_config: Option<S3Config>,
}

/// `LoggingConfig`, with omitted delivery flags stored as `true` (as Bedrock does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfig {
    /// CloudWatch Logs destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_watch_config: Option<CloudWatchConfig>,
    /// S3 destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_config: Option<S3Config>,
    /// Deliver text bodies.
    pub text_data_delivery_enabled: bool,
    /// Deliver image data.
    pub image_data_delivery_enabled: bool,
    /// Deliver embedding bodies.
    pub embedding_data_delivery_enabled: bool,
    /// Deliver video data.
    pub video_data_delivery_enabled: bool,
    /// Deliver audio data.
    pub audio_data_delivery_enabled: bool,
}

impl LoggingConfig {
    /// Everything on, to one bucket.
    pub fn to_bucket(bucket: &str, prefix: &str) -> Self {
        LoggingConfig {
            cloud_watch_config: None,
            s3_config: Some(S3Config {
                bucket_name: bucket.into(),
                key_prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            }),
            text_data_delivery_enabled: true,
            image_data_delivery_enabled: true,
            embedding_data_delivery_enabled: true,
            video_data_delivery_enabled: true,
            audio_data_delivery_enabled: true,
        }
    }

    /// Is delivery of this data type's bodies on?
    pub fn delivers(&self, t: DataType) -> bool {
        match t {
            DataType::Text => self.text_data_delivery_enabled,
            DataType::Image => self.image_data_delivery_enabled,
            DataType::Embedding => self.embedding_data_delivery_enabled,
            DataType::Video => self.video_data_delivery_enabled,
            DataType::Audio => self.audio_data_delivery_enabled,
        }
    }
}

/// The kind of data a call carries, which selects the delivery flag that governs its
/// bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    /// Text generation and chat.
    Text,
    /// Image generation (and image models).
    Image,
    /// Embeddings.
    Embedding,
    /// Video generation.
    Video,
    /// Speech / audio models.
    Audio,
}

impl DataType {
    /// The flag's name in `LoggingConfig`.
    pub fn flag(self) -> &'static str {
        match self {
            DataType::Text => "textDataDeliveryEnabled",
            DataType::Image => "imageDataDeliveryEnabled",
            DataType::Embedding => "embeddingDataDeliveryEnabled",
            DataType::Video => "videoDataDeliveryEnabled",
            DataType::Audio => "audioDataDeliveryEnabled",
        }
    }
}

/// Decide a call's data type from its operation and model id (see ARCHITECTURE.md).
pub fn data_type(operation: &str, model_id: &str) -> DataType {
    let m = model_id.to_ascii_lowercase();
    if operation == "Embeddings" || m.contains("embed") {
        DataType::Embedding
    } else if m.contains("nova-reel") || m.contains("video") || m.contains("ray-v") {
        DataType::Video
    } else if m.contains("nova-sonic") || m.contains("audio") || m.contains("speech") {
        DataType::Audio
    } else if m.contains("titan-image")
        || m.contains("nova-canvas")
        || m.contains("stable-diffusion")
        || m.contains("stability.")
        || m.contains("image-generator")
    {
        DataType::Image
    } else {
        DataType::Text
    }
}

fn len_err(v: &str, at: &str, min: usize, max: usize) -> Option<String> {
    let n = v.chars().count();
    if n < min {
        Some(format!("Value '{v}' at '{at}' failed to satisfy constraint: Member must have length greater than or equal to {min}"))
    } else if n > max {
        let shown: String = v.chars().take(64).collect();
        Some(format!("Value '{shown}...' at '{at}' failed to satisfy constraint: Member must have length less than or equal to {max}"))
    } else {
        None
    }
}

/// `arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+` as a full match.
pub fn role_arn_matches(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("arn:aws") else {
        return false;
    };
    let rest = match rest.strip_prefix('-') {
        Some(r) => match r.find(':') {
            Some(0) | None => return false,
            Some(i) => &r[i..],
        },
        None => rest,
    };
    let Some(rest) = rest.strip_prefix(":iam::") else {
        return false;
    };
    let rest = if rest.len() >= 12 && rest.as_bytes()[..12].iter().all(u8::is_ascii_digit) {
        &rest[12..]
    } else {
        rest
    };
    rest.strip_prefix(":role/").is_some_and(|r| !r.is_empty())
}

fn check_prefix(p: &str, at: &str, errors: &mut Vec<String>) {
    if let Some(e) = len_err(p, at, 0, 1024) {
        errors.push(e);
    }
    if p.starts_with('/') {
        errors.push(format!("Value '{p}' at '{at}' failed to satisfy constraint: Member must be a relative key prefix (no leading '/')"));
    }
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        errors.push(format!("Value '{p}' at '{at}' failed to satisfy constraint: Member must not contain '.' or '..' path segments"));
    }
    if p.chars().any(|c| c.is_control()) {
        errors.push(format!("Value at '{at}' failed to satisfy constraint: Member must not contain control characters"));
    }
    if p.contains('\\') {
        errors.push(format!(
            "Value '{p}' at '{at}' failed to satisfy constraint: Member must not contain '\\'"
        ));
    }
    // S3's safe characters only, so the key is the same in every object store and on
    // disk (no escaping anywhere), and no empty segment that a store would drop.
    if let Some(c) = p
        .chars()
        .find(|c| !prefix_char(*c) && !c.is_control() && *c != '\\')
    {
        errors.push(format!("Value '{}' at '{at}' failed to satisfy constraint: Member must contain only letters, digits and the characters ! - _ . * ' ( ) = + / (found {c:?})", p.escape_debug()));
    }
    // A folder name on a local file system holds at most 255 bytes; a longer segment
    // could never be written (and would stall the bucket's delivery).
    if p.split('/').any(|seg| seg.len() > 200) {
        errors.push(format!(
            "Value at '{at}' failed to satisfy constraint: Member must not have a path segment longer than 200 characters"
        ));
    }
    if p.contains("//") {
        errors.push(format!(
            "Value '{p}' at '{at}' failed to satisfy constraint: Member must not contain empty path segments ('//')"
        ));
    }
}

/// Check a key prefix by the rules of `s3Config.keyPrefix` (for the config file's).
pub fn validate_key_prefix(p: &str, at: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check_prefix(p, at, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A character a key prefix may hold: S3's "safe characters", `/`, `=` and `+`.
pub fn prefix_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!-_.*'()/=+".contains(c)
}

fn type_err(at: &str, want: &str) -> String {
    format!("Value at '{at}' failed to satisfy constraint: Member must be {want}")
}

fn s3(v: &Value, at: &str, errors: &mut Vec<String>) -> Option<S3Config> {
    let Some(o) = v.as_object() else {
        errors.push(type_err(at, "a structure"));
        return None;
    };
    for k in o.keys() {
        if k != "bucketName" && k != "keyPrefix" {
            errors.push(format!(
                "Value at '{at}.{k}' failed to satisfy constraint: Member is not a known field"
            ));
        }
    }
    let bucket = match o.get("bucketName") {
        None | Some(Value::Null) => {
            errors.push(format!("Value null at '{at}.bucketName' failed to satisfy constraint: Member must not be null"));
            None
        }
        Some(Value::String(b)) => {
            if let Some(e) = len_err(b, &format!("{at}.bucketName"), 3, 63) {
                errors.push(e);
            }
            Some(b.clone())
        }
        Some(_) => {
            errors.push(type_err(&format!("{at}.bucketName"), "a string"));
            None
        }
    };
    let prefix = match o.get("keyPrefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            check_prefix(p, &format!("{at}.keyPrefix"), errors);
            Some(p.clone())
        }
        Some(_) => {
            errors.push(type_err(&format!("{at}.keyPrefix"), "a string"));
            None
        }
    };
    bucket.map(|b| S3Config {
        bucket_name: b,
        key_prefix: prefix,
    })
}

/// Validate a `PutModelInvocationLoggingConfiguration` request body. Every problem is
/// reported, Coral style: `N validation errors detected: ...; ...`.
pub fn parse_put_request(body: &[u8]) -> Result<LoggingConfig, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!("Malformed input request: {e}, please reformat your input and try again.")
    })?;
    let Some(top) = v.as_object() else {
        return Err("Malformed input request: the body must be a JSON object, please reformat your input and try again.".into());
    };
    let mut errors = Vec::new();
    for k in top.keys() {
        if k != "loggingConfig" {
            errors.push(format!(
                "Value at '{k}' failed to satisfy constraint: Member is not a known field"
            ));
        }
    }
    let cfg = match top.get("loggingConfig") {
        None | Some(Value::Null) => {
            errors.push("Value null at 'loggingConfig' failed to satisfy constraint: Member must not be null".to_string());
            None
        }
        Some(Value::Object(o)) => logging_config(o, &mut errors),
        Some(_) => {
            errors.push(type_err("loggingConfig", "a structure"));
            None
        }
    };
    match (cfg, errors.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => {
            let n = errors.len();
            Err(format!(
                "{n} validation error{} detected: {}",
                if n == 1 { "" } else { "s" },
                errors.join("; ")
            ))
        }
    }
}

/// Validate a `LoggingConfig` object (also used for the declarative file).
pub fn validate_logging_config(v: &Value) -> Result<LoggingConfig, String> {
    let mut errors = Vec::new();
    let cfg = match v.as_object() {
        Some(o) => logging_config(o, &mut errors),
        None => {
            errors.push(type_err("loggingConfig", "a structure"));
            None
        }
    };
    match (cfg, errors.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(errors.join("; ")),
    }
}

fn logging_config(o: &Map<String, Value>, errors: &mut Vec<String>) -> Option<LoggingConfig> {
    const FLAGS: [&str; 5] = [
        "textDataDeliveryEnabled",
        "imageDataDeliveryEnabled",
        "embeddingDataDeliveryEnabled",
        "videoDataDeliveryEnabled",
        "audioDataDeliveryEnabled",
    ];
    for k in o.keys() {
        if k != "cloudWatchConfig" && k != "s3Config" && !FLAGS.contains(&k.as_str()) {
            errors.push(format!("Value at 'loggingConfig.{k}' failed to satisfy constraint: Member is not a known field"));
        }
    }
    let mut flags = [true; 5];
    for (i, f) in FLAGS.iter().enumerate() {
        match o.get(*f) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => flags[i] = *b,
            Some(_) => errors.push(type_err(&format!("loggingConfig.{f}"), "a boolean")),
        }
    }
    let s3_config = match o.get("s3Config") {
        None | Some(Value::Null) => None,
        Some(v) => s3(v, "loggingConfig.s3Config", errors),
    };
    let cloud_watch_config = match o.get("cloudWatchConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            let at = "loggingConfig.cloudWatchConfig";
            for k in c.keys() {
                if !["logGroupName", "roleArn", "largeDataDeliveryS3Config"].contains(&k.as_str()) {
                    errors.push(format!("Value at '{at}.{k}' failed to satisfy constraint: Member is not a known field"));
                }
            }
            let group = match c.get("logGroupName") {
                Some(Value::String(g)) => {
                    if let Some(e) = len_err(g, &format!("{at}.logGroupName"), 1, 512) {
                        errors.push(e);
                    }
                    Some(g.clone())
                }
                None | Some(Value::Null) => {
                    errors.push(format!("Value null at '{at}.logGroupName' failed to satisfy constraint: Member must not be null"));
                    None
                }
                Some(_) => {
                    errors.push(type_err(&format!("{at}.logGroupName"), "a string"));
                    None
                }
            };
            let role = match c.get("roleArn") {
                Some(Value::String(r)) => {
                    if let Some(e) = len_err(r, &format!("{at}.roleArn"), 0, 2048) {
                        errors.push(e);
                    } else if !role_arn_matches(r) {
                        errors.push(format!("Value '{r}' at '{at}.roleArn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:aws(-[^:]+)?:iam::([0-9]{{12}})?:role/.+"));
                    }
                    Some(r.clone())
                }
                None | Some(Value::Null) => {
                    errors.push(format!("Value null at '{at}.roleArn' failed to satisfy constraint: Member must not be null"));
                    None
                }
                Some(_) => {
                    errors.push(type_err(&format!("{at}.roleArn"), "a string"));
                    None
                }
            };
            let large = match c.get("largeDataDeliveryS3Config") {
                None | Some(Value::Null) => None,
                Some(v) => s3(v, &format!("{at}.largeDataDeliveryS3Config"), errors),
            };
            match (group, role) {
                (Some(g), Some(r)) => Some(CloudWatchConfig {
                    log_group_name: g,
                    role_arn: r,
                    large_data_delivery_s3_config: large,
                }),
                _ => None,
            }
        }
        Some(_) => {
            errors.push(type_err("loggingConfig.cloudWatchConfig", "a structure"));
            None
        }
    };
    Some(LoggingConfig {
        cloud_watch_config,
        s3_config,
        text_data_delivery_enabled: flags[0],
        image_data_delivery_enabled: flags[1],
        embedding_data_delivery_enabled: flags[2],
        video_data_delivery_enabled: flags[3],
        audio_data_delivery_enabled: flags[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_flags_default_to_true_and_round_trip() {
        let c = parse_put_request(br#"{"loggingConfig":{"s3Config":{"bucketName":"my-bucket","keyPrefix":"invocation-logs/"},"textDataDeliveryEnabled":false}}"#).unwrap();
        assert!(
            !c.text_data_delivery_enabled
                && c.image_data_delivery_enabled
                && c.audio_data_delivery_enabled
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json["s3Config"],
            serde_json::json!({"bucketName":"my-bucket","keyPrefix":"invocation-logs/"})
        );
        assert_eq!(json["videoDataDeliveryEnabled"], true);
        assert_eq!(validate_logging_config(&json).unwrap(), c);
    }

    #[test]
    fn reports_every_violation() {
        let e = parse_put_request(br#"{"loggingConfig":{"s3Config":{"bucketName":"ab","keyPrefix":"../x"},"cloudWatchConfig":{"logGroupName":"","roleArn":"nope"},"textDataDeliveryEnabled":"yes","bogus":1}}"#).unwrap_err();
        assert!(e.starts_with("6 validation errors detected: "), "{e}");
        assert!(e.contains("'loggingConfig.s3Config.bucketName' failed to satisfy constraint: Member must have length greater than or equal to 3"));
        assert!(e.contains("loggingConfig.s3Config.keyPrefix"));
        assert!(e.contains("loggingConfig.cloudWatchConfig.roleArn"));
        assert!(e.contains("loggingConfig.bogus"));
        assert_eq!(parse_put_request(b"{}").unwrap_err(), "1 validation error detected: Value null at 'loggingConfig' failed to satisfy constraint: Member must not be null");
        assert!(parse_put_request(b"{oops")
            .unwrap_err()
            .starts_with("Malformed input request"));
        for bad in [
            "/abs", "a/../b", "x\u{1}y", "a\\b", "~team/", "équipe/", "a//b", "a b/", "x%2F/",
            "[x]/",
        ] {
            let body = serde_json::to_vec(&serde_json::json!({"loggingConfig":{"s3Config":{"bucketName":"bkt","keyPrefix":bad}}})).unwrap();
            assert!(parse_put_request(&body).is_err(), "{bad:?}");
        }
        let long = format!("{}/", "a".repeat(201));
        let body = serde_json::to_vec(&serde_json::json!({"loggingConfig":{"s3Config":{"bucketName":"bkt","keyPrefix":long}}})).unwrap();
        assert!(parse_put_request(&body).is_err());
    }

    #[test]
    fn role_arn_pattern() {
        assert!(role_arn_matches(
            "arn:aws:iam::123456789012:role/BedrockLogs"
        ));
        assert!(role_arn_matches("arn:aws-us-gov:iam::123456789012:role/x"));
        assert!(role_arn_matches("arn:aws:iam:::role/x"));
        assert!(!role_arn_matches("arn:aws:iam::123456789012:user/x"));
        assert!(!role_arn_matches("arn:aws:iam::123456789012:role/"));
        assert!(!role_arn_matches("arn:aws-:iam::1:role/x"));
    }

    #[test]
    fn data_types() {
        assert_eq!(
            data_type("Embeddings", "text-embedding-3-small"),
            DataType::Embedding
        );
        assert_eq!(
            data_type("InvokeModel", "amazon.titan-embed-text-v2:0"),
            DataType::Embedding
        );
        assert_eq!(
            data_type("InvokeModel", "amazon.nova-canvas-v1:0"),
            DataType::Image
        );
        assert_eq!(
            data_type("InvokeModel", "amazon.nova-reel-v1:0"),
            DataType::Video
        );
        assert_eq!(
            data_type("Converse", "anthropic.claude-3-haiku"),
            DataType::Text
        );
    }
}
