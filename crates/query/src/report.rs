//! Chargeback: cost and tokens by period and by any dimensions, computed in SQL over the
//! `invocations` table, with exact decimal sums.
//!
//! **Allocation rule.** Every call lands in exactly one row: each dimension gives one
//! value per call (`(none)` when the call has none), so a call is never counted once per
//! tag, and the report's total is the sum of the calls' costs, digit for digit. A bare key
//! (`--by team`) takes the caller's principal tag `team` (set by the operator, not
//! forgeable by the caller) and falls back to the call's `requestMetadata.team`;
//! `tag:team` and `meta:team` read only one of them.
//!
//! **Periods** are cut in an IANA time zone (`Europe/Berlin`; UTC by default): a day,
//! a week (ISO, Monday first) or a month starts at local midnight. Records stay in UTC.

use crate::{QueryError, QueryResult};
use logbook_store::schema::scaled_decimal;
use std::fmt::Write as _;

/// How long a period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A calendar day.
    Day,
    /// An ISO week (Monday to Sunday).
    Week,
    /// A calendar month.
    Month,
}

impl Period {
    /// Parse `day`, `week`, `month`.
    pub fn parse(s: &str) -> Result<Period, QueryError> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            o => Err(QueryError::Invalid(format!(
                "period {o:?}: expected day, week or month"
            ))),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// One dimension to group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    /// The caller's ARN.
    Principal,
    /// The model id as called.
    Model,
    /// The region called.
    Region,
    /// The account.
    Account,
    /// The API (`bedrock-runtime`, `openai`).
    Api,
    /// The operation.
    Operation,
    /// A principal tag.
    Tag(String),
    /// A `requestMetadata` key.
    Meta(String),
    /// A principal tag, else the `requestMetadata` key of the same name.
    Key(String),
}

/// Keys may hold letters, digits and `_-:@+=/ ` (no dots: a dot would be a path).
fn check_key(k: &str) -> Result<&str, QueryError> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:@+=/ ".contains(c));
    if ok {
        Ok(k)
    } else {
        Err(QueryError::Invalid(format!(
            "dimension key {k:?}: use 1 to 128 letters, digits or _-:@+=/ and spaces"
        )))
    }
}

impl Dimension {
    /// Parse `principal`, `model`, `region`, `account`, `api`, `operation`, `tag:K`,
    /// `meta:K`, or a bare key `K`.
    pub fn parse(s: &str) -> Result<Dimension, QueryError> {
        let s = s.trim();
        Ok(match s {
            "principal" | "identity" | "identity.arn" => Dimension::Principal,
            "model" | "modelId" => Dimension::Model,
            "region" => Dimension::Region,
            "account" | "accountId" => Dimension::Account,
            "api" => Dimension::Api,
            "operation" => Dimension::Operation,
            _ => {
                if let Some(k) = s.strip_prefix("tag:") {
                    Dimension::Tag(check_key(k)?.to_string())
                } else if let Some(k) = s.strip_prefix("meta:") {
                    Dimension::Meta(check_key(k)?.to_string())
                } else {
                    Dimension::Key(check_key(s)?.to_string())
                }
            }
        })
    }

    /// The column heading.
    pub fn name(&self) -> String {
        match self {
            Dimension::Principal => "principal".into(),
            Dimension::Model => "model".into(),
            Dimension::Region => "region".into(),
            Dimension::Account => "account".into(),
            Dimension::Api => "api".into(),
            Dimension::Operation => "operation".into(),
            Dimension::Tag(k) => format!("tag:{k}"),
            Dimension::Meta(k) => format!("meta:{k}"),
            Dimension::Key(k) => k.clone(),
        }
    }

