//! Model id -> provider routing (first matching route wins; exact ids or globs).

use crate::capture::RouteInfo;
use crate::config::Config;
use globset::{Glob, GlobMatcher};
use logbook_providers::anthropic::AnthropicProvider;
use logbook_providers::bedrock::{credentials_from_environment, AwsCredentials, BedrockProvider};
use logbook_providers::mock::MockProvider;
use logbook_providers::openai::OpenAiProvider;
use logbook_providers::Provider;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A resolved route.
#[derive(Clone)]
pub struct Resolved {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// What the record says about it.
    pub info: RouteInfo,
    /// Upstream timeout.
    pub timeout: Duration,
}

struct Entry {
    pattern: String,
    matcher: GlobMatcher,
    provider_name: String,
    upstream: Option<String>,
}

/// The routing table.
pub struct Routes {
    entries: Vec<Entry>,
    providers: HashMap<String, (Arc<dyn Provider>, Duration)>,
}

/// Routing could not be built.
#[derive(Debug, thiserror::Error)]
#[error("routing: {0}")]
pub struct RoutingError(pub String);

impl Routes {
    /// Build providers and routes from configuration.
    pub fn new(config: &Config) -> Result<Self, RoutingError> {
        let mut providers: HashMap<String, (Arc<dyn Provider>, Duration)> = HashMap::new();
        for p in &config.providers {
            let provider: Arc<dyn Provider> = match p.kind.as_str() {
                "mock" => Arc::new(MockProvider {
                    base_delay: p.delay,
                }),
                "openai" => {
                    let url = p.base_url.clone().ok_or_else(|| {
                        RoutingError(format!("provider {} needs base_url", p.name))
                    })?;
                    Arc::new(
                        OpenAiProvider::new(&url, p.api_key.clone(), p.timeout)
                            .map_err(|e| RoutingError(e.message))?,
                    )
                }
                "anthropic" => {
                    let url = p
                        .base_url
                        .clone()
                        .unwrap_or_else(|| "https://api.anthropic.com".into());
                    Arc::new(
                        AnthropicProvider::new(&url, p.api_key.clone(), p.timeout)
                            .map_err(|e| RoutingError(e.message))?,
                    )
                }
                "bedrock" => {
                    let creds = match (&p.access_key_id, &p.secret_access_key) {
                        (Some(a), Some(s)) => AwsCredentials {
                            access_key_id: a.clone(),
                            secret_access_key: s.clone(),
                            session_token: p.session_token.clone(),
                        },
                        _ => {
                            let env: HashMap<String, String> = std::env::vars().collect();
                            credentials_from_environment(&env).ok_or_else(|| {
                                RoutingError(format!("provider {}: no AWS credentials (set access_key_id/secret_access_key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a shared credentials profile)", p.name))
                            })?
                        }
                    };
                    let region = p.region.clone().unwrap_or_else(|| config.region.clone());
                    Arc::new(
                        BedrockProvider::new(p.base_url.as_deref(), &region, creds, p.timeout)
                            .map_err(|e| RoutingError(e.message))?,
                    )
                }
                other => return Err(RoutingError(format!("unknown provider type {other}"))),
            };
            providers.insert(p.name.clone(), (provider, p.timeout));
        }
        let mut entries = Vec::new();
        for r in &config.routes {
            let glob = Glob::new(&r.model).map_err(|e| RoutingError(e.to_string()))?;
            entries.push(Entry {
                pattern: r.model.clone(),
                matcher: glob.compile_matcher(),
                provider_name: r.provider.clone(),
                upstream: r.upstream_model.clone(),
            });
        }
        Ok(Routes { entries, providers })
    }

    /// The route for a model id.
    pub fn resolve(&self, model_id: &str) -> Option<Resolved> {
        let e = self
            .entries
            .iter()
            .find(|e| e.pattern == model_id || e.matcher.is_match(model_id))?;
        let (provider, timeout) = self.providers.get(&e.provider_name)?;
        Some(Resolved {
            provider: provider.clone(),
            info: RouteInfo {
                provider: e.provider_name.clone(),
                kind: provider.kind(),
                upstream_model: e.upstream.clone().unwrap_or_else(|| model_id.to_string()),
                mock: provider.is_mock(),
            },
            timeout: *timeout,
        })
    }

    /// Model ids a client can use: exact routes, plus what providers behind glob routes list.
    pub async fn models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let is_glob = |p: &str| p.contains(['*', '?', '[', '{']);
        for e in &self.entries {
            if !is_glob(&e.pattern) {
                out.push((e.pattern.clone(), e.provider_name.clone()));
            } else if let Some((p, _)) = self.providers.get(&e.provider_name) {
                let listed = if p.is_mock() {
                    mock_examples()
                } else {
                    p.list_models().await
                };
                for m in listed {
                    if e.matcher.is_match(&m) {
                        out.push((m, e.provider_name.clone()));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|(m, _)| seen.insert(m.clone()));
        out
    }
}

/// The mock answers any id; these examples are what `GET /v1/models` shows for it.
fn mock_examples() -> Vec<String> {
    [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-lite-v1:0",
        "amazon.titan-text-express-v1",
        "amazon.titan-embed-text-v2:0",
        "meta.llama3-8b-instruct-v1:0",
        "gpt-4o-mini",
        "text-embedding-3-small",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
