//! The price catalog and the cost of a call, in exact decimal arithmetic.
//!
//! Prices are USD per 1,000,000 tokens, written as decimal strings with at most six
//! decimals, so a cost (tokens × price / 10⁶) has at most twelve: every cost fits SQL's
//! `DECIMAL(38, 12)` exactly and sums of costs are exact to the last digit.
//!
//! Which price applies to a call:
//! - the **billing provider** is the provider that served it (`openai`, `anthropic`,
//!   `bedrock`); calls answered by the built-in mock are priced as the API they imitate
//!   (`bedrock-runtime` → Bedrock, `openai` → OpenAI), so reports can be tried on mock
//!   traffic (the record says `mock: true`);
//! - Bedrock model ids are reduced to the foundation model: an ARN to its last path
//!   segment, a cross-region inference profile (`us.`, `eu.`, `apac.`, `global.`, ...) to
//!   the model it routes to, priced in the region the call was made in, as AWS bills it;
//! - OpenAI dated snapshots (`gpt-4o-mini-2024-07-18`) are priced as their model.
//!
//! Token kinds are disjoint, as in Bedrock's record: `inputTokenCount` counts uncached
//! input only, `cacheReadInputTokenCount` and `cacheWriteInputTokenCount` the cache's
//! reads and writes, `outputTokenCount` the output (reasoning included).

use bigdecimal::{BigDecimal, Zero};
use logbook_record::InvocationRecord;
use serde::Deserialize;
use std::collections::HashMap;
use std::str::FromStr;

/// The catalog that ships with Logbook.
pub const BUILTIN: &str = include_str!("../catalog/prices.toml");

/// Most decimals a price may have (so a cost has at most 12).
pub const MAX_PRICE_SCALE: i64 = 6;

/// Decimal scale of every cost: SQL sums them as `DECIMAL(38, 12)`.
pub const COST_SCALE: i64 = 12;

/// A catalog that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not TOML, or not the catalog's shape.
    #[error("price catalog: {0}")]
    Syntax(String),
    /// An entry that makes no sense.
    #[error("price catalog entry {index} ({model}): {message}")]
    Entry {
        /// 1-based entry number in its file.
        index: usize,
        /// The entry's first model.
        model: String,
        /// What is wrong.
        message: String,
    },
}

/// Who bills a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Amazon Bedrock (prices per region).
    Bedrock,
    /// The OpenAI API.
    OpenAi,
    /// The Anthropic API.
    Anthropic,
}

impl Provider {
    fn parse(s: &str) -> Option<Provider> {
        match s {
            "bedrock" => Some(Provider::Bedrock),
            "openai" => Some(Provider::OpenAi),
            "anthropic" => Some(Provider::Anthropic),
            _ => None,
        }
    }

    /// The catalog's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Bedrock => "bedrock",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// One model's prices, USD per 1M tokens; `None` where the catalog has no price.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Uncached input tokens.
    pub input: Option<BigDecimal>,
    /// Output tokens.
    pub output: Option<BigDecimal>,
    /// Prompt-cache reads.
    pub cache_read: Option<BigDecimal>,
    /// Prompt-cache writes.
    pub cache_write: Option<BigDecimal>,
    /// Where the price comes from.
    pub source: String,
}

/// Token counts of one call, by kind (disjoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Uncached input.
    pub input: u64,
    /// Output.
    pub output: u64,
    /// Cache reads.
    pub cache_read: u64,
    /// Cache writes.
    pub cache_write: u64,
}

/// The result of pricing one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Priced {
    /// The cost in USD, exact, at [`COST_SCALE`].
    Cost(BigDecimal),
    /// No cost can be given; why.
    Unpriced(String),
}

/// One entry as written in a catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// `bedrock`, `openai` or `anthropic`.
    pub provider: String,
    /// Model ids the prices apply to.
    pub models: Vec<String>,
    /// Bedrock only: the regions the prices hold in.
    #[serde(default)]
    pub regions: Vec<String>,
    /// USD per 1M uncached input tokens.
    #[serde(default)]
    pub input: Option<String>,
    /// USD per 1M output tokens.
    #[serde(default)]
    pub output: Option<String>,
    /// USD per 1M prompt-cache read tokens.
    #[serde(default)]
    pub cache_read: Option<String>,
    /// USD per 1M prompt-cache write tokens.
    #[serde(default)]
    pub cache_write: Option<String>,
    /// Where the price comes from.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: String,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default)]
    price: Vec<PriceEntry>,
}

