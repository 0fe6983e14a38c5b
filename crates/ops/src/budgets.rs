//! Budgets that hold: spend limits per principal, principal tag value, `requestMetadata`
//! value or model, per UTC day, week (Monday first) or month.
//!
//! **Enforcement.** Before a call reaches its model, [`Budgets::admit`] reserves an
//! estimate of its cost (input size / 4 tokens + its max output tokens, at the model's
//! input and output prices) in every budget it matches, under one lock: a call is refused
//! when spent + reserved + its estimate would pass a limit. The reservation is released
//! when the call ends ([`Reservation`] drops), and the call's actual cost is charged from
//! its record ([`Budgets::charge`]). So however many calls run at once, a budget is
//! overspent by at most what the calls in flight cost beyond their estimates.
//!
//! **Durability.** The server charges each record inside the journal's append, in
//! sequence order, so the state is exactly "every record up to sequence N"; it snapshots
//! that state with N and replays the journal after N at start ([`Snapshot`]).
//!
//! Money is an integer count of 10^-12 USD (the cost's exact scale).

use crate::pricing::{Catalog, Provider};
use logbook_record::InvocationRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use logbook_record::money::PICO;

/// Output tokens reserved for a call that names no maximum.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// A budget's period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// Calendar day.
    Day,
    /// ISO week, Monday first.
    Week,
    /// Calendar month.
    Month,
}

impl BudgetPeriod {
    /// The start of the period holding `ms` (epoch ms, UTC).
    pub fn start(self, ms: i64) -> i64 {
        const DAY: i64 = 86_400_000;
        let day = ms.div_euclid(DAY);
        match self {
            BudgetPeriod::Day => day * DAY,
            // 1970-01-01 was a Thursday: Monday is 3 days earlier.
            BudgetPeriod::Week => ((day + 3).div_euclid(7) * 7 - 3) * DAY,
            BudgetPeriod::Month => {
                let d =
                    time::Date::from_julian_day(2_440_588 + day as i32).unwrap_or(time::Date::MIN);
                let first = d.replace_day(1).unwrap_or(d);
                (i64::from(first.to_julian_day()) - 2_440_588) * DAY
            }
        }
    }
}

/// What a budget covers. In JSON (the cluster's shared set): `{"principal": arn}`,
/// `{"principalTag": [key, value]}`, `{"requestMetadata": [key, value]}`, `{"model": glob}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Scope {
    /// Calls by this principal ARN.
    Principal(String),
    /// Calls by principals with this tag value.
    #[serde(rename = "principalTag")]
    Tag(String, String),
    /// Calls carrying this `requestMetadata` value.
    #[serde(rename = "requestMetadata")]
    Meta(String, String),
    /// Calls to models matching this glob (`*` any run of characters).
    Model(String),
}

/// A declared budget. In JSON the limit is a USD decimal string (`"limitUsd"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// Unique name (in refusals and status).
    pub name: String,
    /// What it covers.
    pub scope: Scope,
    /// Period.
    pub period: BudgetPeriod,
    /// Limit, 10^-12 USD.
    #[serde(rename = "limitUsd", with = "usd_text")]
    pub limit: i128,
    /// Warning thresholds, percent of the limit, ascending.
    pub warn_at: Vec<u8>,
    /// Alarm action ARNs notified when a threshold is crossed.
    #[serde(rename = "warnActions")]
    pub actions: Vec<String>,
}

impl BudgetSpec {
    /// What makes a budget unusable, if anything: the rules `[[budgets]]` is held to (a
    /// set read from elsewhere, such as the cluster's home, is checked again).
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim() != name || name.is_empty() || name.len() > 128 {
            return Err(format!(
                "budget name {name:?} must be 1 to 128 characters, without spaces at either end"
            ));
        }
        if self.limit <= 0 {
            return Err(format!("budget {name:?}: the limit must be positive"));
        }
        if self.warn_at.iter().any(|w| *w == 0 || *w > 100)
            || self.warn_at.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "budget {name:?}: warn_at values are percents from 1 to 100, ascending"
            ));
        }
        match &self.scope {
            Scope::Tag(k, _) | Scope::Meta(k, _) if k.trim().is_empty() => {
                Err(format!("budget {name:?}: the scope's key is empty"))
            }
            _ => Ok(()),
        }
    }
}

