//! Who is calling, and what they may do.
//!
//! With authentication enforced (the default), a caller is either:
//! * a SigV4 signer, verified by recomputing the signature with `aws-sigv4` over the
//!   signed headers and the body (15-minute clock skew, credential scope checked);
//! * or a bearer API key, compared by SHA-256 digest.
//!
//! Anything else is refused with AWS's own error (or OpenAI's 401 on `/v1`). With
//! `[auth] mode = "off"` the claimed identity is taken as is (unknown callers become
//! `arn:aws:iam::<account>:user/anonymous`) and has every permission.

use crate::config::{all_permissions, Config, PrincipalConfig};
use globset::{Glob, GlobMatcher};
use http::HeaderMap;
use logbook_wire::sigv4::{self, AuthError, SignedRequest};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a caller may see of record bodies when reading logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContentLevel {
    /// No bodies.
    Metadata,
    /// Bodies through the `[redaction.analyst]` profile (every built-in detector when
    /// there is none).
    Redacted,
    /// Bodies as recorded.
    #[default]
    Full,
}

/// The read actions a `logs:<Action>[:<log group glob or ARN glob>]` permission names.
pub const LOG_ACTIONS: [&str; 10] = [
    "*",
    "StartQuery",
    "GetQueryResults",
    "StopQuery",
    "FilterLogEvents",
    "GetLogEvents",
    "GetLogRecord",
    "DescribeLogGroups",
    "DescribeLogStreams",
    "DescribeMetricFilters",
];

/// Built-in roles and what they expand to.
pub fn role(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "admin" => &["invoke:*", "logging:manage", "logs:read", "content:full"],
        "auditor" => &["logging:read", "logs:read", "content:full"],
        "analyst" => &["logs:read", "content:redacted"],
        "app" => &["invoke:*"],
        _ => return None,
    })
}

/// What a principal may do.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    invoke: Vec<GlobMatcher>,
    /// May read the logging configuration.
    pub logging_read: bool,
    /// May change the logging configuration.
    pub logging_manage: bool,
    /// May read some logs (query APIs); which ones: [`Permissions::may_read`].
    pub logs_read: bool,
    /// (action, log group glob) grants.
    logs: Vec<(String, GlobMatcher)>,
    /// What reads may see of bodies (the most restrictive level given).
    pub content: ContentLevel,
}

impl Permissions {
    /// From permission strings (already validated).
    pub fn from_strings(list: &[String]) -> Self {
        let mut p = Permissions::default();
        let mut content: Option<ContentLevel> = None;
        let mut expanded: Vec<String> = Vec::new();
        for s in list {
            match s.strip_prefix("role:").and_then(role) {
                Some(r) => expanded.extend(r.iter().map(|x| x.to_string())),
                None => expanded.push(s.clone()),
            }
        }
        for s in &expanded {
            if let Some(level) = s.strip_prefix("content:") {
                let l = match level {
                    "metadata" => ContentLevel::Metadata,
                    "redacted" => ContentLevel::Redacted,
                    _ => ContentLevel::Full,
                };
                content = Some(content.map_or(l, |c| c.min(l)));
                continue;
            }
            if s != "logs:read" {
                if let Some(rest) = s.strip_prefix("logs:") {
                    let (action, resource) = rest.split_once(':').unwrap_or((rest, "*"));
                    if let Ok(g) = Glob::new(resource) {
                        p.logs.push((action.to_string(), g.compile_matcher()));
                        p.logs_read = true;
                    }
                    continue;
                }
            }
            match s.as_str() {
                "logging:manage" => {
                    p.logging_manage = true;
                    p.logging_read = true;
                }
                "logging:read" => p.logging_read = true,
                "logs:read" => {
                    p.logs_read = true;
                    if let Ok(g) = Glob::new("*") {
                        p.logs.push(("*".into(), g.compile_matcher()));
                    }
                }
                other => {
                    if let Some(g) = other
                        .strip_prefix("invoke:")
                        .and_then(|g| Glob::new(g).ok())
                    {
                        p.invoke.push(g.compile_matcher());
                    }
                }
            }
        }
        p.content = content.unwrap_or_default();
        p
    }