fn usd() -> String {
    "USD".into()
}

type Key = (Provider, String, Option<String>);

/// Prices by provider, model and (Bedrock) region.
#[derive(Debug, Clone)]
pub struct Catalog {
    version: String,
    prices: HashMap<Key, Price>,
}

fn decimal(field: &str, v: &Option<String>) -> Result<Option<BigDecimal>, String> {
    let Some(s) = v else { return Ok(None) };
    let d = BigDecimal::from_str(s.trim())
        .map_err(|_| format!("{field} = {s:?} is not a decimal number"))?;
    if d.sign() == bigdecimal::num_bigint::Sign::Minus {
        return Err(format!("{field} = {s} is negative"));
    }
    let d = d.normalized();
    if d.fractional_digit_count() > MAX_PRICE_SCALE {
        return Err(format!(
            "{field} = {s} has more than {MAX_PRICE_SCALE} decimals (USD per 1M tokens)"
        ));
    }
    Ok(Some(d))
}

impl Catalog {
    /// The catalog that ships with Logbook.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::parse(BUILTIN)
    }

    /// A catalog with no prices (every call unpriced).
    pub fn empty(version: &str) -> Catalog {
        Catalog {
            version: version.to_string(),
            prices: HashMap::new(),
        }
    }

    /// Parse a catalog file.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| {
            CatalogError::Syntax(format!(
                "{} (prices are strings such as \"0.25\", in USD per 1M tokens)",
                e.message()
            ))
        })?;
        if file.currency != "USD" {
            return Err(CatalogError::Syntax(format!(
                "currency {:?}: only USD is supported",
                file.currency
            )));
        }
        if file.version.trim().is_empty() {
            return Err(CatalogError::Syntax("version must not be empty".into()));
        }
        let mut c = Catalog::empty(file.version.trim());
        c.add_entries(&file.price)?;
        Ok(c)
    }

    /// Add entries; an entry for a (provider, model, region) already priced replaces it.
    /// Two entries of `entries` for the same key are an error (which one holds?).
    pub fn add_entries(&mut self, entries: &[PriceEntry]) -> Result<(), CatalogError> {
        let mut seen = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let err = |message: String| CatalogError::Entry {
                index: i + 1,
                model: e.models.first().cloned().unwrap_or_default(),
                message,
            };
            let provider = Provider::parse(&e.provider).ok_or_else(|| {
                err(format!(
                    "provider {:?} is not one of bedrock, openai, anthropic",
                    e.provider
                ))
            })?;
            if e.models.is_empty() || e.models.iter().any(|m| m.trim().is_empty()) {
                return Err(err("models must name at least one model, none empty".into()));
            }
            match provider {
                Provider::Bedrock if e.regions.is_empty() => {
                    return Err(err(
                        "a Bedrock price needs regions (Bedrock prices differ by region)".into(),
                    ))
                }
                Provider::OpenAi | Provider::Anthropic if !e.regions.is_empty() => {
                    return Err(err(format!("{} prices have no region", provider.as_str())))
                }
                _ => {}
            }
            let price = Price {
                input: decimal("input", &e.input).map_err(err)?,
                output: decimal("output", &e.output).map_err(err)?,
                cache_read: decimal("cache_read", &e.cache_read).map_err(err)?,
                cache_write: decimal("cache_write", &e.cache_write).map_err(err)?,
                source: e.source.clone().unwrap_or_default(),
            };
            if price.input.is_none() && price.output.is_none() {
                return Err(err("give at least input or output".into()));
            }
            let regions: Vec<Option<String>> = if e.regions.is_empty() {
                vec![None]
            } else {
                e.regions
                    .iter()
                    .map(|r| Some(r.trim().to_string()))
                    .collect()
            };
            for m in &e.models {
                for r in &regions {
                    let key = (provider, m.trim().to_string(), r.clone());
                    if !seen.insert(key.clone()) {
                        return Err(err(format!(
                            "{} {}{} is priced twice",
                            provider.as_str(),
                            key.1,
                            r.as_deref().map(|r| format!(" in {r}")).unwrap_or_default()
                        )));
                    }
                    self.prices.insert(key, price.clone());
                }
            }
        }
        Ok(())
    }

    /// Overlay another catalog (its entries win) and name the result after both.
    pub fn overlay(mut self, other: Catalog) -> Catalog {
        self.version = format!("{}+{}", self.version, other.version);
        self.prices.extend(other.prices);
        self
    }

    /// The version records carry (`logbook.priceCatalog`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of priced (provider, model, region) keys.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// No prices at all?
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price of `model` from `provider` (in `region`, for Bedrock).
    pub fn lookup(&self, provider: Provider, model: &str, region: &str) -> Option<&Price> {
        match provider {
            Provider::Bedrock => {
                let m = bedrock_base_model(model);
                self.prices
                    .get(&(provider, m.to_string(), Some(region.to_string())))
            }
            Provider::OpenAi => self
                .prices
                .get(&(provider, model.to_string(), None))
                .or_else(|| {
                    let base = strip_date_suffix(model)?;
                    self.prices.get(&(provider, base.to_string(), None))
                }),
            Provider::Anthropic => self.prices.get(&(provider, model.to_string(), None)),
        }
    }

    /// The cost of `tokens` at `price`, or why it has none.
    pub fn cost(price: &Price, tokens: Tokens) -> Result<BigDecimal, &'static str> {
        let parts = [
            (tokens.input, &price.input, "input"),
            (tokens.output, &price.output, "output"),
            (tokens.cache_read, &price.cache_read, "cache-read"),
            (tokens.cache_write, &price.cache_write, "cache-write"),
        ];
        let mut micro = BigDecimal::from(0);
        for (n, p, kind) in parts {
            if n == 0 {
                continue;
            }
            let p = p.as_ref().ok_or(kind)?;
            micro += BigDecimal::from(n) * p;
        }
        Ok((micro / BigDecimal::from(1_000_000)).with_scale(COST_SCALE))
    }

    /// Price one record: who billed it, its tokens, and the catalog's price.
    pub fn price(&self, r: &InvocationRecord) -> Priced {
        let output_tokens = r.output.as_ref().and_then(|o| o.output_token_count);
        let any_tokens = r.input.input_token_count.is_some()
            || output_tokens.is_some()
            || r.input.cache_read_input_token_count.is_some()
            || r.input.cache_write_input_token_count.is_some();
        if let (false, Some(est)) = (any_tokens, r.logbook.estimated_usage) {
            // The model produced output but reported no usage: priced from the estimate
            // (marked as such on the record), never a silent 0 for tokens it generated.
            return self.price_tokens(
                r,
                Tokens {
                    input: est.input_tokens,
                    output: est.output_tokens,
                    cache_read: 0,
                    cache_write: 0,
                },
            );
        }
        if !any_tokens {
            return match r.error_code.as_deref() {
                Some("GatewayInterrupted") => Priced::Unpriced(
                    "the stream was interrupted before the model reported its usage".into(),
                ),
                // Refused or failed before or at the model with nothing billed.
                Some(_) => Priced::Cost(BigDecimal::from(0).with_scale(COST_SCALE)),
                None => Priced::Unpriced("the model reported no token counts".into()),
            };
        }
        let tokens = Tokens {
            input: r.input.input_token_count.unwrap_or(0),
            output: output_tokens.unwrap_or(0),
            cache_read: r.input.cache_read_input_token_count.unwrap_or(0),
            cache_write: r.input.cache_write_input_token_count.unwrap_or(0),
        };
        self.price_tokens(r, tokens)
    }

    /// Price `tokens` of the record's model, as billed by its provider in its region.
    fn price_tokens(&self, r: &InvocationRecord, tokens: Tokens) -> Priced {
        let (provider, model) = billed_by(r);
        let region = r.inference_region.as_deref().unwrap_or(&r.region);
        let Some(price) = self.lookup(provider, model, region) else {
            let where_ = if provider == Provider::Bedrock {
                format!(" in {region}")
            } else {
                String::new()
            };
            return Priced::Unpriced(format!(
                "no {} price for {model}{where_} in catalog {}",
                provider.as_str(),
                self.version
            ));
        };
        match Catalog::cost(price, tokens) {
            Ok(c) => Priced::Cost(c),
            Err(kind) => Priced::Unpriced(format!(
                "the call used {kind} tokens and catalog {} has no {kind} price for {} {model}",
                self.version,
                provider.as_str()
            )),
        }
    }

    /// Stamp `logbook.cost`, `logbook.priceCatalog` and, when unpriced,
    /// `logbook.unpriced` on the record.
    pub fn price_record(&self, r: &mut InvocationRecord) {
        let priced = self.price(r);
        r.logbook.price_catalog = Some(self.version.clone());
        match priced {
            Priced::Cost(c) => {
                r.logbook.cost = Some(format_cost(&c));
                r.logbook.unpriced = None;
            }
            Priced::Unpriced(why) => {
                r.logbook.cost = None;
                r.logbook.unpriced = Some(why);
            }
        }
    }
}