mod usd_text {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&logbook_record::money::format(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let t = String::deserialize(d)?;
        logbook_record::money::parse(&t)
            .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a USD decimal")))
    }
}

/// What is known of a call before it runs.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// Caller ARN.
    pub principal: &'a str,
    /// Caller's tags.
    pub tags: &'a BTreeMap<String, String>,
    /// The call's `requestMetadata`.
    pub meta: Option<&'a BTreeMap<String, String>>,
    /// Model id as called.
    pub model: &'a str,
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

impl Scope {
    fn matches(&self, f: &CallFacts<'_>) -> bool {
        match self {
            Scope::Principal(a) => a == f.principal,
            Scope::Tag(k, v) => f.tags.get(k) == Some(v),
            Scope::Meta(k, v) => f.meta.and_then(|m| m.get(k)) == Some(v),
            Scope::Model(g) => glob(g, f.model),
        }
    }
}

/// A refusal: the budget that would be passed. The message says whether the budget is
/// spent, or whether this call's worst case (its reservation, from its output-token
/// limit) would pass what is left.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Budget {name:?} {verdict}: {spent} of {limit} USD spent this {period}, {reserved} USD reserved by calls in flight, and this call may cost up to {estimate} USD; the call was not made.")]
pub struct Refused {
    /// Budget name.
    pub name: String,
    /// `is spent`, or `would be passed by this call`.
    pub verdict: &'static str,
    /// This call's reservation (its worst-case cost), USD.
    pub estimate: String,
    /// Spent this period, USD.
    pub spent: String,
    /// Reserved by calls in flight, USD.
    pub reserved: String,
    /// Limit, USD.
    pub limit: String,
    /// `day`, `week`, `month`.
    pub period: &'static str,
}

/// A warning threshold crossed by a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// Budget name.
    pub name: String,
    /// Threshold, percent.
    pub percent: u8,
    /// Spent, USD.
    pub spent: String,
    /// Limit, USD.
    pub limit: String,
    /// Start of the period it happened in, epoch ms.
    pub period_start: i64,
}

/// The highest warning threshold already reported, per budget: (period start, percent).
pub type Reported = BTreeMap<String, (i64, u8)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Account {
    /// Start of the period the spend belongs to.
    period_start: i64,
    /// Spent in it, 10^-12 USD.
    spent: i128,
    /// Highest warning threshold already reported in this period.
    warned: u8,
    #[serde(skip)]
    reserved: i128,
}

#[derive(Debug, Default)]
struct State {
    specs: Vec<BudgetSpec>,
    accounts: Vec<Account>,
    applied_through: u64,
    dirty: bool,
}

/// The durable part of the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Every record with a sequence up to this is charged.
    pub applied_through: u64,
    /// Spend per budget name.
    pub budgets: BTreeMap<String, SnapshotEntry>,
}

/// One budget's durable state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotEntry {
    /// Start of the period, epoch ms.
    pub period_start: i64,
    /// Spent, USD (exact decimal).
    pub spent: String,
    /// Highest warning threshold reported in the period.
    pub warned: u8,
}

/// A budget's state, for status pages.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Name.
    pub name: String,
    /// Period.
    pub period: BudgetPeriod,
    /// Start of the current period, epoch ms.
    pub period_start: i64,
    /// Limit, USD.
    pub limit: String,
    /// Spent, USD.
    pub spent: String,
    /// Reserved by calls in flight, USD.
    pub reserved: String,
    /// Spent, percent of the limit (rounded down).
    pub percent: u64,
}

/// Money as USD text (exact, trailing zeros dropped).
pub fn usd(v: i128) -> String {
    logbook_record::money::format(v)
}

/// A plain decimal (`"12.5"`) as 10^-12 USD, if it has at most 12 decimals.
pub fn parse_usd(s: &str) -> Option<i128> {
    logbook_record::money::parse(s)
}