    /// May the caller perform the read `action` on log group `group` (whose ARN, in the
    /// caller's account and region, is `arn`)?
    pub fn may_read(&self, action: &str, group: &str, arn: &str) -> bool {
        self.logs
            .iter()
            .any(|(a, r)| (a == "*" || a == action) && (r.is_match(group) || r.is_match(arn)))
    }

    /// Is the read `action` granted on any group?
    pub fn may_act(&self, action: &str) -> bool {
        self.logs.iter().any(|(a, _)| a == "*" || a == action)
    }

    /// Every permission.
    pub fn all() -> Self {
        Self::from_strings(&all_permissions())
    }

    /// May invoke this model id?
    pub fn may_invoke(&self, model_id: &str) -> bool {
        self.invoke.iter().any(|g| g.is_match(model_id))
    }
}

/// The resolved caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Principal ARN.
    pub arn: String,
    /// Account id.
    pub account_id: String,
    /// Region (SigV4 credential scope, else the configured default).
    pub region: String,
    /// `sigv4`, `bearer` or `none`.
    pub auth: &'static str,
    /// SigV4 access key id.
    pub access_key_id: Option<String>,
    /// Non-secret id of a bearer key.
    pub api_key_id: Option<String>,
    /// What the caller may do.
    pub permissions: Arc<Permissions>,
    /// Principal tags.
    pub tags: BTreeMap<String, String>,
}

/// An authentication failure, with the API it happened on deciding its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    Missing,
    /// SigV4 problem.
    SigV4(AuthError),
    /// Unknown bearer key.
    BadApiKey,
}

impl AuthFailure {
    /// AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "MissingAuthenticationTokenException",
            AuthFailure::SigV4(e) => e.code(),
            AuthFailure::BadApiKey => "UnrecognizedClientException",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AuthFailure::SigV4(e) => e.status(),
            _ => 403,
        }
    }

    /// Message.
    pub fn message(&self) -> String {
        match self {
            AuthFailure::Missing => "Missing Authentication Token".into(),
            AuthFailure::SigV4(e) => e.to_string(),
            AuthFailure::BadApiKey => "The API key included in the request is invalid.".into(),
        }
    }

    /// The access key id the caller claimed, if any (for the audit trail).
    pub fn claimed_key(headers: &HeaderMap) -> Option<String> {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| sigv4::parse_authorization(a).ok())
            .map(|h| h.access_key_id)
    }
}

#[derive(Debug, Clone)]
struct Known {
    arn: String,
    account_id: String,
    secret: Option<String>,
    permissions: Arc<Permissions>,
    tags: BTreeMap<String, String>,
}

/// Lookup tables built from the configured principals.
#[derive(Debug, Default)]
pub struct Principals {
    by_access_key: HashMap<String, Known>,
    /// Keyed by SHA-256 of the API key, so the key itself is not kept in a map key.
    by_api_key_hash: HashMap<[u8; 32], Known>,
    default_account: String,
    default_region: String,
    enforced: bool,
}

/// What a console sign-in presents.
#[derive(Clone)]
pub enum SignIn {
    /// A bearer API key.
    ApiKey(String),
    /// An access key pair.
    KeyPair {
        /// Access key id.
        access_key_id: String,
        /// Its secret.
        secret_access_key: String,
    },
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignIn::ApiKey(_) => f.write_str("SignIn::ApiKey(..)"),
            SignIn::KeyPair { access_key_id, .. } => {
                write!(f, "SignIn::KeyPair({access_key_id}, ..)")
            }
        }
    }
}

/// Compare two secrets in time that does not depend on where they differ (their digests
/// are compared, so not even on their lengths).
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Non-secret identifier of an API key: the first 12 hex characters of its SHA-256.
pub fn api_key_id(key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    hex::encode(&h[..6])
}

/// An API key: `Authorization: Bearer <key>` (OpenAI clients), else `x-api-key: <key>`
/// (Anthropic clients).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