    fn sql(&self) -> String {
        // Keys are checked: no quote can reach the SQL text.
        let tag = |k: &str| format!("json_get(principal_tags, '{k}')");
        let meta = |k: &str| format!("json_get(request_metadata, '{k}')");
        let e = match self {
            Dimension::Principal => "identity_arn".into(),
            Dimension::Model => "model_id".into(),
            Dimension::Region => "region".into(),
            Dimension::Account => "account_id".into(),
            Dimension::Api => "api".into(),
            Dimension::Operation => "operation".into(),
            Dimension::Tag(k) => tag(k),
            Dimension::Meta(k) => meta(k),
            Dimension::Key(k) => format!("coalesce({}, {})", tag(k), meta(k)),
        };
        format!("coalesce(CAST({e} AS VARCHAR), '{NONE}')")
    }
}

/// The value of a dimension a call does not have.
pub const NONE: &str = "(none)";

/// What to report.
#[derive(Debug, Clone)]
pub struct Chargeback {
    /// Group by these, in order.
    pub by: Vec<Dimension>,
    /// Period length.
    pub period: Period,
    /// IANA zone the periods are cut in.
    pub tz: String,
}

/// Check an IANA zone name (`UTC`, `Europe/Berlin`).
pub fn check_tz(tz: &str) -> Result<&str, QueryError> {
    tz.parse::<chrono_tz::Tz>().map(|_| tz).map_err(|_| {
        QueryError::Invalid(format!(
            "time zone {tz:?}: not an IANA zone name (e.g. UTC, Europe/Berlin)"
        ))
    })
}

/// One row: a period and dimension values, with the sums.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Period start, local date (`2026-12-01`; `2026-12` for months).
    pub period: String,
    /// Dimension values, in `by` order.
    pub values: Vec<String>,
    /// Calls.
    pub calls: u64,
    /// Calls with no cost (no price, usage unknown).
    pub unpriced_calls: u64,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cache read tokens.
    pub cache_read_tokens: u64,
    /// Cache write tokens.
    pub cache_write_tokens: u64,
    /// USD, exact.
    pub cost: String,
}

/// A finished report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Column headings of the dimensions.
    pub by: Vec<String>,
    /// `day`, `week`, `month`.
    pub period: String,
    /// Zone the periods are cut in.
    pub time_zone: String,
    /// Currency of every cost.
    pub currency: String,
    /// The rows, by period then dimension values.
    pub rows: Vec<Row>,
    /// Sums over all rows (= over all calls in range).
    pub total: Row,
}

impl Chargeback {
    /// The SQL that computes the rows over `invocations`.
    pub fn sql(&self) -> Result<String, QueryError> {
        let tz = check_tz(&self.tz)?;
        let unit = self.period.unit();
        let local = format!("arrow_cast(timestamp, 'Timestamp(Millisecond, Some(\"{tz}\"))')");
        let fmt = if self.period == Period::Month {
            "%Y-%m"
        } else {
            "%Y-%m-%d"
        };
        // The zone conversion and the formatting are the costly part per record, so the
        // records are first grouped without them: with no dimension, per 15 minutes (every
        // zone's offset is a multiple of 15 minutes, so no bucket straddles a local
        // period) and then cut into local periods; with dimensions (whose values can be
        // many, so buckets × values could outnumber the records), per local period as a
        // timestamp, formatted once per group. Sums of sums are the same exact decimals.
        let sums = "count(*) AS calls, count(*) - count(cost) AS unpriced, \
             sum(input_token_count) AS input_tokens, sum(output_token_count) AS output_tokens, \
             sum(cache_read_input_token_count) AS cache_read, \
             sum(cache_write_input_token_count) AS cache_write, sum(cost) AS cost";
        let mut inner = vec![if self.by.is_empty() {
            "date_bin(INTERVAL '15 minutes', timestamp) AS p".to_string()
        } else {
            format!("date_trunc('{unit}', {local}) AS p")
        }];
        let local_p = local.replace("(timestamp,", "(p,");
        let mut outer = vec![if self.by.is_empty() {
            format!("to_char(date_trunc('{unit}', {local_p}), '{fmt}') AS period")
        } else {
            format!("to_char(p, '{fmt}') AS period")
        }];
        for (i, d) in self.by.iter().enumerate() {
            inner.push(format!("{} AS d{i}", d.sql()));
            outer.push(format!("d{i}"));
        }
        let keys: Vec<String> = (0..=self.by.len()).map(|i| (i + 1).to_string()).collect();
        let keys = keys.join(", ");
        let inner_sql = format!(
            "SELECT {}, {sums} FROM invocations GROUP BY {keys}",
            inner.join(", ")
        );
        Ok(if self.by.is_empty() {
            format!(
                "SELECT {}, sum(calls) AS calls, sum(unpriced) AS unpriced, \
                 coalesce(sum(input_tokens), 0) AS input_tokens, \
                 coalesce(sum(output_tokens), 0) AS output_tokens, \
                 coalesce(sum(cache_read), 0) AS cache_read, \
                 coalesce(sum(cache_write), 0) AS cache_write, \
                 CAST(coalesce(sum(cost), 0) AS VARCHAR) AS cost \
                 FROM ({inner_sql}) GROUP BY {keys} ORDER BY {keys}",
                outer.join(", ")
            )
        } else {
            format!(
                "SELECT {}, calls, unpriced, coalesce(input_tokens, 0) AS input_tokens, \
                 coalesce(output_tokens, 0) AS output_tokens, \
                 coalesce(cache_read, 0) AS cache_read, coalesce(cache_write, 0) AS cache_write, \
                 CAST(coalesce(cost, 0) AS VARCHAR) AS cost \
                 FROM ({inner_sql}) ORDER BY {keys}",
                outer.join(", ")
            )
        })
    }

