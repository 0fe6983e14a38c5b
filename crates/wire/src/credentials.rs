//! AWS credentials: the type, the shared credentials file's format, and the standard
//! resolution order (environment, then the shared file), with the file read injected so
//! this crate stays free of I/O.

use std::collections::HashMap;

/// AWS credentials for signing (never printed).
#[derive(Clone)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish()
    }
}

/// Parse an AWS shared credentials file and return the profile's credentials.
pub fn parse_credentials_file(text: &str, profile: &str) -> Option<AwsCredentials> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().trim_start_matches("profile ").to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            sections
                .entry(current.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let s = sections.get(profile)?;
    Some(AwsCredentials {
        access_key_id: s.get("aws_access_key_id")?.clone(),
        secret_access_key: s.get("aws_secret_access_key")?.clone(),
        session_token: s.get("aws_session_token").cloned(),
    })
}

/// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
/// else from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
/// `$HOME/.aws/credentials`, profile `AWS_PROFILE` or `default`) read with `read`.
pub fn credentials_from(
    env: &HashMap<String, String>,
    read: impl Fn(&str) -> Option<String>,
) -> Option<AwsCredentials> {
    if let (Some(a), Some(s)) = (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        if !a.is_empty() && !s.is_empty() {
            return Some(AwsCredentials {
                access_key_id: a.clone(),
                secret_access_key: s.clone(),
                session_token: env
                    .get("AWS_SESSION_TOKEN")
                    .filter(|t| !t.is_empty())
                    .cloned(),
            });
        }
    }
    let path = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .cloned()
        .or_else(|| env.get("HOME").map(|h| format!("{h}/.aws/credentials")))?;
    let text = read(&path)?;
    let profile = env
        .get("AWS_PROFILE")
        .map(String::as_str)
        .unwrap_or("default");
    parse_credentials_file(&text, profile)
}

/// Sign a POST of `body` to `url` with SigV4 for `service` in `region` (`aws-sigv4`).
/// `headers` must include `host`; returns the headers to send: the given ones except
/// `host` (the HTTP client sets it), then the signature's (`x-amz-date`, `authorization`,
/// `x-amz-security-token`). The error says why it could not be signed.
pub fn sign_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: std::time::SystemTime,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "logbook",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("cannot sign: {e}"))?
        .into_parts();
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_post_adds_the_signature_and_leaves_host_to_the_client() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("tok".into()),
        };
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let h = sign_post(
            "http://127.0.0.1:5000/",
            &[
                ("host", "127.0.0.1:5000"),
                ("x-amz-target", "Logs_20140328.PutLogEvents"),
            ],
            b"{}",
            &creds,
            "eu-west-1",
            "logs",
            t,
        )
        .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("host"), None);
        assert_eq!(get("x-amz-target"), Some("Logs_20140328.PutLogEvents"));
        assert_eq!(get("x-amz-security-token"), Some("tok"));
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/logs/aws4_request"), "{auth}");
        assert!(auth.contains("SignedHeaders=host;"), "{auth}");
        assert!(
            !h.iter().any(|(_, v)| v.contains("secret")),
            "the secret never leaves"
        );
    }
}