/// A cost as the record writes it: plain decimal, no exponent, trailing zeros dropped
/// (`0.00000024`, `0`).
pub fn format_cost(c: &BigDecimal) -> String {
    let n = c.normalized();
    if n.is_zero() {
        "0".into()
    } else {
        n.to_plain_string()
    }
}

/// Who billed the call and for which model.
fn billed_by(r: &InvocationRecord) -> (Provider, &str) {
    let ext = &r.logbook;
    let upstream = ext.upstream_model.as_deref().unwrap_or(&r.model_id);
    (
        billing_provider(ext.provider_type.as_deref(), &ext.api),
        upstream,
    )
}

/// Who bills a call served by a provider of `provider_type` (`openai`, `anthropic`,
/// `bedrock`, `mock`) on `api` (`bedrock-runtime`, `openai`). The mock imitates the API
/// it was called on.
pub fn billing_provider(provider_type: Option<&str>, api: &str) -> Provider {
    match provider_type {
        Some("openai") => Provider::OpenAi,
        Some("anthropic") => Provider::Anthropic,
        Some("bedrock") => Provider::Bedrock,
        _ if api == "openai" => Provider::OpenAi,
        _ => Provider::Bedrock,
    }
}

/// Geographic prefixes of Bedrock's cross-region inference profiles.
const PROFILE_PREFIXES: &[&str] = &["us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"];