    /// The report from the rows [`Chargeback::sql`] returned.
    pub fn report(&self, r: &QueryResult) -> Result<Report, QueryError> {
        let n = self.by.len();
        let bad = |what: &str| QueryError::Engine(format!("chargeback: {what}"));
        let int = |v: &Option<String>| -> Result<u64, QueryError> {
            v.as_deref()
                .unwrap_or("0")
                .parse::<u64>()
                .map_err(|_| bad("a count is not an integer"))
        };
        let mut rows = Vec::with_capacity(r.rows.len());
        let mut total = Row {
            period: "total".into(),
            values: vec![String::new(); n],
            calls: 0,
            unpriced_calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost: String::new(),
        };
        let mut total_cost: i128 = 0;
        for cells in &r.rows {
            if cells.len() != n + 8 {
                return Err(bad("unexpected columns"));
            }
            let cost_text = cells[n + 7].as_deref().unwrap_or("0");
            let cost = scaled_decimal(cost_text).ok_or_else(|| bad("a cost is not a decimal"))?;
            let row = Row {
                period: cells[0].clone().unwrap_or_default(),
                values: cells[1..=n]
                    .iter()
                    .map(|c| c.clone().unwrap_or_else(|| NONE.into()))
                    .collect(),
                calls: int(&cells[n + 1])?,
                unpriced_calls: int(&cells[n + 2])?,
                input_tokens: int(&cells[n + 3])?,
                output_tokens: int(&cells[n + 4])?,
                cache_read_tokens: int(&cells[n + 5])?,
                cache_write_tokens: int(&cells[n + 6])?,
                cost: format_scaled(cost),
            };
            total.calls += row.calls;
            total.unpriced_calls += row.unpriced_calls;
            total.input_tokens += row.input_tokens;
            total.output_tokens += row.output_tokens;
            total.cache_read_tokens += row.cache_read_tokens;
            total.cache_write_tokens += row.cache_write_tokens;
            total_cost = total_cost
                .checked_add(cost)
                .ok_or_else(|| bad("the total overflows"))?;
            rows.push(row);
        }
        total.cost = format_scaled(total_cost);
        Ok(Report {
            by: self.by.iter().map(Dimension::name).collect(),
            period: self.period.unit().into(),
            time_zone: self.tz.clone(),
            currency: "USD".into(),
            rows,
            total,
        })
    }
}

