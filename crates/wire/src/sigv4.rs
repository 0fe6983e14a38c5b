//! SigV4: parsing of the `Authorization` header, and verification of a request by
//! recomputing its signature with `aws-sigv4` over exactly the headers the client signed.
//!
//! `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/bedrock/aws4_request,
//!  SignedHeaders=host;x-amz-date, Signature=abcdef...`

use sha2::Digest;

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

/// Why a request failed SigV4 authentication, with AWS's error code for each case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 400 `IncompleteSignatureException`: the header or a required part is malformed.
    #[error("{0}")]
    Incomplete(String),
    /// 403 `UnrecognizedClientException`: the access key id is unknown.
    #[error("The security token included in the request is invalid.")]
    Unrecognized,
    /// 403 `InvalidSignatureException`: wrong signature, wrong scope, or outside the
    /// allowed clock skew.
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    /// AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::Unrecognized => "UnrecognizedClientException",
            AuthError::Invalid(_) => "InvalidSignatureException",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Incomplete(_) => 400,
            _ => 403,
        }
    }
}

/// What verification needs to know about a request.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path and query exactly as received (percent-encoded).
    pub uri: &'a str,
    /// All request headers (any case).
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

const AMZ_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is `region` an AWS region name (`us-east-1`, `us-gov-west-1`, `eu-isoe-west-1`)?
/// Anything else is refused before it can be recorded, or name a folder or an object key.
pub fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    region.len() <= 32
        && (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && (1..=2).contains(&parts[parts.len() - 1].len())
}

/// Everything about a SigV4 request that can be checked from its headers alone, before
/// its body is read: the header's form, the date and its skew, the scope's service and
/// region, and that the access key is one `known` knows. [`verify`] does this first.
pub fn precheck(
    headers: &[(String, String)],
    now: std::time::SystemTime,
    max_skew: std::time::Duration,
    service: &str,
    known: impl Fn(&str) -> bool,
) -> Result<SigV4Header, AuthError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let auth = header("authorization").ok_or_else(|| AuthError::Incomplete("Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.".into()))?;
    let h = parse_authorization(auth).map_err(|e| match e {
        SigV4ParseError::BadCredential(c) => AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region. '{c}'"
        )),
        other => AuthError::Incomplete(other.to_string()),
    })?;
    let amz_date = header("x-amz-date").ok_or_else(|| {
        AuthError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        )
    })?;
    let signed_at = signed_at(amz_date)?;
    if !amz_date.starts_with(&h.date) {
        return Err(AuthError::Invalid(format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'", h.date, &amz_date[..8.min(amz_date.len())])));
    }
    if h.service != service {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if !valid_region(&h.region) {
        return Err(AuthError::Invalid(
            "Credential should be scoped to a valid region.".into(),
        ));
    }
    let now_t = time::OffsetDateTime::from(now);
    let skew = time::Duration::try_from(max_skew).unwrap_or(time::Duration::minutes(15));
    if signed_at < now_t - skew {
        return Err(AuthError::Invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - {} min.)",
            (now_t - skew).format(AMZ_DATE).unwrap_or_default(),
            now_t.format(AMZ_DATE).unwrap_or_default(),
            skew.whole_minutes()
        )));
    }
    if signed_at > now_t + skew {
        return Err(AuthError::Invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + {} min.)",
            (now_t + skew).format(AMZ_DATE).unwrap_or_default(),
            now_t.format(AMZ_DATE).unwrap_or_default(),
            skew.whole_minutes()
        )));
    }
    if !h
        .signed_headers
        .iter()
        .any(|s| s == "host" || s == ":authority")
    {
        return Err(AuthError::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if !known(&h.access_key_id) {
        return Err(AuthError::Unrecognized);
    }
    Ok(h)
}

fn signed_at(amz_date: &str) -> Result<time::OffsetDateTime, AuthError> {
    Ok(time::PrimitiveDateTime::parse(amz_date, AMZ_DATE)
        .map_err(|_| {
            AuthError::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
            ))
        })?
        .assume_utc())
}

