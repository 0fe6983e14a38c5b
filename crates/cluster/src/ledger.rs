//! Budgets that hold across replicas: one ledger in Redis (`[cluster] redis_url`).
//!
//! Each budget and period is a Redis hash `logbook:budget:<name>:<period start ms>` with
//! `spent` (10^-12 USD, an exact 64-bit integer) and one field per call in flight,
//! `r:<id>` = `<amount>:<expiry ms>`. Admission is one Lua script over every budget the
//! call matches, so it is atomic across replicas: it drops expired reservations (a replica
//! that died mid-call), refuses when `spent + reserved + estimate` would pass a limit,
//! else adds the reservation to each. A call's end deletes its reservation; its record's
//! cost is added to `spent` once (a `SET NX` on the request id makes a replayed charge a
//! no-op). So overspend is bounded by what the calls in flight on all replicas reserved.
//!
//! Warning thresholds are crossed in the ledger too: a charge is one atomic `HINCRBY`, so
//! exactly one charge sees a budget's spend go from below a threshold to at or above it,
//! and only the replica that made that charge reports it (once for the whole cluster, not
//! once per replica).
//!
//! The script compares in Lua numbers (doubles): exact to 2^53 units, about 1 ns of a
//! dollar per 10^-12 unit at a $9,000,000 limit; `spent` itself is added exactly.

use redis::aio::ConnectionManager;
use redis::Script;

const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local est = tonumber(ARGV[4])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[5 + i])
  local all = redis.call('HGETALL', key)
  local spent, reserved = 0, 0
  for j = 1, #all, 2 do
    local f, v = all[j], all[j + 1]
    if f == 'spent' then
      spent = tonumber(v)
    elseif string.sub(f, 1, 2) == 'r:' then
      local amt, exp = string.match(v, '^(%d+):(%d+)$')
      if amt == nil or tonumber(exp) <= now then
        redis.call('HDEL', key, f)
      else
        reserved = reserved + tonumber(amt)
      end
    end
  end
  if spent >= limit or spent + reserved + est > limit then
    return {i, string.format('%.0f', spent), string.format('%.0f', reserved)}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('HSET', key, 'r:' .. ARGV[2], ARGV[4] .. ':' .. ARGV[3])
  redis.call('EXPIRE', key, tonumber(ARGV[5]))
end
return {0, '0', '0'}
"#;

const RELEASE: &str = r#"
for _, key in ipairs(KEYS) do
  redis.call('HDEL', key, 'r:' .. ARGV[1])
end
return 1
"#;

const CHARGE: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  local out = {1}
  local cost = tonumber(ARGV[1])
  for i = 2, #KEYS do
    local new = redis.call('HINCRBY', KEYS[i], 'spent', ARGV[1])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3]))
    local old = new - cost
    local th = ARGV[2 + i]
    if th ~= nil then
      local j = 0
      for t in string.gmatch(th, '%d+') do
        j = j + 1
        local tv = tonumber(t)
        if old < tv and new >= tv then
          table.insert(out, i - 2)
          table.insert(out, j - 1)
          table.insert(out, new)
        end
      end
    end
  end
  return out
end
return {0}
"#;

/// How long a budget period's state stays in Redis after its last change (a month and
/// more), and how long a charged request id is remembered.
const KEY_TTL_S: u64 = 70 * 86_400;
/// How long a reservation lives if its replica never releases it (a call runs at most
/// the route's timeout; this is longer).
pub const RESERVATION_TTL_MS: i64 = 15 * 60 * 1000;
/// How long one question to Redis may take. A Redis that stops answering (paused, or a
/// network that drops packets) must not hold calls: past this, the ledger is unreachable
/// and budgeted calls are refused at once. (An admission whose answer was lost leaves a
/// reservation that expires after [`RESERVATION_TTL_MS`]: it can only refuse more.)
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A budget would be passed: its index in the accounts given, and its state.
    #[error("budget {index} would be passed")]
    Refused {
        /// Which account.
        index: usize,
        /// Spent this period (10^-12 USD).
        spent: i128,
        /// Reserved by calls in flight (10^-12 USD).
        reserved: i128,
    },
    /// Redis could not be asked.
    #[error("the shared budget ledger ({0}) cannot be reached: {1}")]
    Unreachable(String, String),
    /// An amount that does not fit the ledger's 64-bit integers.
    #[error("{0}")]
    Range(String),
}

/// What a charge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    /// Added now (false: this request id was charged before).
    pub added: bool,
    /// The thresholds it crossed.
    pub crossed: Vec<Crossed>,
}

/// A threshold a charge crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossed {
    /// Index into the accounts charged.
    pub account: usize,
    /// Index into that account's thresholds.
    pub threshold: usize,
    /// The budget's spend after the charge (10^-12 USD).
    pub spent: i128,
}

/// The shared ledger.
pub struct Ledger {
    conn: ConnectionManager,
    describe: String,
    admit: Script,
    release: Script,
    charge: Script,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("at", &self.describe)
            .finish()
    }
}

fn key(name: &str, period_start: i64) -> String {
    format!("logbook:budget:{name}:{period_start}")
}

fn pico(v: i128) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| {
        LedgerError::Range(format!(
            "{v} (10^-12 USD) is more than the shared ledger holds (about 9.2 million USD)"
        ))
    })
}