/// The columns of a FOCUS export: the FinOps Open Cost and Usage Specification 1.0
/// column set, then Logbook's own `x_` columns (custom columns are allowed by the spec).
pub const FOCUS_COLUMNS: &[&str] = &[
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Calls",
    "x_UnpricedCalls",
    "x_InputTokens",
    "x_OutputTokens",
    "x_CacheReadTokens",
    "x_CacheWriteTokens",
    "x_PriceCatalog",
];

impl Chargeback {
    /// The SQL of a FOCUS export: one charge per period, account, region, API, model and
    /// the `by` dimensions (which become the charge's `Tags`).
    pub fn focus_sql(&self) -> Result<String, QueryError> {
        let tz = check_tz(&self.tz)?;
        let unit = self.period.unit();
        let local = format!("arrow_cast(timestamp, 'Timestamp(Millisecond, Some(\"{tz}\"))')");
        let utc = |e: String| {
            format!(
                "to_char(arrow_cast({e}, 'Timestamp(Millisecond, Some(\"UTC\"))'), '%Y-%m-%dT%H:%M:%SZ')"
            )
        };
        let mut cols = vec![
            format!("{} AS ps", utc(format!("date_trunc('{unit}', {local})"))),
            format!(
                "{} AS pe",
                utc(format!(
                    "date_trunc('{unit}', {local}) + INTERVAL '1 {unit}'"
                ))
            ),
            format!("{} AS bs", utc(format!("date_trunc('month', {local})"))),
            format!(
                "{} AS be",
                utc(format!("date_trunc('month', {local}) + INTERVAL '1 month'"))
            ),
            "coalesce(account_id, '') AS account".into(),
            "coalesce(region, '') AS region".into(),
            "coalesce(api, '') AS api".into(),
            "coalesce(model_id, '') AS model".into(),
        ];
        for (i, d) in self.by.iter().enumerate() {
            cols.push(format!("{} AS d{i}", d.sql()));
        }
        let keys: Vec<String> = (1..=8 + self.by.len()).map(|i| i.to_string()).collect();
        Ok(format!(
            "SELECT {}, count(*) AS calls, count(*) - count(cost) AS unpriced, \
             coalesce(sum(input_token_count), 0), coalesce(sum(output_token_count), 0), \
             coalesce(sum(cache_read_input_token_count), 0), \
             coalesce(sum(cache_write_input_token_count), 0), \
             CAST(coalesce(sum(cost), 0) AS VARCHAR), coalesce(max(price_catalog), '') \
             FROM invocations GROUP BY {} ORDER BY {}",
            cols.join(", "),
            keys.join(", "),
            keys.join(", ")
        ))
    }

