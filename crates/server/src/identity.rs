//! Who is calling: the principal behind a SigV4 access key id or a bearer API key.
//!
//! Authentication (verifying the signature) is not enforced yet; this resolves the
//! claimed identity for the record. Unknown callers are `arn:aws:iam::<account>:user/anonymous`.

use crate::config::{Config, PrincipalConfig};
use http::HeaderMap;
use logbook_wire::sigv4;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Lookup tables built from the configured principals.
#[derive(Debug, Default)]
pub struct Principals {
    by_access_key: HashMap<String, PrincipalConfig>,
    /// Keyed by SHA-256 of the API key, so the key itself is not kept in a map key.
    by_api_key_hash: HashMap<[u8; 32], PrincipalConfig>,
    default_account: String,
    default_region: String,
}

/// Non-secret identifier of an API key: the first 12 hex characters of its SHA-256.
pub fn api_key_id(key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    hex::encode(&h[..6])
}

impl Principals {
    /// Build from configuration.
    pub fn new(config: &Config) -> Self {
        let mut p = Principals {
            default_account: config.account_id.clone(),
            default_region: config.region.clone(),
            ..Default::default()
        };
        for pr in &config.principals {
            if let Some(k) = &pr.access_key_id {
                p.by_access_key.insert(k.clone(), pr.clone());
            }
            if let Some(k) = &pr.api_key {
                p.by_api_key_hash
                    .insert(Sha256::digest(k.as_bytes()).into(), pr.clone());
            }
        }
        p
    }

    fn anonymous(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user/anonymous")
    }

    /// Resolve the caller from request headers.
    pub fn resolve(&self, headers: &HeaderMap) -> Caller {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Ok(h) = sigv4::parse_authorization(auth) {
            let (arn, account) = match self.by_access_key.get(&h.access_key_id) {
                Some(p) => (p.arn.clone(), p.account_id.clone()),
                None => (
                    self.anonymous(&self.default_account),
                    self.default_account.clone(),
                ),
            };
            return Caller {
                arn,
                account_id: account,
                region: h.region,
                auth: "sigv4",
                access_key_id: Some(h.access_key_id),
                api_key_id: None,
            };
        }
        let bearer = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        if let Some(key) = bearer {
            let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let (arn, account) = match self.by_api_key_hash.get(&hash) {
                Some(p) => (p.arn.clone(), p.account_id.clone()),
                None => (
                    self.anonymous(&self.default_account),
                    self.default_account.clone(),
                ),
            };
            return Caller {
                arn,
                account_id: account,
                region: self.default_region.clone(),
                auth: "bearer",
                access_key_id: None,
                api_key_id: Some(api_key_id(key)),
            };
        }
        Caller {
            arn: self.anonymous(&self.default_account),
            account_id: self.default_account.clone(),
            region: self.default_region.clone(),
            auth: "none",
            access_key_id: None,
            api_key_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn principals() -> Principals {
        let c = Config::parse(
            "[[principals]]\narn = \"arn:aws:iam::123456789012:user/alice\"\naccess_key_id = \"AKIAALICE\"\nsecret_access_key = \"s\"\n[[principals]]\narn = \"arn:aws:iam::123456789012:user/bot\"\napi_key = \"sk-secret\"\n",
            &HashMap::new(),
            Path::new("/d"),
        )
        .unwrap();
        Principals::new(&c)
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn resolves_sigv4_bearer_and_anonymous() {
        let p = principals();
        let c = p.resolve(&headers("AWS4-HMAC-SHA256 Credential=AKIAALICE/20240101/eu-west-1/bedrock/aws4_request, SignedHeaders=host, Signature=00ff"));
        assert_eq!(c.arn, "arn:aws:iam::123456789012:user/alice");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.account_id, "123456789012");
        let c = p.resolve(&headers("Bearer sk-secret"));
        assert_eq!(c.arn, "arn:aws:iam::123456789012:user/bot");
        assert_eq!(
            c.api_key_id.as_deref(),
            Some(api_key_id("sk-secret").as_str())
        );
        assert!(!format!("{c:?}").contains("sk-secret"));
        let c = p.resolve(&HeaderMap::new());
        assert_eq!(c.arn, "arn:aws:iam::000000000000:user/anonymous");
        let c = p.resolve(&headers("Bearer other"));
        assert_eq!(c.arn, "arn:aws:iam::000000000000:user/anonymous");
    }
}