impl Principals {
    /// Build from configuration plus any extra principals (the generated admin).
    pub fn new(config: &Config, extra: &[PrincipalConfig]) -> Self {
        let mut p = Principals {
            default_account: config.account_id.clone(),
            default_region: config.region.clone(),
            enforced: config.auth_enforced,
            ..Default::default()
        };
        for pr in config.principals.iter().chain(extra) {
            let known = Known {
                arn: pr.arn.clone(),
                account_id: pr.account_id.clone(),
                secret: pr.secret_access_key.clone(),
                permissions: Arc::new(Permissions::from_strings(&pr.permissions)),
                tags: pr.tags.clone(),
            };
            if let Some(k) = &pr.access_key_id {
                p.by_access_key.insert(k.clone(), known.clone());
            }
            if let Some(k) = &pr.api_key {
                p.by_api_key_hash
                    .insert(Sha256::digest(k.as_bytes()).into(), known);
            }
        }
        p
    }

    /// Is authentication enforced?
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// Does this request carry a SigV4 signature (and so need its body for verification)?
    pub fn is_sigv4(headers: &HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.trim_start().starts_with("AWS4-"))
    }

    fn anonymous(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user/anonymous")
    }

    /// The SigV4 service a request is signed for: `logs` for the CloudWatch Logs API,
    /// `monitoring` for the CloudWatch API (JSON 1.0 or rpc-v2-cbor), `bedrock`
    /// for everything else.
    fn service(headers: &HeaderMap) -> &'static str {
        if headers
            .get("smithy-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("rpc-v2-cbor"))
            || headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with(crate::metrics_api::TARGET_PREFIX))
        {
            return "monitoring";
        }
        if headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(crate::logs_api::TARGET_PREFIX))
        {
            "logs"
        } else {
            "bedrock"
        }
    }

    fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect()
    }

    /// What can be checked of a SigV4 request before its body is read (enforced mode):
    /// the header, date, scope and region, that the key is known, and that no session token
    /// comes with a permanent key. A request that fails here is refused unread.
    pub fn precheck_sigv4(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        sigv4::precheck(
            &Self::pairs(headers),
            SystemTime::now(),
            Duration::from_secs(15 * 60),
            Self::service(headers),
            |k| self.by_access_key.contains_key(k),
        )
        .map_err(AuthFailure::SigV4)?;
        Self::no_session_token(headers)
    }

    /// Principals hold permanent keys only: a session token with one is refused, as AWS
    /// refuses a token that does not belong to the key.
    fn no_session_token(headers: &HeaderMap) -> Result<(), AuthFailure> {
        if headers.contains_key("x-amz-security-token") {
            return Err(AuthFailure::SigV4(AuthError::Unrecognized));
        }
        Ok(())
    }

    /// Authenticate a request (enforced mode). `body` is needed for SigV4 only;
    /// `authority` is the request URI's authority (HTTP/2's `:authority`, which arrives in
    /// no header).
    pub fn authenticate(
        &self,
        method: &str,
        uri: &str,
        authority: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Caller, AuthFailure> {
        if Self::is_sigv4(headers) {
            Self::no_session_token(headers)?;
            let mut pairs = Self::pairs(headers);
            if let Some(a) = authority {
                if !headers.contains_key(http::header::HOST) {
                    pairs.push(("host".into(), a.to_string()));
                }
                pairs.push((":authority".into(), a.to_string()));
            }
            let req = SignedRequest {
                method,
                uri,
                headers: &pairs,
                body,
            };
            let h = sigv4::verify(
                &req,
                SystemTime::now(),
                Duration::from_secs(15 * 60),
                Self::service(headers),
                |k| self.by_access_key.get(k).and_then(|p| p.secret.clone()),
            )
            .map_err(AuthFailure::SigV4)?;
            let p = self
                .by_access_key
                .get(&h.access_key_id)
                .ok_or(AuthFailure::SigV4(AuthError::Unrecognized))?;
            return Ok(Caller {
                arn: p.arn.clone(),
                account_id: p.account_id.clone(),
                region: h.region,
                auth: "sigv4",
                access_key_id: Some(h.access_key_id),
                api_key_id: None,
                permissions: p.permissions.clone(),
                tags: p.tags.clone(),
            });
        }
        if let Some(key) = bearer(headers) {
            let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let p = self
                .by_api_key_hash
                .get(&hash)
                .ok_or(AuthFailure::BadApiKey)?;
            return Ok(Caller {
                arn: p.arn.clone(),
                account_id: p.account_id.clone(),
                region: self.default_region.clone(),
                auth: "bearer",
                access_key_id: None,
                api_key_id: Some(api_key_id(key)),
                permissions: p.permissions.clone(),
                tags: p.tags.clone(),
            });
        }
        Err(AuthFailure::Missing)
    }

    /// A console sign-in: an API key, or an access key id with its secret. With
    /// authentication off, the claimed identity (as [`Principals::resolve`] takes it).
    /// Every failure is the same [`AuthFailure::BadApiKey`], so a caller cannot tell which
    /// part was wrong.
    pub fn sign_in(&self, credential: &SignIn) -> Result<Caller, AuthFailure> {
        let (arn_p, auth, access_key_id, api_key) = match credential {
            SignIn::ApiKey(key) => {
                let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                (
                    self.by_api_key_hash.get(&hash),
                    "bearer",
                    None,
                    Some(api_key_id(key)),
                )
            }
            SignIn::KeyPair {
                access_key_id,
                secret_access_key,
            } => {
                let p = self.by_access_key.get(access_key_id).filter(|p| {
                    p.secret
                        .as_deref()
                        .is_some_and(|s| same_secret(s, secret_access_key))
                });
                (p, "sigv4", Some(access_key_id.clone()), None)
            }
        };
        let (arn, account_id, permissions, tags) = match arn_p {
            Some(p) => (
                p.arn.clone(),
                p.account_id.clone(),
                p.permissions.clone(),
                p.tags.clone(),
            ),
            None if !self.enforced => (
                self.anonymous(&self.default_account),
                self.default_account.clone(),
                Arc::new(Permissions::all()),
                BTreeMap::new(),
            ),
            None => return Err(AuthFailure::BadApiKey),
        };
        Ok(Caller {
            arn,
            account_id,
            region: self.default_region.clone(),
            auth,
            access_key_id,
            api_key_id: api_key,
            permissions,
            tags,
        })
    }

    /// The claimed identity, unverified (authentication off). Every permission.
    pub fn resolve(&self, headers: &HeaderMap) -> Caller {
        let all = Arc::new(Permissions::all());
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Ok(h) = sigv4::parse_authorization(auth) {
            let (arn, account, tags) = match self.by_access_key.get(&h.access_key_id) {
                Some(p) => (p.arn.clone(), p.account_id.clone(), p.tags.clone()),
                None => (
                    self.anonymous(&self.default_account),
                    self.default_account.clone(),
                    BTreeMap::new(),
                ),
            };
            // Only a real region name may be recorded or name a key (auth off, or an
            // unauthenticated caller in the trail); anything else is the default region.
            let region = if sigv4::valid_region(&h.region) {
                h.region
            } else {
                self.default_region.clone()
            };
            return Caller {
                arn,
                account_id: account,
                region,
                auth: "sigv4",
                access_key_id: Some(h.access_key_id),
                api_key_id: None,
                permissions: all,
                tags,
            };
        }
        if let Some(key) = bearer(headers) {
            let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let (arn, account, tags) = match self.by_api_key_hash.get(&hash) {
                Some(p) => (p.arn.clone(), p.account_id.clone(), p.tags.clone()),
                None => (
                    self.anonymous(&self.default_account),
                    self.default_account.clone(),
                    BTreeMap::new(),
                ),
            };
            return Caller {
                arn,
                account_id: account,
                region: self.default_region.clone(),
                auth: "bearer",
                access_key_id: None,
                api_key_id: Some(api_key_id(key)),
                permissions: all,
                tags,
            };
        }
        Caller {
            arn: self.anonymous(&self.default_account),
            account_id: self.default_account.clone(),
            region: self.default_region.clone(),
            auth: "none",
            access_key_id: None,
            api_key_id: None,
            permissions: all,
            tags: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn principals(auth: &str) -> Principals {
        let c = Config::parse(
            &format!("[auth]\nmode = \"{auth}\"\n[[principals]]\narn = \"arn:aws:iam::123456789012:user/alice\"\naccess_key_id = \"AKIAALICE\"\nsecret_access_key = \"s\"\npermissions = [\"invoke:anthropic.*\", \"logging:read\"]\n[[principals]]\narn = \"arn:aws:iam::123456789012:user/bot\"\napi_key = \"sk-secret\"\n"),
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap();
        Principals::new(&c, &[])
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn resolves_claimed_identity_when_auth_is_off() {
        let p = principals("off");
        let c = p.resolve(&headers("AWS4-HMAC-SHA256 Credential=AKIAALICE/20240101/eu-west-1/bedrock/aws4_request, SignedHeaders=host, Signature=00ff"));
        assert_eq!(
            (c.arn.as_str(), c.region.as_str()),
            ("arn:aws:iam::123456789012:user/alice", "eu-west-1")
        );
        let c = p.resolve(&headers("Bearer sk-secret"));
        assert_eq!(c.arn, "arn:aws:iam::123456789012:user/bot");
        assert!(!format!("{c:?}").contains("sk-secret"));
        assert_eq!(
            p.resolve(&HeaderMap::new()).arn,
            "arn:aws:iam::000000000000:user/anonymous"
        );
    }

    #[test]
    fn console_sign_in_takes_a_key_or_a_pair_and_fails_alike_on_anything_else() {
        let p = principals("enforce");
        let ok = p.sign_in(&SignIn::ApiKey("sk-secret".into())).unwrap();
        assert_eq!(
            (ok.arn.as_str(), ok.auth),
            ("arn:aws:iam::123456789012:user/bot", "bearer")
        );
        let ok = p
            .sign_in(&SignIn::KeyPair {
                access_key_id: "AKIAALICE".into(),
                secret_access_key: "s".into(),
            })
            .unwrap();
        assert!(ok.permissions.logging_read && !ok.permissions.logs_read);
        for bad in [
            SignIn::ApiKey("sk-wrong".into()),
            SignIn::KeyPair {
                access_key_id: "AKIAALICE".into(),
                secret_access_key: "wrong".into(),
            },
            SignIn::KeyPair {
                access_key_id: "AKIANOBODY".into(),
                secret_access_key: "s".into(),
            },
        ] {
            assert_eq!(p.sign_in(&bad).unwrap_err(), AuthFailure::BadApiKey);
            assert!(!format!("{bad:?}").contains("wrong") && !format!("{bad:?}").contains("sk-"));
        }
        // Authentication off: as the APIs, anyone is taken at their word.
        let off = principals("off");
        let c = off.sign_in(&SignIn::ApiKey("anything".into())).unwrap();
        assert!(c.arn.ends_with(":user/anonymous") && c.permissions.logs_read);
        assert!(
            same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "abcd")
        );
    }

    #[test]
    fn enforced_authentication_and_permissions() {
        let p = principals("enforce");
        assert_eq!(
            p.authenticate("POST", "/x", None, &HeaderMap::new(), b"")
                .unwrap_err(),
            AuthFailure::Missing
        );
        assert_eq!(
            p.authenticate("POST", "/x", None, &headers("Bearer nope"), b"")
                .unwrap_err(),
            AuthFailure::BadApiKey
        );
        let bot = p
            .authenticate("POST", "/x", None, &headers("Bearer sk-secret"), b"")
            .unwrap();
        assert!(bot.permissions.may_invoke("anything") && !bot.permissions.logging_read);
        let e = p.authenticate("POST", "/x", None, &headers("AWS4-HMAC-SHA256 Credential=AKIAALICE/20240101/eu-west-1/bedrock/aws4_request, SignedHeaders=host, Signature=00ff"), b"").unwrap_err();
        assert_eq!(e.code(), "IncompleteSignatureException"); // no X-Amz-Date
        let alice =
            Permissions::from_strings(&["invoke:anthropic.*".into(), "logging:read".into()]);
        assert!(
            alice.may_invoke("anthropic.claude-3")
                && !alice.may_invoke("meta.llama3")
                && alice.logging_read
                && !alice.logging_manage
        );
    }
}