    /// FOCUS CSV from the rows [`Chargeback::focus_sql`] returned. Costs are list prices
    /// (the catalog's), so BilledCost = EffectiveCost = ListCost = ContractedCost unless
    /// the configuration priced a negotiated rate.
    pub fn focus_csv(&self, r: &QueryResult) -> Result<String, QueryError> {
        let n = self.by.len();
        let bad = |what: &str| QueryError::Engine(format!("focus export: {what}"));
        let mut out = FOCUS_COLUMNS.join(",") + "\r\n";
        for cells in &r.rows {
            if cells.len() != 8 + n + 8 {
                return Err(bad("unexpected columns"));
            }
            let c = |i: usize| cells[i].clone().unwrap_or_default();
            let cost_text = c(8 + n + 6);
            let cost = scaled_decimal(if cost_text.is_empty() {
                "0"
            } else {
                &cost_text
            })
            .ok_or_else(|| bad("a cost is not a decimal"))?;
            let cost = format_scaled(cost);
            let num = |i: usize| -> Result<u64, QueryError> {
                c(i).parse::<u64>()
                    .map_err(|_| bad("a count is not an integer"))
            };
            let tokens = num(8 + n + 2)? + num(8 + n + 3)? + num(8 + n + 4)? + num(8 + n + 5)?;
            let (provider, service) = match c(6).as_str() {
                "openai" => ("OpenAI", "OpenAI API"),
                _ => ("Amazon Web Services", "Amazon Bedrock"),
            };
            let mut tags = serde_json::Map::new();
            for (i, d) in self.by.iter().enumerate() {
                tags.insert(d.name(), serde_json::Value::String(c(8 + i)));
            }
            let model = c(7);
            let row: Vec<String> = vec![
                String::new(),
                cost.clone(),
                c(4),
                c(4),
                "USD".into(),
                c(3),
                c(2),
                "Usage".into(),
                String::new(),
                format!("{model} tokens ({})", c(6)),
                "Usage-Based".into(),
                c(1),
                c(0),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                tokens.to_string(),
                "Tokens".into(),
                cost.clone(),
                String::new(),
                cost.clone(),
                provider.into(),
                cost,
                String::new(),
                "Standard".into(),
                tokens.to_string(),
                "Tokens".into(),
                provider.into(),
                provider.into(),
                c(5),
                c(5),
                model.clone(),
                model.clone(),
                "Model".into(),
                "AI and Machine Learning".into(),
                service.into(),
                model,
                String::new(),
                c(4),
                c(4),
                serde_json::Value::Object(tags).to_string(),
                c(8 + n),
                c(8 + n + 1),
                c(8 + n + 2),
                c(8 + n + 3),
                c(8 + n + 4),
                c(8 + n + 5),
                c(8 + n + 7),
            ];
            out.push_str(
                &row.iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push_str("\r\n");
        }
        Ok(out)
    }
}

/// An amount in units of 10^-12 as a plain decimal ([`logbook_record::money::format`]).
pub fn format_scaled(v: i128) -> String {
    logbook_record::money::format(v)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const SUMS: [&str; 8] = [
    "calls",
    "unpriced_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "",
];

impl Report {
    fn headings(&self) -> Vec<String> {
        let mut h = vec!["period".to_string()];
        h.extend(self.by.iter().cloned());
        h.extend(SUMS.iter().take(7).map(|s| s.to_string()));
        h
    }

    fn cells(row: &Row) -> Vec<String> {
        let mut c = vec![row.period.clone()];
        c.extend(row.values.iter().cloned());
        c.extend([
            row.calls.to_string(),
            row.unpriced_calls.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            row.cache_read_tokens.to_string(),
            row.cache_write_tokens.to_string(),
            row.cost.clone(),
        ]);
        c
    }

    /// CSV with a header and a final `total` row.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(",")
                + "\r\n"
        };
        out.push_str(&line(self.headings()));
        for r in self.rows.iter().chain(std::iter::once(&self.total)) {
            out.push_str(&line(Report::cells(r)));
        }
        out
    }