/// Held by a call while it runs; releases its reservations when dropped.
#[derive(Debug)]
pub struct Reservation {
    budgets: Arc<Budgets>,
    /// (budget name, period start, amount).
    held: Vec<(String, i64, i128)>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut st = self.budgets.lock();
        let st = &mut *st;
        for (name, start, amount) in self.held.drain(..) {
            let Some(i) = st.specs.iter().position(|s| s.name == name) else {
                continue; // the budget was removed while the call ran
            };
            let a = &mut st.accounts[i];
            // A reservation made in a period that has ended was cleared with it.
            if a.period_start == start {
                a.reserved = (a.reserved - amount).max(0);
            }
        }
    }
}

/// Declared budgets and their state. The set can be replaced while calls run
/// ([`Budgets::replace`]: replicas pick up the cluster's set).
#[derive(Debug)]
pub struct Budgets {
    state: Mutex<State>,
}

impl State {
    fn roll(&mut self, i: usize, now_ms: i64) {
        let start = self.specs[i].period.start(now_ms);
        let a = &mut self.accounts[i];
        if a.period_start < start {
            *a = Account {
                period_start: start,
                ..Default::default()
            };
            self.dirty = true;
        }
    }

    fn spec(&self, name: &str) -> Option<&BudgetSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}

fn period_word(p: Option<BudgetPeriod>) -> &'static str {
    match p {
        Some(BudgetPeriod::Day) => "day",
        Some(BudgetPeriod::Week) => "week",
        _ => "month",
    }
}

impl Budgets {
    /// Budgets with nothing spent.
    pub fn new(specs: Vec<BudgetSpec>) -> Arc<Budgets> {
        let accounts = vec![Account::default(); specs.len()];
        Arc::new(Budgets {
            state: Mutex::new(State {
                specs,
                accounts,
                applied_through: 0,
                dirty: false,
            }),
        })
    }

    /// No budget declared?
    pub fn is_empty(&self) -> bool {
        self.lock().specs.is_empty()
    }

    /// The budgets in force.
    pub fn specs(&self) -> Vec<BudgetSpec> {
        self.lock().specs.clone()
    }

