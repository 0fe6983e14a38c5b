//! Parsing of the SigV4 `Authorization` header. Verification (recomputing the signature)
//! belongs to authentication; this module only tells who claims to call and with which
//! credential scope.
//!
//! `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/bedrock/aws4_request,
//!  SignedHeaders=host;x-amz-date, Signature=abcdef...`

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Header {
    /// Access key id (not secret).
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// Region of the credential scope.
    pub region: String,
    /// Service of the credential scope (`bedrock` for both control plane and runtime).
    pub service: String,
    /// Lower-case signed header names.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

/// Why a SigV4 header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4ParseError {
    /// Not a SigV4 header at all.
    #[error("not an AWS4-HMAC-SHA256 authorization header")]
    NotSigV4,
    /// A required component is missing or malformed.
    #[error("Authorization header requires '{0}' parameter")]
    Missing(&'static str),
    /// The credential is not `AKID/date/region/service/aws4_request`.
    #[error("Credential should be scoped to a valid region and service: '{0}'")]
    BadCredential(String),
}

/// Parse an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<SigV4Header, SigV4ParseError> {
    let rest = value
        .trim()
        .strip_prefix("AWS4-HMAC-SHA256")
        .ok_or(SigV4ParseError::NotSigV4)?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or(SigV4ParseError::Missing("Credential"))?;
    let signed = signed.ok_or(SigV4ParseError::Missing("SignedHeaders"))?;
    let signature = signature.ok_or(SigV4ParseError::Missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let valid = parts.len() == 5
        && !parts[0].is_empty()
        && parts[1].len() == 8
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && !parts[2].is_empty()
        && !parts[3].is_empty()
        && parts[4] == "aws4_request";
    if !valid {
        return Err(SigV4ParseError::BadCredential(credential.to_string()));
    }
    if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4ParseError::Missing("Signature"));
    }
    Ok(SigV4Header {
        access_key_id: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        signed_headers: signed.split(';').map(|s| s.to_ascii_lowercase()).collect(),
        signature: signature.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_botocore_header() {
        let h = parse_authorization("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=0123abcd").unwrap();
        assert_eq!(h.access_key_id, "AKIDEXAMPLE");
        assert_eq!(h.region, "eu-west-1");
        assert_eq!(h.service, "bedrock");
        assert_eq!(h.signed_headers, vec!["content-type", "host", "x-amz-date"]);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            parse_authorization("Bearer x"),
            Err(SigV4ParseError::NotSigV4)
        );
        assert!(matches!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=A/2024/r/s/aws4_request, SignedHeaders=host, Signature=00"),
            Err(SigV4ParseError::BadCredential(_))
        ));
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"),
            Err(SigV4ParseError::Missing("Credential"))
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,400}") {
            let _ = parse_authorization(&s);
        }
        #[test]
        fn never_panics_near_valid(a in "[A-Z0-9/]{0,30}", d in "[0-9]{0,9}", r in "[a-z0-9-/]{0,20}", sig in "[0-9a-fz]{0,10}") {
            let _ = parse_authorization(&format!("AWS4-HMAC-SHA256 Credential={a}/{d}/{r}/bedrock/aws4_request, SignedHeaders=host, Signature={sig}"));
        }
    }
}