    /// An aligned text table with a final `total` row.
    pub fn to_table(&self) -> String {
        let mut grid = vec![self.headings()];
        grid.extend(self.rows.iter().map(Report::cells));
        grid.push(Report::cells(&self.total));
        let widths: Vec<usize> = (0..grid[0].len())
            .map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let numeric = self.by.len() + 1;
        let mut out = format!(
            "Chargeback by {}, per {} ({}), USD\n",
            if self.by.is_empty() {
                "period".to_string()
            } else {
                self.by.join(", ")
            },
            self.period,
            self.time_zone
        );
        for (n, r) in grid.iter().enumerate() {
            if n == grid.len() - 1 {
                let _ = writeln!(
                    out,
                    "{}",
                    widths
                        .iter()
                        .map(|w| "-".repeat(*w))
                        .collect::<Vec<_>>()
                        .join("  ")
                );
            }
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i >= numeric && n > 0 {
                        format!("{c:>w$}", w = widths[i])
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }

    /// A self-contained HTML page (no scripts, no external resources).
    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Logbook chargeback</title>\
             <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
             td,th{padding:4px 10px;border-bottom:1px solid #ddd}td.n{text-align:right;font-variant-numeric:tabular-nums}\
             tr.total td{font-weight:bold;border-top:2px solid #333}</style></head><body>\n",
        );
        let _ = writeln!(
            out,
            "<h1>Chargeback</h1><p>By {}, per {} ({}), costs in USD.</p>",
            html_escape(&if self.by.is_empty() {
                "period".to_string()
            } else {
                self.by.join(", ")
            }),
            html_escape(&self.period),
            html_escape(&self.time_zone)
        );
        out.push_str("<table><thead><tr>");
        for h in self.headings() {
            let _ = write!(out, "<th>{}</th>", html_escape(&h));
        }
        out.push_str("</tr></thead><tbody>\n");
        let numeric = self.by.len() + 1;
        for (r, class) in self
            .rows
            .iter()
            .map(|r| (r, ""))
            .chain(std::iter::once((&self.total, " class=\"total\"")))
        {
            let _ = write!(out, "<tr{class}>");
            for (i, c) in Report::cells(r).iter().enumerate() {
                let cls = if i >= numeric { " class=\"n\"" } else { "" };
                let _ = write!(out, "<td{cls}>{}</td>", html_escape(c));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table></body></html>\n");
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_parse_and_refuse_what_could_reach_the_sql() {
        assert_eq!(
            Dimension::parse("team").unwrap(),
            Dimension::Key("team".into())
        );
        assert_eq!(
            Dimension::parse("tag:cost-center").unwrap(),
            Dimension::Tag("cost-center".into())
        );
        assert_eq!(
            Dimension::parse("meta:app").unwrap(),
            Dimension::Meta("app".into())
        );
        assert_eq!(Dimension::parse("model").unwrap(), Dimension::Model);
        for bad in [
            "te'am",
            "a.b",
            "",
            "tag:",
            "meta:x;DROP",
            "x\"y",
            &"k".repeat(129),
        ] {
            assert!(Dimension::parse(bad).is_err(), "{bad}");
        }
        assert!(check_tz("Europe/Berlin").is_ok());
        assert!(check_tz("UTC").is_ok());
        assert!(check_tz("Europe/Berlin'); DROP").is_err());
        assert!(check_tz("Mars/Olympus").is_err());
        assert!(Period::parse("year").is_err());
    }

    #[test]
    fn scaled_amounts_format_exactly() {
        assert_eq!(format_scaled(0), "0");
        assert_eq!(format_scaled(9_360_000), "0.00000936");
        assert_eq!(format_scaled(1_500_000_000_000), "1.5");
        assert_eq!(format_scaled(12_000_000_000_000), "12");
        assert_eq!(format_scaled(1), "0.000000000001");
    }

    #[test]
    fn a_report_sums_rows_exactly_and_renders() {
        let c = Chargeback {
            by: vec![Dimension::Key("team".into())],
            period: Period::Month,
            tz: "UTC".into(),
        };
        let q = QueryResult {
            columns: vec![],
            rows: vec![
                [
                    "2026-11",
                    "a,b",
                    "3",
                    "1",
                    "10",
                    "20",
                    "0",
                    "0",
                    "0.100000000000",
                ]
                .map(|s| Some(s.to_string()))
                .to_vec(),
                [
                    "2026-11",
                    "<x>",
                    "1",
                    "0",
                    "1",
                    "2",
                    "3",
                    "4",
                    "0.200000000001",
                ]
                .map(|s| Some(s.to_string()))
                .to_vec(),
            ],
            stats: Default::default(),
        };
        let r = c.report(&q).unwrap();
        assert_eq!(r.total.cost, "0.300000000001");
        assert_eq!(r.total.calls, 4);
        assert_eq!(r.rows[0].cost, "0.1");
        let csv = r.to_csv();
        assert!(csv.starts_with("period,team,calls,unpriced_calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd\r\n"), "{csv}");
        assert!(
            csv.contains("2026-11,\"a,b\",3,1,10,20,0,0,0.1\r\n"),
            "{csv}"
        );
        assert!(
            csv.ends_with("total,,4,1,11,22,3,4,0.300000000001\r\n"),
            "{csv}"
        );
        let html = r.to_html();
        assert!(html.contains("&lt;x&gt;") && !html.contains("<x>"));
        assert!(r.to_table().contains("0.300000000001"));
    }
}