/// Verify a SigV4-signed request: [`precheck`] the headers (scope, region, clock skew
/// `max_skew`, AWS uses 15 minutes), find the secret with `secret_for(access_key_id)`,
/// recompute the signature over the signed headers and the body hash, and compare in
/// constant time.
pub fn verify(
    req: &SignedRequest<'_>,
    now: std::time::SystemTime,
    max_skew: std::time::Duration,
    service: &str,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<SigV4Header, AuthError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let h = precheck(req.headers, now, max_skew, service, |k| {
        secret_for(k).is_some()
    })?;
    let amz_date = header("x-amz-date").unwrap_or_default();
    let signed_at = signed_at(amz_date)?;
    let secret = secret_for(&h.access_key_id).ok_or(AuthError::Unrecognized)?;
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in &h.signed_headers {
        for (k, v) in req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            signed.push((k.as_str(), v.as_str()));
        }
    }
    let mismatch = || {
        AuthError::Invalid("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into())
    };
    let body_hash = header("x-amz-content-sha256");
    if let Some(declared) = body_hash {
        if declared != "UNSIGNED-PAYLOAD"
            && !declared.eq_ignore_ascii_case(&hex::encode(sha2::Sha256::digest(req.body)))
        {
            return Err(AuthError::Invalid(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ));
        }
    }
    let body = match body_hash {
        Some(d) => SignableBody::Precomputed(d.to_string()),
        None => SignableBody::Bytes(req.body),
    };
    if h.signed_headers.iter().any(|n| n.starts_with(':')) {
        // HTTP/2 clients (the AWS SDK for JavaScript v3's default handler) sign the
        // `:authority` pseudo-header; aws-sigv4's header names cannot hold it.
        let Some(payload_hash) = body_hash
            .map(str::to_string)
            .or_else(|| Some(hex::encode(sha2::Sha256::digest(req.body))))
        else {
            return Err(mismatch());
        };
        let expected = pseudo_header_signature(
            req.method,
            req.uri,
            &signed,
            &h,
            &payload_hash,
            amz_date,
            &secret,
            std::time::SystemTime::from(signed_at),
        );
        return if ct_eq(
            expected.as_bytes(),
            h.signature.to_ascii_lowercase().as_bytes(),
        ) {
            Ok(h)
        } else {
            Err(mismatch())
        };
    }
    // The host the client signed: its Host header, or HTTP/2's `:authority`.
    let host = header("host")
        .or_else(|| header(":authority"))
        .ok_or_else(mismatch)?;
    let url = format!("http://{host}{}", req.uri);
    let identity = aws_credential_types::Credentials::new(
        &h.access_key_id,
        secret,
        None,
        None,
        "logbook-verify",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::new());
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&h.region)
        .name(&h.service)
        .time(std::time::SystemTime::from(signed_at))
        .settings(settings)
        .build()
        .map_err(|_| mismatch())?
        .into();
    let signable =
        SignableRequest::new(req.method, &url, signed.into_iter(), body).map_err(|_| mismatch())?;
    let out = sign(signable, &params).map_err(|_| mismatch())?;
    if ct_eq(
        out.signature().as_bytes(),
        h.signature.to_ascii_lowercase().as_bytes(),
    ) {
        Ok(h)
    } else {
        Err(mismatch())
    }
}

/// `aws-sigv4`'s path normalization (RFC 3986 §5.2.4 dot segments, empty segments
/// dropped, a trailing slash kept).
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let p = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if !(p.contains('.') || p.contains("//")) {
        return p;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut r = out.join("/");
    if !r.starts_with('/') {
        r.insert(0, '/');
    }
    if p.ends_with('/') && !r.ends_with('/') {
        r.push('/');
    }
    r
}

