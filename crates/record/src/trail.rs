//! CloudTrail-format audit events for control-plane calls, and CloudTrail's S3 key layout:
//! `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16 hex>.json.gz`
//! holding `{"Records": [...]}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// `eventVersion` written by Logbook.
pub const EVENT_VERSION: &str = "1.09";

/// `userIdentity`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    /// `IAMUser`, `AssumedRole`, `Root` or `Unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Principal ARN.
    pub arn: String,
    /// Account of the principal.
    pub account_id: String,
    /// Access key id used (SigV4), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

impl UserIdentity {
    /// Identity type from an ARN.
    pub fn kind_of(arn: &str) -> &'static str {
        if arn.contains(":assumed-role/") {
            "AssumedRole"
        } else if arn.ends_with(":root") {
            "Root"
        } else if arn.contains(":user/anonymous") {
            "Unknown"
        } else if arn.contains(":user/") {
            "IAMUser"
        } else if arn.contains(":role/") {
            "AssumedRole"
        } else {
            "Unknown"
        }
    }
}

/// One CloudTrail event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailEvent {
    /// Always [`EVENT_VERSION`].
    pub event_version: String,
    /// Caller.
    pub user_identity: UserIdentity,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub event_time: String,
    /// `bedrock.amazonaws.com`.
    pub event_source: String,
    /// Operation name.
    pub event_name: String,
    /// Region the call was made in.
    pub aws_region: String,
    /// Caller address.
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: String,
    /// Caller user agent.
    pub user_agent: String,
    /// Request parameters (null when there are none).
    pub request_parameters: Value,
    /// Response elements (null when there are none).
    pub response_elements: Value,
    /// Error code of a failed or denied call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message of a failed or denied call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// `x-amzn-RequestId` of the call.
    #[serde(rename = "requestID")]
    pub request_id: String,
    /// Unique event id.
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// Read-only call?
    pub read_only: bool,
    /// `AwsApiCall`.
    pub event_type: String,
    /// True: control-plane events are management events.
    pub management_event: bool,
    /// Account the event belongs to.
    pub recipient_account_id: String,
    /// `Management`, or `Data` for reads of records.
    pub event_category: String,
    /// What the call returned, for reads of records (`{"recordsReturned": n}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_event_data: Option<Value>,
}

/// Key of a CloudTrail object.
pub fn trail_object_key(
    account: &str,
    region: &str,
    t: OffsetDateTime,
    node_id: &str,
    first_sequence: u64,
) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "AWSLogs/{account}/CloudTrail/{region}/{:04}/{:02}/{:02}/{account}_CloudTrail_{region}_{:04}{:02}{:02}T{:02}{:02}Z_{}.json.gz",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        crate::layout::object_discriminator(node_id, first_sequence)
    )
}

/// What the trail delivery needs to place a journaled event, parsed the same way
/// everywhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailHead {
    /// `eventVersion`.
    pub event_version: String,
    /// `recipientAccountId`.
    pub recipient_account_id: Option<String>,
    /// `awsRegion`.
    pub aws_region: Option<String>,
}

impl TrailHead {
    /// Parse an event; `None` when it is not one (no `eventVersion`).
    pub fn parse(payload: &[u8]) -> Option<TrailHead> {
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn key_layout() {
        let k = trail_object_key(
            "123456789012",
            "us-east-1",
            datetime!(2026-11-19 14:05:33 UTC),
            "n",
            9,
        );
        assert!(k.starts_with("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/19/123456789012_CloudTrail_us-east-1_20261119T1405Z_"), "{k}");
        assert!(k.ends_with(".json.gz"));
    }

    #[test]
    fn identity_kinds() {
        assert_eq!(
            UserIdentity::kind_of("arn:aws:iam::1:user/alice"),
            "IAMUser"
        );
        assert_eq!(
            UserIdentity::kind_of("arn:aws:sts::1:assumed-role/R/s"),
            "AssumedRole"
        );
        assert_eq!(
            UserIdentity::kind_of("arn:aws:iam::1:user/anonymous"),
            "Unknown"
        );
    }
}