/// Where a Redis URL points, without its password.
pub fn describe(url: &str) -> String {
    match url.split_once('@') {
        Some((head, host)) => match head.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{host}"),
            None => host.to_string(),
        },
        None => url.to_string(),
    }
}

impl Ledger {
    /// Connect (and PING) within 5 s.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        let describe = describe(url);
        let fail = |e: String| LedgerError::Unreachable(describe.clone(), e);
        let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ConnectionManager::new(client),
        )
        .await
        .map_err(|_| fail("no answer within 5 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let mut c = conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Ledger {
            conn,
            describe: describe.clone(),
            admit: Script::new(ADMIT),
            release: Script::new(RELEASE),
            charge: Script::new(CHARGE),
        })
    }

    /// One question to Redis, within [`ANSWER_TIMEOUT`].
    async fn ask<T>(
        &self,
        q: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LedgerError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, q).await {
            Ok(r) => r.map_err(|e| LedgerError::Unreachable(self.describe.clone(), e.to_string())),
            Err(_) => Err(LedgerError::Unreachable(
                self.describe.clone(),
                format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Reserve `estimate` in every account (name, limit, period start), all or none.
    /// Returns the reservation's id.
    pub async fn admit(
        &self,
        accounts: &[(String, i128, i64)],
        estimate: i128,
        now_ms: i64,
    ) -> Result<String, LedgerError> {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut inv = self.admit.prepare_invoke();
        for (name, _, start) in accounts {
            inv.key(key(name, *start));
        }
        inv.arg(now_ms)
            .arg(&id)
            .arg(now_ms + RESERVATION_TTL_MS)
            .arg(pico(estimate)?)
            .arg(KEY_TTL_S);
        for (_, limit, _) in accounts {
            inv.arg(pico(*limit)?);
        }
        let mut c = self.conn.clone();
        let (index, spent, reserved): (usize, String, String) =
            self.ask(inv.invoke_async(&mut c)).await?;
        if index == 0 {
            return Ok(id);
        }
        Err(LedgerError::Refused {
            index: index - 1,
            spent: spent.parse().unwrap_or_default(),
            reserved: reserved.parse().unwrap_or_default(),
        })
    }

    /// Drop a reservation (the call ended).
    pub async fn release(&self, accounts: &[(String, i64)], id: &str) -> Result<(), LedgerError> {
        let mut inv = self.release.prepare_invoke();
        for (name, start) in accounts {
            inv.key(key(name, *start));
        }
        inv.arg(id);
        let mut c = self.conn.clone();
        let _: i64 = self.ask(inv.invoke_async(&mut c)).await?;
        Ok(())
    }

    /// Add a record's cost to its budgets, once per request id (a replay is a no-op).
    /// Whether it was added now.
    pub async fn charge(
        &self,
        request_id: &str,
        accounts: &[(String, i64)],
        cost: i128,
    ) -> Result<bool, LedgerError> {
        Ok(self
            .charge_watching(request_id, accounts, cost, &[])
            .await?
            .added)
    }

    /// [`Ledger::charge`], watching thresholds: `thresholds[i]` are amounts (10^-12 USD)
    /// of `accounts[i]`; every one this charge took the spend to or past (from below) is
    /// returned, once across all replicas.
    pub async fn charge_watching(
        &self,
        request_id: &str,
        accounts: &[(String, i64)],
        cost: i128,
        thresholds: &[Vec<i128>],
    ) -> Result<Charged, LedgerError> {
        let mut inv = self.charge.prepare_invoke();
        inv.key(format!("logbook:charged:{request_id}"));
        for (name, start) in accounts {
            inv.key(key(name, *start));
        }
        inv.arg(pico(cost)?).arg(KEY_TTL_S).arg(KEY_TTL_S);
        for i in 0..accounts.len() {
            let list = thresholds.get(i).map(Vec::as_slice).unwrap_or_default();
            let mut text = String::new();
            for t in list {
                if !text.is_empty() {
                    text.push(',');
                }
                text.push_str(&pico(*t)?.to_string());
            }
            inv.arg(text);
        }
        let mut c = self.conn.clone();
        let out: Vec<i64> = self.ask(inv.invoke_async(&mut c)).await?;
        let added = out.first() == Some(&1);
        let crossed = out
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(3)
            .filter_map(|x| {
                Some(Crossed {
                    account: usize::try_from(x[0]).ok()?,
                    threshold: usize::try_from(x[1]).ok()?,
                    spent: i128::from(x[2]),
                })
            })
            .collect();
        Ok(Charged { added, crossed })
    }

    /// Spent in a budget's period, and reserved by calls in flight (10^-12 USD).
    pub async fn state(&self, name: &str, period_start: i64) -> Result<(i128, i128), LedgerError> {
        let mut c = self.conn.clone();
        let all: Vec<(String, String)> = self
            .ask(
                redis::cmd("HGETALL")
                    .arg(key(name, period_start))
                    .query_async(&mut c),
            )
            .await?;
        let mut spent = 0i128;
        let mut reserved = 0i128;
        for (f, v) in all {
            if f == "spent" {
                spent = v.parse().unwrap_or_default();
            } else if f.starts_with("r:") {
                reserved += v
                    .split(':')
                    .next()
                    .and_then(|a| a.parse::<i128>().ok())
                    .unwrap_or_default();
            }
        }
        Ok((spent, reserved))
    }
}