/// `aws-sigv4`'s header value trimming: outer spaces removed, inner runs of spaces
/// collapsed to one.
fn trim_all(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.trim_matches(' ').chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

/// The SigV4 signature of a request whose signed headers include a pseudo-header, built
/// as `aws-sigv4` builds it (double-encoded, normalized path; sorted, encoded query;
/// trimmed header values joined by commas), with its signing key and HMAC.
#[allow(clippy::too_many_arguments)]
fn pseudo_header_signature(
    method: &str,
    uri: &str,
    signed: &[(&str, &str)],
    h: &SigV4Header,
    payload_hash: &str,
    amz_date: &str,
    secret: &str,
    time: std::time::SystemTime,
) -> String {
    use aws_smithy_http::label::{fmt_string, EncodingStrategy};
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path = fmt_string(normalize_path(path), EncodingStrategy::Greedy);
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                aws_smithy_http::query::fmt_string(&k),
                aws_smithy_http::query::fmt_string(&v),
            )
        })
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut names: Vec<String> = h.signed_headers.iter().map(|n| n.to_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut headers = String::new();
    for n in &names {
        let values: Vec<String> = signed
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| trim_all(v))
            .collect();
        headers.push_str(&format!("{n}:{}\n", values.join(",")));
    }
    let creq = format!(
        "{method}\n{path}\n{}\n{headers}\n{}\n{payload_hash}",
        query.join("&"),
        names.join(";")
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        amz_date.get(..8).unwrap_or_default(),
        h.region,
        h.service
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(sha2::Sha256::digest(creq.as_bytes()))
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, time, &h.region, &h.service);
    aws_sigv4::sign::v4::calculate_signature(key, sts.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-west-3",
            "us-gov-west-1",
            "us-iso-east-1",
            "us-isob-east-1",
            "eu-isoe-west-1",
            "ap-southeast-7",
            "il-central-1",
            "mx-central-1",
        ] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in [
            "",
            "evil~region",
            "..",
            "us-east",
            "us-east-1/..",
            "US-EAST-1",
            "us_east_1",
            "us-east-100",
            "u-east-1",
            "us--1",
            "us-east-1-x-y",
            "us-é-1",
            &"a".repeat(300),
        ] {
            assert!(!valid_region(bad), "{bad}");
        }
    }

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

    fn signed(secret: &str, at: std::time::SystemTime, body: &[u8]) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity =
            aws_credential_types::Credentials::new("AKIDTEST", secret, None, None, "t").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("bedrock")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [
            ("host", "127.0.0.1:4700"),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4700/model/a%3Ab/converse",
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instr, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .uri("http://127.0.0.1:4700/model/a%3Ab/converse")
            .body(())
            .unwrap();
        instr.apply_to_request_http1x(&mut req);
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in req.headers() {
            out.push((k.to_string(), v.to_str().unwrap().to_string()));
        }
        out
    }

    #[test]
    fn verifies_what_aws_sigv4_signs_and_rejects_the_rest() {
        let now = std::time::SystemTime::now();
        let body = br#"{"messages":[]}"#;
        let headers = signed("s3cret", now, body);
        let skew = std::time::Duration::from_secs(900);
        let secret = |k: &str| (k == "AKIDTEST").then(|| "s3cret".to_string());
        let req = SignedRequest {
            method: "POST",
            uri: "/model/a%3Ab/converse",
            headers: &headers,
            body,
        };
        let h = verify(&req, now, skew, "bedrock", secret).unwrap();
        assert_eq!(
            (h.access_key_id.as_str(), h.region.as_str()),
            ("AKIDTEST", "eu-west-1")
        );
        // Tampered body, wrong secret, unknown key, wrong service, expired, no header.
        let bad = SignedRequest {
            body: b"{}",
            ..req.clone()
        };
        assert!(matches!(
            verify(&bad, now, skew, "bedrock", secret),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verify(&req, now, skew, "bedrock", |_| Some("other".into())),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            verify(&req, now, skew, "bedrock", |_| None),
            Err(AuthError::Unrecognized)
        );
        assert!(
            matches!(verify(&req, now, skew, "s3", secret), Err(AuthError::Invalid(m)) if m.contains("correct service"))
        );
        let later = now + std::time::Duration::from_secs(16 * 60);
        assert!(
            matches!(verify(&req, later, skew, "bedrock", secret), Err(AuthError::Invalid(m)) if m.starts_with("Signature expired"))
        );
        let none: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .cloned()
            .collect();
        let req2 = SignedRequest {
            headers: &none,
            ..req.clone()
        };
        assert!(matches!(
            verify(&req2, now, skew, "bedrock", secret),
            Err(AuthError::Incomplete(_))
        ));
        let other_path = SignedRequest {
            uri: "/model/a%3Ab/invoke",
            ..req
        };
        assert!(matches!(
            verify(&other_path, now, skew, "bedrock", secret),
            Err(AuthError::Invalid(_))
        ));
    }

    /// aws-sigv4 signs `uri` (path and query) with `headers`; our own canonical request
    /// (used for pseudo-headers) must give the signature it gave.
    fn same_signature_as_aws_sigv4(path_and_query: &str, headers: &[(&str, &str)]) {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let identity =
            aws_credential_types::Credentials::new("AKIDTEST", "s3cret", None, None, "t").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("bedrock")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("http://127.0.0.1:4700{path_and_query}");
        let body = b"{}";
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instr, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder().uri(&url).body(()).unwrap();
        instr.apply_to_request_http1x(&mut req);
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in req.headers() {
            all.push((k.to_string(), v.to_str().unwrap().to_string()));
        }
        let auth = all
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        let h = parse_authorization(&auth).unwrap();
        let signed: Vec<(&str, &str)> = all
            .iter()
            .filter(|(k, _)| h.signed_headers.iter().any(|n| n.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let amz_date = all
            .iter()
            .find(|(k, _)| k == "x-amz-date")
            .unwrap()
            .1
            .clone();
        let ours = pseudo_header_signature(
            "POST",
            path_and_query,
            &signed,
            &h,
            &hex::encode(sha2::Sha256::digest(body)),
            &amz_date,
            "s3cret",
            at,
        );
        assert_eq!(ours, h.signature, "{path_and_query} {headers:?}");
    }

    #[test]
    fn our_canonical_request_matches_aws_sigv4() {
        for uri in [
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "/model/a/../b/./c//d/converse",
            "/x/",
            "/q?b=2&a=1&a=0&c=&sp=a%20b&plus=a+b&u=%C3%A9",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/invoke",
        ] {
            same_signature_as_aws_sigv4(
                uri,
                &[
                    ("host", "127.0.0.1:4700"),
                    ("content-type", "application/json"),
                    ("x-amz-user-agent", "  several   spaces  inside "),
                ],
            );
        }
    }

    #[test]
    fn a_signed_authority_pseudo_header_verifies_and_tampering_does_not() {
        let now = std::time::SystemTime::now();
        let amz = time::OffsetDateTime::from(now)
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap();
        let body = br#"{"messages":[]}"#;
        let hash = hex::encode(sha2::Sha256::digest(body));
        let mut h = SigV4Header {
            access_key_id: "AKIDTEST".into(),
            date: amz[..8].to_string(),
            region: "us-east-1".into(),
            service: "bedrock".into(),
            signed_headers: vec![
                ":authority".into(),
                "x-amz-content-sha256".into(),
                "x-amz-date".into(),
            ],
            signature: String::new(),
        };
        let signed = [
            (":authority", "127.0.0.1:4700"),
            ("x-amz-content-sha256", hash.as_str()),
            ("x-amz-date", amz.as_str()),
        ];
        let at = std::time::SystemTime::from(signed_at(&amz).unwrap());
        h.signature = pseudo_header_signature(
            "POST",
            "/model/m/converse",
            &signed,
            &h,
            &hash,
            &amz,
            "s3cret",
            at,
        );
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/{}/us-east-1/bedrock/aws4_request, SignedHeaders=:authority;x-amz-content-sha256;x-amz-date, Signature={}",
            &amz[..8],
            h.signature
        );
        let headers: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("authorization".to_string(), auth)])
            .collect();
        let req = SignedRequest {
            method: "POST",
            uri: "/model/m/converse",
            headers: &headers,
            body,
        };
        let secret = |k: &str| (k == "AKIDTEST").then(|| "s3cret".to_string());
        let skew = std::time::Duration::from_secs(900);
        verify(&req, now, skew, "bedrock", secret).unwrap();
        let moved: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                let v = if k == ":authority" {
                    "evil:4700".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        let bad = SignedRequest {
            headers: &moved,
            ..req.clone()
        };
        assert!(matches!(
            verify(&bad, now, skew, "bedrock", secret),
            Err(AuthError::Invalid(_))
        ));
        let other = SignedRequest {
            uri: "/model/m/invoke",
            ..req
        };
        assert!(matches!(
            verify(&other, now, skew, "bedrock", secret),
            Err(AuthError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn verify_never_panics(auth in ".{0,200}", date in "[0-9TZ]{0,20}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let headers = vec![("authorization".to_string(), auth), ("x-amz-date".to_string(), date), ("host".to_string(), "h".to_string())];
            let req = SignedRequest { method: "POST", uri: "/x", headers: &headers, body: &body };
            let _ = verify(&req, std::time::SystemTime::now(), std::time::Duration::from_secs(900), "bedrock", |_| Some("s".into()));
        }

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