    /// Put `specs` in force. A budget that keeps its name, scope and period keeps its
    /// spend and the reservations of the calls in flight (a new limit applies from the
    /// next admission); any other starts from nothing. Whether anything changed.
    pub fn replace(&self, specs: Vec<BudgetSpec>) -> bool {
        let mut st = self.lock();
        if st.specs == specs {
            return false;
        }
        let accounts = specs
            .iter()
            .map(|new| {
                st.specs
                    .iter()
                    .position(|old| {
                        old.name == new.name && old.scope == new.scope && old.period == new.period
                    })
                    .map(|i| st.accounts[i].clone())
                    .unwrap_or_default()
            })
            .collect();
        st.specs = specs;
        st.accounts = accounts;
        st.dirty = true;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A budget's warning thresholds as (percent, amount in 10^-12 USD): the spend at
    /// which [`Budgets::charge`] reports that percent (`spend * 100 / limit >= percent`),
    /// for a ledger shared with other replicas. With its limit.
    pub fn thresholds(&self, name: &str) -> Option<(i128, Vec<(u8, i128)>)> {
        let st = self.lock();
        let spec = st.spec(name)?;
        let limit = spec.limit.max(1);
        let at = spec
            .warn_at
            .iter()
            .map(|&w| {
                let num = limit.saturating_mul(i128::from(w));
                (w, num / 100 + i128::from(num % 100 != 0))
            })
            .collect();
        Some((spec.limit, at))
    }

    /// The action ARNs of a budget.
    pub fn actions(&self, name: &str) -> Vec<String> {
        self.lock()
            .spec(name)
            .map(|s| s.actions.clone())
            .unwrap_or_default()
    }

    /// The first budget that covers this call, if any.
    pub fn first_match(&self, f: &CallFacts<'_>) -> Option<String> {
        self.lock()
            .specs
            .iter()
            .find(|s| s.scope.matches(f))
            .map(|s| s.name.clone())
    }

    /// Every budget a call matches: (name, limit, start of the period now), for a ledger
    /// shared with other replicas.
    pub fn accounts_for_call(&self, f: &CallFacts<'_>, now_ms: i64) -> Vec<(String, i128, i64)> {
        self.lock()
            .specs
            .iter()
            .filter(|s| s.scope.matches(f))
            .map(|s| (s.name.clone(), s.limit, s.period.start(now_ms)))
            .collect()
    }

    /// A record's cost and every budget it is charged to, with the start of the period of
    /// its timestamp (what [`Budgets::charge`] does here, for a shared ledger). `None`
    /// when it costs nothing or matches no budget.
    pub fn accounts_for_record(&self, r: &InvocationRecord) -> Option<(i128, Vec<(String, i64)>)> {
        let cost = r.logbook.cost.as_deref().and_then(parse_usd)?;
        if cost == 0 {
            return None;
        }
        let empty = BTreeMap::new();
        let f = record_facts(r, &empty);
        let ms = logbook_record_time_ms(r);
        let accounts: Vec<(String, i64)> = self
            .lock()
            .specs
            .iter()
            .filter(|s| s.scope.matches(&f))
            .map(|s| (s.name.clone(), s.period.start(ms)))
            .collect();
        (!accounts.is_empty()).then_some((cost, accounts))
    }

    /// The refusal for budget `name` as a shared ledger reports it.
    pub fn refusal(&self, name: &str, estimate: i128, spent: i128, reserved: i128) -> Refused {
        let st = self.lock();
        let spec = st.spec(name);
        let limit = spec.map_or(0, |s| s.limit);
        Refused {
            name: name.to_string(),
            verdict: if spent >= limit {
                "is spent (across replicas)"
            } else {
                "would be passed by this call (across replicas)"
            },
            estimate: usd(estimate),
            spent: usd(spent),
            reserved: usd(reserved),
            limit: usd(limit),
            period: period_word(spec.map(|s| s.period)),
        }
    }

    /// Reserve `estimate` in every budget the call matches, or refuse it.
    pub fn admit(
        self: &Arc<Self>,
        f: &CallFacts<'_>,
        estimate: i128,
        now_ms: i64,
    ) -> Result<Reservation, Box<Refused>> {
        let mut held = Vec::new();
        let mut st = self.lock();
        let matching: Vec<usize> = (0..st.specs.len())
            .filter(|&i| st.specs[i].scope.matches(f))
            .collect();
        for &i in &matching {
            st.roll(i, now_ms);
            let (spec, a) = (&st.specs[i], &st.accounts[i]);
            if a.spent + a.reserved + estimate > spec.limit || a.spent >= spec.limit {
                return Err(Box::new(Refused {
                    name: spec.name.clone(),
                    verdict: if a.spent >= spec.limit {
                        "is spent"
                    } else {
                        "would be passed by this call"
                    },
                    estimate: usd(estimate),
                    spent: usd(a.spent),
                    reserved: usd(a.reserved),
                    limit: usd(spec.limit),
                    period: period_word(Some(spec.period)),
                }));
            }
        }
        for i in matching {
            let name = st.specs[i].name.clone();
            let a = &mut st.accounts[i];
            a.reserved += estimate;
            held.push((name, a.period_start, estimate));
        }
        drop(st);
        Ok(Reservation {
            budgets: self.clone(),
            held,
        })
    }

    /// Charge a record's cost (at `seq`, in sequence order) to every budget it matches, in
    /// the period of its timestamp. Returns the warning thresholds this charge crossed.
    pub fn charge(&self, r: &InvocationRecord, seq: u64) -> Vec<Crossing> {
        let mut st = self.lock();
        let st = &mut *st;
        if seq <= st.applied_through && seq != 0 {
            return Vec::new(); // replayed twice
        }
        st.applied_through = st.applied_through.max(seq);
        st.dirty = true;
        let Some(cost) = r.logbook.cost.as_deref().and_then(parse_usd) else {
            return Vec::new();
        };
        if cost == 0 {
            return Vec::new();
        }
        let empty = BTreeMap::new();
        let f = record_facts(r, &empty);
        let ms = logbook_record_time_ms(r);
        let mut out = Vec::new();
        for (spec, a) in st.specs.iter().zip(st.accounts.iter_mut()) {
            if !spec.scope.matches(&f) {
                continue;
            }
            let start = spec.period.start(ms);
            if a.period_start < start {
                *a = Account {
                    period_start: start,
                    reserved: a.reserved,
                    ..Default::default()
                };
            } else if a.period_start > start {
                continue; // a record from a period already closed
            }
            a.spent += cost;
            let pct = (a.spent.saturating_mul(100) / spec.limit.max(1)).min(255) as u8;
            for &w in &spec.warn_at {
                if pct >= w && a.warned < w {
                    a.warned = w;
                    out.push(Crossing {
                        name: spec.name.clone(),
                        percent: w,
                        spent: usd(a.spent),
                        limit: usd(spec.limit),
                        period_start: a.period_start,
                    });
                }
            }
        }
        out
    }

    /// The durable state, if it changed since the last call. The thresholds it says were
    /// reported are those in `reported` (whose trail events are durable), so a crash
    /// between a crossing and its event re-raises the crossing on replay.
    pub fn snapshot_if_dirty(&self, reported: &Reported) -> Option<Snapshot> {
        let mut st = self.lock();
        if !st.dirty {
            return None;
        }
        st.dirty = false;
        Some(Snapshot {
            applied_through: st.applied_through,
            budgets: st
                .specs
                .iter()
                .zip(&st.accounts)
                .map(|(s, a)| {
                    (
                        s.name.clone(),
                        SnapshotEntry {
                            period_start: a.period_start,
                            spent: usd(a.spent),
                            warned: reported
                                .get(&s.name)
                                .filter(|(start, _)| *start == a.period_start)
                                .map_or(0, |(_, w)| (*w).min(a.warned)),
                        },
                    )
                })
                .collect(),
        })
    }

    /// Restore a snapshot (budgets renamed or removed since are ignored).
    pub fn restore(&self, s: &Snapshot) {
        let mut st = self.lock();
        let st = &mut *st;
        st.applied_through = s.applied_through;
        for (spec, a) in st.specs.iter().zip(st.accounts.iter_mut()) {
            if let Some(e) = s.budgets.get(&spec.name) {
                *a = Account {
                    period_start: e.period_start,
                    spent: parse_usd(&e.spent).unwrap_or(0),
                    warned: e.warned,
                    reserved: 0,
                };
            }
        }
    }

    /// The thresholds the restored state says were reported.
    pub fn reported(&self) -> Reported {
        let st = self.lock();
        st.specs
            .iter()
            .zip(&st.accounts)
            .filter(|(_, a)| a.warned > 0)
            .map(|(s, a)| (s.name.clone(), (a.period_start, a.warned)))
            .collect()
    }

    /// What this state holds, read at once: every record up to the sequence it returns,
    /// and per budget the period and what was spent in it (budgets with nothing spent are
    /// left out). For rebuilding a shared ledger that lost its data.
    pub fn spend(&self) -> (u64, Vec<(String, i64, i128)>) {
        let st = self.lock();
        (
            st.applied_through,
            st.specs
                .iter()
                .zip(&st.accounts)
                .filter(|(_, a)| a.spent > 0)
                .map(|(s, a)| (s.name.clone(), a.period_start, a.spent))
                .collect(),
        )
    }

    /// Every record up to this sequence is charged.
    pub fn applied_through(&self) -> u64 {
        self.lock().applied_through
    }

    /// Each budget's state now.
    pub fn status(&self, now_ms: i64) -> Vec<Status> {
        let mut st = self.lock();
        for i in 0..st.specs.len() {
            st.roll(i, now_ms);
        }
        st.specs
            .iter()
            .zip(&st.accounts)
            .map(|(s, a)| Status {
                name: s.name.clone(),
                period: s.period,
                period_start: a.period_start,
                limit: usd(s.limit),
                spent: usd(a.spent),
                reserved: usd(a.reserved),
                percent: (a.spent.saturating_mul(100) / s.limit.max(1)).max(0) as u64,
            })
            .collect()
    }
}

/// What a budget matches in a finished record (`empty`: the tags when it has none).
fn record_facts<'a>(r: &'a InvocationRecord, empty: &'a BTreeMap<String, String>) -> CallFacts<'a> {
    CallFacts {
        principal: &r.identity.arn,
        tags: r.logbook.principal_tags.as_ref().unwrap_or(empty),
        meta: r.request_metadata.as_ref(),
        model: &r.model_id,
    }
}

fn logbook_record_time_ms(r: &InvocationRecord) -> i64 {
    let t =
        time::OffsetDateTime::parse(&r.timestamp, &time::format_description::well_known::Rfc3339)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The most output tokens a request body allows, wherever its API puts it: Converse
/// `inferenceConfig.maxTokens`, Anthropic `max_tokens`, OpenAI `max_completion_tokens` /
/// `max_tokens`, Titan `textGenerationConfig.maxTokenCount`, Llama `max_gen_len`, Nova
/// `inferenceConfig.max_new_tokens`.
pub fn max_output_tokens(body: &serde_json::Value) -> Option<u64> {
    const PATHS: &[&[&str]] = &[
        &["inferenceConfig", "maxTokens"],
        &["max_completion_tokens"],
        &["max_tokens"],
        &["textGenerationConfig", "maxTokenCount"],
        &["max_gen_len"],
        &["inferenceConfig", "max_new_tokens"],
    ];
    PATHS.iter().find_map(|p| {
        let mut v = body;
        for k in *p {
            v = v.get(k)?;
        }
        v.as_u64()
    })
}

/// The reservation for a call: `input_bytes / 4 + 1` input tokens and `max_output` output
/// tokens at the model's input and output prices; `None` when the model has no price.
pub fn estimate(
    catalog: &Catalog,
    provider: Provider,
    model: &str,
    region: &str,
    input_bytes: usize,
    max_output: Option<u64>,
) -> Option<i128> {
    let p = catalog.lookup(provider, model, region)?;
    let per_token = |d: &Option<bigdecimal::BigDecimal>| -> Option<i128> {
        // USD per 1M tokens → 10^-12 USD per token = price × 10^6.
        let v = d.as_ref()?.with_scale(6);
        let (digits, _) = v.as_bigint_and_exponent();
        i128::try_from(digits).ok()
    };
    let input = per_token(&p.input).unwrap_or(0) * (input_bytes as i128 / 4 + 1);
    let output = per_token(&p.output).unwrap_or(0)
        * i128::from(max_output.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS));
    Some(input + output)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use logbook_record::{Identity, Input, LogbookExt};

    fn spec(name: &str, scope: Scope, limit: &str) -> BudgetSpec {
        BudgetSpec {
            name: name.into(),
            scope,
            period: BudgetPeriod::Month,
            limit: parse_usd(limit).unwrap(),
            warn_at: vec![50, 80],
            actions: vec![],
        }
    }

    fn rec(arn: &str, model: &str, cost: &str, ts: &str) -> InvocationRecord {
        InvocationRecord {
            schema_type: "ModelInvocationLog".into(),
            schema_version: "1.0".into(),
            timestamp: ts.into(),
            account_id: "1".into(),
            identity: Identity { arn: arn.into() },
            region: "us-east-1".into(),
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
                cost: Some(cost.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        // 2026-12-02T07:00Z, a Wednesday.
        let t = 1_796_194_800_000;
        assert_eq!(BudgetPeriod::Day.start(t), 1_796_169_600_000); // 2026-12-02
        assert_eq!(BudgetPeriod::Week.start(t), 1_795_996_800_000); // Mon 2026-11-30
        assert_eq!(BudgetPeriod::Month.start(t), 1_796_083_200_000); // 2026-12-01
        assert_eq!(
            BudgetPeriod::Month.start(1_796_083_199_999),
            1_793_491_200_000
        ); // Nov 1
    }

    #[test]
    fn a_threshold_amount_is_the_least_spend_that_charge_reports_at_that_percent() {
        // Limits that divide by 100 and ones that do not (3 x 10^-12 USD).
        for limit in ["10", "0.000000000003", "0.333333333333", "7.77"] {
            let mut sp = spec("b", Scope::Model("*".into()), limit);
            sp.warn_at = vec![1, 33, 50, 80, 100];
            let b = Budgets::new(vec![sp]);
            let (l, at) = b.thresholds("b").unwrap();
            assert_eq!(l, parse_usd(limit).unwrap());
            for (w, t) in at {
                let pct = |spent: i128| spent * 100 / l.max(1);
                assert!(pct(t) >= i128::from(w), "{limit} {w}%: {t}");
                assert!(
                    t == 0 || pct(t - 1) < i128::from(w),
                    "{limit} {w}%: {t} is not the least"
                );
            }
        }
        assert!(Budgets::new(vec![]).thresholds("b").is_none());
    }

    #[test]
    fn a_replaced_set_keeps_the_spend_and_holds_of_budgets_that_stay() {
        let tags = BTreeMap::new();
        let f = CallFacts {
            principal: "arn:p",
            tags: &tags,
            meta: None,
            model: "anthropic.claude",
        };
        let now = 1_796_194_800_000;
        let ts = "2026-12-02T07:00:00Z";
        let b = Budgets::new(vec![
            spec("claude", Scope::Model("anthropic.*".into()), "10"),
            spec("gone", Scope::Model("*".into()), "100"),
        ]);
        b.charge(&rec("arn:p", "anthropic.claude", "4", ts), 1);
        let held = b.admit(&f, parse_usd("3").unwrap(), now).unwrap();
        // A new limit for `claude` (same scope and period), `gone` removed, `fresh` added,
        // and `moved` keeps a name but covers something else.
        let mut lower = spec("claude", Scope::Model("anthropic.*".into()), "8");
        lower.warn_at = vec![90];
        assert!(b.replace(vec![
            lower.clone(),
            spec("fresh", Scope::Principal("arn:p".into()), "1"),
        ]));
        assert!(!b.replace(vec![
            lower.clone(),
            spec("fresh", Scope::Principal("arn:p".into()), "1"),
        ]));
        let st = b.status(now);
        assert_eq!((st[0].spent.as_str(), st[0].reserved.as_str()), ("4", "3"));
        assert_eq!((st[1].spent.as_str(), st[1].reserved.as_str()), ("0", "0"));
        // 4 spent + 3 held + 2 > 8: refused by the new limit.
        let r = b.admit(&f, parse_usd("2").unwrap(), now).unwrap_err();
        assert_eq!((r.name.as_str(), r.limit.as_str()), ("claude", "8"));
        // The call that held 3 ends after the change: released in the budget that stayed.
        drop(held);
        assert_eq!(b.status(now)[0].reserved, "0");
        // Same name, other scope: its spend does not carry over.
        b.replace(vec![spec("claude", Scope::Model("meta.*".into()), "8")]);
        assert_eq!(b.status(now)[0].spent, "0");
        // A reservation whose budget went is dropped without effect.
        let held = b
            .admit(
                &CallFacts {
                    model: "meta.llama",
                    ..f
                },
                1,
                now,
            )
            .unwrap();
        b.replace(vec![]);
        drop(held);
        assert!(b.is_empty() && b.status(now).is_empty());
    }

    #[test]
    fn a_definition_reads_back_from_its_json_exactly_and_bad_ones_are_named() {
        let mut s = spec(
            "t",
            Scope::Tag("team".into(), "a b".into()),
            "0.000000000001",
        );
        s.actions = vec!["arn:aws:sns:us-east-1:1:x".into()];
        for scope in [
            Scope::Principal("arn:p".into()),
            Scope::Tag("team".into(), "a".into()),
            Scope::Meta("app".into(), "x".into()),
            Scope::Model("anthropic.*".into()),
        ] {
            s.scope = scope;
            let j = serde_json::to_string(&s).unwrap();
            assert!(j.contains(r#""limitUsd":"0.000000000001""#), "{j}");
            let back: BudgetSpec = serde_json::from_str(&j).unwrap();
            assert_eq!(back, s);
            assert!(back.check().is_ok());
        }
        let j = serde_json::to_value(&s).unwrap();
        for (field, bad) in [
            ("limitUsd", serde_json::json!("1e3")),
            ("limitUsd", serde_json::json!(5)),
            ("period", serde_json::json!("year")),
            ("scope", serde_json::json!({"team": "a"})),
        ] {
            let mut v = j.clone();
            v[field] = bad;
            assert!(serde_json::from_value::<BudgetSpec>(v).is_err(), "{field}");
        }
        for (name, limit, warn) in [
            (" t", "1", vec![]),
            ("", "1", vec![]),
            ("t", "0", vec![]),
            ("t", "1", vec![0]),
            ("t", "1", vec![80, 50]),
            ("t", "1", vec![101]),
        ] {
            let mut b = spec(name, Scope::Model("*".into()), "1");
            b.limit = parse_usd(limit).unwrap();
            b.warn_at = warn;
            assert!(b.check().is_err(), "{b:?}");
        }
    }

    #[test]
    fn money_round_trips_exactly() {
        assert_eq!(parse_usd("12.5"), Some(12 * PICO + PICO / 2));
        assert_eq!(usd(parse_usd("0.000000000001").unwrap()), "0.000000000001");
        assert_eq!(parse_usd("1e3"), None);
        assert_eq!(parse_usd("-1"), None);
        assert_eq!(usd(0), "0");
    }

    #[test]
    fn reservations_hold_the_limit_and_charges_cross_thresholds_once() {
        let tags = BTreeMap::from([("team".to_string(), "search".to_string())]);
        let b = Budgets::new(vec![
            spec("search", Scope::Tag("team".into(), "search".into()), "1"),
            spec("claude", Scope::Model("anthropic.*".into()), "100"),
        ]);
        let f = CallFacts {
            principal: "arn:a",
            tags: &tags,
            meta: None,
            model: "anthropic.claude-x",
        };
        let now = 1_796_194_800_000;
        let r1 = b.admit(&f, parse_usd("0.6").unwrap(), now).unwrap();
        // 0.6 reserved: another 0.6 would pass the limit.
        let e = b.admit(&f, parse_usd("0.6").unwrap(), now).unwrap_err();
        assert_eq!(e.name, "search");
        assert!(e.to_string().contains("0.6 USD reserved"), "{e}");
        // Not spent: this call's worst case would pass it, and the message says so.
        assert!(
            e.to_string().contains("would be passed by this call")
                && e.to_string().contains("may cost up to 0.6 USD"),
            "{e}"
        );
        drop(r1);
        let r2 = b.admit(&f, parse_usd("0.6").unwrap(), now).unwrap();
        let mut r = rec(
            "arn:a",
            "anthropic.claude-x",
            "0.55",
            "2026-12-02T07:00:00Z",
        );
        r.logbook.principal_tags = Some(tags.clone());
        let crossed = b.charge(&r, 7);
        assert_eq!(
            crossed,
            vec![Crossing {
                name: "search".into(),
                percent: 50,
                spent: "0.55".into(),
                limit: "1".into(),
                period_start: 1_796_169_600_000 - 86_400_000
            }]
        );
        assert!(
            b.charge(&r, 7).is_empty(),
            "a replayed sequence is charged once"
        );
        drop(r2);
        assert_eq!(b.status(now)[0].spent, "0.55");
        assert_eq!(b.status(now)[1].spent, "0.55");
        // Other principals and models are not held back by budgets they do not match.
        let other = BTreeMap::new();
        let g = CallFacts {
            principal: "arn:b",
            tags: &other,
            meta: None,
            model: "amazon.nova",
        };
        assert!(b.admit(&g, parse_usd("99").unwrap(), now).is_ok());
        // Snapshots restore exactly; a new month starts at zero.
        let snap = b.snapshot_if_dirty(&Reported::new()).unwrap();
        assert!(b.snapshot_if_dirty(&Reported::new()).is_none());
        // The crossing was never reported: restored, the next charge raises it again.
        assert_eq!(snap.budgets["search"].warned, 0);
        let c = Budgets::new(vec![spec(
            "search",
            Scope::Tag("team".into(), "search".into()),
            "1",
        )]);
        c.restore(&snap);
        assert_eq!(c.status(now)[0].spent, "0.55");
        assert_eq!(c.applied_through(), 7);
        assert_eq!(c.status(now + 40 * 86_400_000)[0].spent, "0");
    }

    #[test]
    fn globs() {
        assert!(glob("anthropic.*", "anthropic.claude"));
        assert!(glob("*haiku*", "anthropic.claude-3-haiku-v1"));
        assert!(!glob("anthropic.*", "amazon.nova"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn estimates_price_input_size_and_max_output() {
        let c = Catalog::builtin().unwrap();
        // Nova Lite: 0.06 in, 0.24 out per 1M; 400 bytes → 101 tokens; 1000 output.
        let e = estimate(
            &c,
            Provider::Bedrock,
            "amazon.nova-lite-v1:0",
            "us-east-1",
            400,
            Some(1000),
        )
        .unwrap();
        assert_eq!(usd(e), "0.00024606");
        assert!(estimate(&c, Provider::Bedrock, "nope", "us-east-1", 1, None).is_none());
    }
}
