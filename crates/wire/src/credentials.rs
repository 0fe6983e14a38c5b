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