/// The foundation model behind a Bedrock model id, ARN or inference profile.
pub fn bedrock_base_model(id: &str) -> &str {
    let id = if id.starts_with("arn:") {
        id.rsplit_once('/').map_or(id, |(_, m)| m)
    } else {
        id
    };
    match id.split_once('.') {
        Some((geo, rest)) if PROFILE_PREFIXES.contains(&geo) && rest.contains('.') => rest,
        _ => id,
    }
}

/// `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`.
fn strip_date_suffix(model: &str) -> Option<&str> {
    let b = model.as_bytes();
    if b.len() < 12 {
        return None;
    }
    let (head, tail) = model.split_at(model.len() - 11);
    let t = tail.as_bytes();
    let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
    (t[0] == b'-' && digits(1..5) && t[5] == b'-' && digits(6..8) && t[8] == b'-' && digits(9..11))
        .then_some(head)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use logbook_record::{Identity, Input, LogbookExt, Output};

    fn record(api: &str, kind: Option<&str>, model: &str, region: &str) -> InvocationRecord {
        InvocationRecord {
            schema_type: "ModelInvocationLog".into(),
            schema_version: "1.0".into(),
            timestamp: "2026-12-01T00:00:00Z".into(),
            account_id: "123456789012".into(),
            identity: Identity {
                arn: "arn:aws:iam::123456789012:user/a".into(),
            },
            region: region.into(),
            request_id: "r".into(),
            operation: "Converse".into(),
            model_id: model.into(),
            input: Input::default(),
            output: None,
            request_metadata: None,
            inference_region: None,
            error_code: None,
            performance_config: None,
            logbook: LogbookExt {
                api: api.into(),
                provider_type: kind.map(str::to_string),
                ..Default::default()
            },
        }
    }

    fn with_tokens(
        mut r: InvocationRecord,
        i: u64,
        o: u64,
        cr: Option<u64>,
        cw: Option<u64>,
    ) -> InvocationRecord {
        r.input.input_token_count = Some(i);
        r.input.cache_read_input_token_count = cr;
        r.input.cache_write_input_token_count = cw;
        r.output = Some(Output {
            output_token_count: Some(o),
            ..Default::default()
        });
        r
    }

    fn cost(c: &Catalog, r: &InvocationRecord) -> String {
        match c.price(r) {
            Priced::Cost(d) => format_cost(&d),
            Priced::Unpriced(why) => panic!("unpriced: {why}"),
        }
    }

    #[test]
    fn the_builtin_catalog_parses_and_cites_a_source_for_every_entry() {
        let c = Catalog::builtin().unwrap();
        assert!(c.len() > 50, "{}", c.len());
        assert!(c.prices.values().all(|p| p.source.starts_with("https://")));
        assert_eq!(c.version(), "2026-11-30");
    }

    #[test]
    fn a_converse_call_is_priced_exactly() {
        let c = Catalog::builtin().unwrap();
        // Nova Lite: 0.06 in, 0.24 out per 1M. 4 in, 38 out → 0.00000024 + 0.00000912.
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("mock"),
                "amazon.nova-lite-v1:0",
                "us-east-1",
            ),
            4,
            38,
            Some(0),
            Some(0),
        );
        assert_eq!(cost(&c, &r), "0.00000936");
    }

    #[test]
    fn cache_tokens_are_priced_at_their_own_rates() {
        let c = Catalog::builtin().unwrap();
        // Sonnet 4: 3 in, 15 out, 0.30 cache read, 3.75 cache write per 1M.
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("bedrock"),
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "us-east-1",
            ),
            12_345,
            678,
            Some(90_000),
            Some(1_000),
        );
        // 12345*3 + 678*15 + 90000*0.30 + 1000*3.75 = 37035 + 10170 + 27000 + 3750 = 77955 µ$
        assert_eq!(cost(&c, &r), "0.077955");
    }

    #[test]
    fn openai_snapshots_are_priced_as_their_model_and_the_mock_as_its_api() {
        let c = Catalog::builtin().unwrap();
        let r = with_tokens(
            record(
                "openai",
                Some("openai"),
                "gpt-4o-mini-2024-07-18",
                "us-east-1",
            ),
            1_000_000,
            1_000_000,
            Some(1_000_000),
            None,
        );
        assert_eq!(cost(&c, &r), "0.825");
        let r = with_tokens(
            record("openai", Some("mock"), "gpt-4o", "us-east-1"),
            10,
            10,
            None,
            None,
        );
        assert_eq!(cost(&c, &r), "0.000125");
    }

    #[test]
    fn arns_and_inference_profiles_reduce_to_the_foundation_model() {
        assert_eq!(
            bedrock_base_model("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(
            bedrock_base_model(
                "arn:aws:bedrock:us-east-1:1:inference-profile/eu.amazon.nova-lite-v1:0"
            ),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(
            bedrock_base_model("global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            bedrock_base_model("amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(bedrock_base_model("us.x"), "us.x");
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date_suffix("gpt-4o"), None);
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-0x"), None);
    }

    #[test]
    fn a_missing_price_is_unpriced_with_a_reason_never_zero() {
        let c = Catalog::builtin().unwrap();
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("mock"),
                "amazon.nova-lite-v1:0",
                "eu-west-3",
            ),
            4,
            38,
            None,
            None,
        );
        assert!(matches!(c.price(&r), Priced::Unpriced(w) if w.contains("eu-west-3")));
        let r = with_tokens(
            record("openai", Some("openai"), "gpt-x", "us-east-1"),
            4,
            38,
            None,
            None,
        );
        assert!(matches!(c.price(&r), Priced::Unpriced(w) if w.contains("gpt-x")));
        // Claude 3 Haiku on Bedrock has no cache prices: a cache write makes it unpriced.
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("mock"),
                "anthropic.claude-3-haiku-20240307-v1:0",
                "us-east-1",
            ),
            4,
            38,
            Some(0),
            Some(10),
        );
        assert!(matches!(c.price(&r), Priced::Unpriced(w) if w.contains("cache-write")));
        // ... but zero cache tokens are fine.
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("mock"),
                "anthropic.claude-3-haiku-20240307-v1:0",
                "us-east-1",
            ),
            4,
            38,
            Some(0),
            Some(0),
        );
        assert_eq!(cost(&c, &r), "0.0000485");
    }

    #[test]
    fn calls_without_usage() {
        let c = Catalog::builtin().unwrap();
        let mut r = record(
            "bedrock-runtime",
            Some("mock"),
            "amazon.nova-lite-v1:0",
            "us-east-1",
        );
        assert!(matches!(c.price(&r), Priced::Unpriced(_)));
        r.error_code = Some("ValidationException".into());
        assert_eq!(cost(&c, &r), "0");
        r.error_code = Some("GatewayInterrupted".into());
        assert!(matches!(c.price(&r), Priced::Unpriced(w) if w.contains("interrupted")));
        let mut r = with_tokens(r, 5, 0, None, None);
        c.price_record(&mut r);
        assert_eq!(r.logbook.cost.as_deref(), Some("0.0000003"));
        assert_eq!(r.logbook.price_catalog.as_deref(), Some("2026-11-30"));
        assert_eq!(r.logbook.unpriced, None);
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_entry() {
        let bad = [
            ("version = \"v\"\n[[price]]\nprovider = \"x\"\nmodels = [\"m\"]\ninput = \"1\"", "provider"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = 1.5", "strings"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = \"-1\"", "negative"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = \"0.0000001\"", "decimals"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = \"abc\"", "not a decimal"),
            ("version = \"v\"\n[[price]]\nprovider = \"bedrock\"\nmodels = [\"m\"]\ninput = \"1\"", "regions"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nregions = [\"us-east-1\"]\nmodels = [\"m\"]\ninput = \"1\"", "no region"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = []\ninput = \"1\"", "at least one"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]", "at least input"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\", \"m\"]\ninput = \"1\"", "twice"),
            ("version = \"v\"\ncurrency = \"EUR\"", "USD"),
            ("version = \"\"", "empty"),
            ("version = \"v\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = \"1\"\nextra = 1", "unknown field"),
        ];
        for (text, want) in bad {
            let e = Catalog::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn an_overlay_overrides_and_names_both_versions() {
        let base = Catalog::builtin().unwrap();
        let over = Catalog::parse("version = \"acme-1\"\n[[price]]\nprovider = \"openai\"\nmodels = [\"gpt-4o-mini\"]\ninput = \"0.10\"\noutput = \"0.50\"\n[[price]]\nprovider = \"bedrock\"\nregions = [\"eu-west-3\"]\nmodels = [\"amazon.nova-lite-v1:0\"]\ninput = \"0.07\"\noutput = \"0.28\"").unwrap();
        let c = base.overlay(over);
        assert_eq!(c.version(), "2026-11-30+acme-1");
        let r = with_tokens(
            record("openai", Some("openai"), "gpt-4o-mini", "us-east-1"),
            1_000_000,
            1_000_000,
            None,
            None,
        );
        assert_eq!(cost(&c, &r), "0.6");
        let r = with_tokens(
            record(
                "bedrock-runtime",
                Some("mock"),
                "amazon.nova-lite-v1:0",
                "eu-west-3",
            ),
            1_000_000,
            0,
            None,
            None,
        );
        assert_eq!(cost(&c, &r), "0.07");
    }

    proptest::proptest! {
        /// Cost is linear and exact: pricing a call equals the sum of pricing its parts,
        /// digit for digit, and never has more than 12 decimals.
        #[test]
        fn cost_is_exact_and_additive(i in 0u64..10_000_000, o in 0u64..10_000_000, cr in 0u64..10_000_000, cw in 0u64..10_000_000) {
            let p = Price {
                input: Some(BigDecimal::from_str("3.00").unwrap()),
                output: Some(BigDecimal::from_str("15").unwrap()),
                cache_read: Some(BigDecimal::from_str("0.30").unwrap()),
                cache_write: Some(BigDecimal::from_str("0.000375").unwrap()),
                source: String::new(),
            };
            let all = Catalog::cost(&p, Tokens { input: i, output: o, cache_read: cr, cache_write: cw }).unwrap();
            let parts = Catalog::cost(&p, Tokens { input: i, ..Default::default() }).unwrap()
                + Catalog::cost(&p, Tokens { output: o, ..Default::default() }).unwrap()
                + Catalog::cost(&p, Tokens { cache_read: cr, ..Default::default() }).unwrap()
                + Catalog::cost(&p, Tokens { cache_write: cw, ..Default::default() }).unwrap();
            proptest::prop_assert_eq!(&all, &parts);
            proptest::prop_assert!(all.normalized().fractional_digit_count() <= COST_SCALE);
        }
    }
}
