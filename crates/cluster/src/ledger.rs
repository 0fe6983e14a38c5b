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
//! **A Redis that restarts empty** (no persistence, or its data lost) would forget the
//! period's spend: calls would be admitted against nothing. The ledger has an *epoch*
//! (`logbook:ledger:epoch`, a random id set once), and every admission and charge names
//! the epoch its replica's spend is in; a script that finds another (or none) refuses to
//! decide. The replica then *rebuilds*: it creates the new epoch if none exists (first one
//! wins), adds its own spend so far (its budgets' state, every record up to its sequence
//! N, summed per budget and period) once per epoch (`SET NX` on
//! `logbook:ledger:contrib:<epoch>:<node>` = N, in the same script as the additions), and
//! from then on a charge of one of its records at or below N is skipped (already in that
//! sum). So no admission is decided against an emptied ledger by a replica that knew the
//! old one, and the rebuilt spend is exact: each record counted once, by its own replica.
//! A replica that never knew an epoch (a new data folder, or a ledger from a build before
//! epochs) takes the current one without adding anything: its records, if any, were
//! charged one by one. Until every replica has rebuilt (at its next admission or charge,
//! or within a second, or at its next start if it is down), the ledger lacks the spend of
//! those that have not.
//!
//! The script compares in Lua numbers (doubles): exact to 2^53 units, about 1 ns of a
//! dollar per 10^-12 unit at a $9,000,000 limit; `spent` itself is added exactly.

use redis::aio::ConnectionManager;
use redis::Script;

const ADMIT: &str = r#"
local nb = #KEYS - 1
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[6 + nb] then
  return {-1, '0', '0'}
end
local now = tonumber(ARGV[1])
local est = tonumber(ARGV[4])
for i = 1, nb do
  local key = KEYS[i]
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
for i = 1, nb do
  redis.call('HSET', KEYS[i], 'r:' .. ARGV[2], ARGV[4] .. ':' .. ARGV[3])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[5]))
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
-- KEYS: epoch, this node's contribution in it, the request id's marker, the budgets.
-- ARGV: epoch, sequence, cost, ttl, then each budget's thresholds.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {-1}
end
local through = redis.call('GET', KEYS[2])
if through and tonumber(ARGV[2]) <= tonumber(through) then
  return {0}
end
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  local out = {1}
  local cost = tonumber(ARGV[3])
  for i = 4, #KEYS do
    local new = redis.call('HINCRBY', KEYS[i], 'spent', ARGV[3])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
    local old = new - cost
    local th = ARGV[1 + i]
    if th ~= nil then
      local j = 0
      for t in string.gmatch(th, '%d+') do
        j = j + 1
        local tv = tonumber(t)
        if old < tv and new >= tv then
          table.insert(out, i - 4)
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

/// A replica's spend so far, added to a new epoch once: KEYS[1] the contribution marker,
/// then the budgets; ARGV: the sequence it covers, the ttl, then each budget's amount.
const CONTRIBUTE: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
  return 0
end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[1 + i])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return 1
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
    /// The epoch this replica's spend is in could not be kept on its own disk.
    #[error("the shared budget ledger's epoch could not be kept: {0}")]
    Local(String),
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

const EPOCH_KEY: &str = "logbook:ledger:epoch";

fn contribution_key(epoch: &str, node: &str) -> String {
    format!("logbook:ledger:contrib:{epoch}:{node}")
}

/// A replica's spend so far, as its budgets hold it: every record up to journal sequence
/// `through`, per (budget name, period start, amount in 10^-12 USD).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spend {
    /// The last sequence it covers.
    pub through: u64,
    /// Per budget and period.
    pub accounts: Vec<(String, i64, i128)>,
}

/// Keeps the epoch a replica's spend is in, durably.
pub type KeepEpoch = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What ties a ledger to one replica (see the module's notes on epochs).
pub struct Binding {
    /// The replica's node id.
    pub node: String,
    /// The epoch its spend was last in, as it kept it (`None`: it never knew one).
    pub known_epoch: Option<String>,
    /// Its spend now.
    pub spend: Box<dyn Fn() -> Spend + Send + Sync>,
    /// Keep the epoch its spend is now in, durably (before the ledger relies on it).
    pub keep: KeepEpoch,
}

impl Binding {
    /// A ledger user with no spend of its own to rebuild (tools, tests).
    pub fn standalone() -> Binding {
        Binding {
            node: "-".into(),
            known_epoch: None,
            spend: Box::new(Spend::default),
            keep: Box::new(|_| Ok(())),
        }
    }
}

/// The shared ledger.
pub struct Ledger {
    conn: ConnectionManager,
    describe: String,
    admit: Script,
    release: Script,
    charge: Script,
    contribute: Script,
    binding: Binding,
    /// The epoch this replica's spend is in.
    epoch: std::sync::Mutex<Option<String>>,
    /// One rebuild at a time.
    syncing: tokio::sync::Mutex<()>,
    rebuilds: std::sync::atomic::AtomicU64,
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
    /// Connect (and PING) within 5 s, with no spend of its own ([`Binding::standalone`]).
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        Self::connect_as(url, Binding::standalone()).await
    }

    /// Connect (and PING) within 5 s as one replica, and take the ledger's epoch (adding
    /// this replica's spend first if the ledger lost the epoch it knew).
    pub async fn connect_as(url: &str, binding: Binding) -> Result<Ledger, LedgerError> {
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
        let known = binding.known_epoch.clone();
        let ledger = Ledger {
            conn,
            describe: describe.clone(),
            admit: Script::new(ADMIT),
            release: Script::new(RELEASE),
            charge: Script::new(CHARGE),
            contribute: Script::new(CONTRIBUTE),
            binding,
            epoch: std::sync::Mutex::new(known),
            syncing: tokio::sync::Mutex::new(()),
            rebuilds: std::sync::atomic::AtomicU64::new(0),
        };
        ledger.sync(None).await?;
        Ok(ledger)
    }

    /// The epoch this replica's spend is in.
    pub fn epoch(&self) -> Option<String> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times this replica rebuilt its spend into a new epoch since it started.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Make sure this replica's spend is in the ledger's epoch (see the module's notes):
    /// `stale` is the epoch a script refused (`None`: check anyway).
    async fn sync(&self, stale: Option<&str>) -> Result<(), LedgerError> {
        let _one = self.syncing.lock().await;
        let mine = self.epoch();
        if stale.is_some_and(|s| mine.as_deref().unwrap_or_default() != s) {
            return Ok(()); // rebuilt by another task while this one waited
        }
        let mut c = self.conn.clone();
        let mut current: Option<String> = self
            .ask(redis::cmd("GET").arg(EPOCH_KEY).query_async(&mut c))
            .await?;
        if current.is_none() {
            let fresh = format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            let _: Option<String> = self
                .ask(
                    redis::cmd("SET")
                        .arg(EPOCH_KEY)
                        .arg(&fresh)
                        .arg("NX")
                        .query_async(&mut c),
                )
                .await?;
            current = self
                .ask(redis::cmd("GET").arg(EPOCH_KEY).query_async(&mut c))
                .await?;
        }
        let Some(current) = current else {
            return Err(LedgerError::Unreachable(
                self.describe.clone(),
                "its epoch vanished as soon as it was set".into(),
            ));
        };
        if mine.as_deref() == Some(current.as_str()) {
            return Ok(());
        }
        if mine.is_some() {
            // The ledger lost the epoch this replica's spend was in: add that spend, once.
            let spend = (self.binding.spend)();
            let mut inv = self.contribute.prepare_invoke();
            inv.key(contribution_key(&current, &self.binding.node));
            for (name, start, _) in &spend.accounts {
                inv.key(key(name, *start));
            }
            inv.arg(spend.through).arg(KEY_TTL_S);
            for (_, _, amount) in &spend.accounts {
                inv.arg(pico(*amount)?);
            }
            let added: i64 = self.ask(inv.invoke_async(&mut c)).await?;
            self.rebuilds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                ledger = %self.describe,
                epoch = %current,
                through_seq = spend.through,
                budgets = spend.accounts.len(),
                added = added == 1,
                "the shared budget ledger lost its data (a new epoch): this replica's spend is added to it"
            );
        }
        (self.binding.keep)(&current).map_err(LedgerError::Local)?;
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some(current);
        Ok(())
    }

    /// Whether the ledger still has the epoch this replica's spend is in; rebuild if not.
    /// (Admissions and charges find out by themselves; this is for a replica that is idle.)
    pub async fn check(&self) -> Result<(), LedgerError> {
        let mut c = self.conn.clone();
        let current: Option<String> = self
            .ask(redis::cmd("GET").arg(EPOCH_KEY).query_async(&mut c))
            .await?;
        let mine = self.epoch();
        if current.is_some() && current == mine {
            return Ok(());
        }
        self.sync(mine.as_deref()).await
    }

    fn epoch_or_none(&self) -> String {
        self.epoch().unwrap_or_default()
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
        for _ in 0..3 {
            let epoch = self.epoch_or_none();
            let mut inv = self.admit.prepare_invoke();
            for (name, _, start) in accounts {
                inv.key(key(name, *start));
            }
            inv.key(EPOCH_KEY);
            inv.arg(now_ms)
                .arg(&id)
                .arg(now_ms + RESERVATION_TTL_MS)
                .arg(pico(estimate)?)
                .arg(KEY_TTL_S);
            for (_, limit, _) in accounts {
                inv.arg(pico(*limit)?);
            }
            inv.arg(&epoch);
            let mut c = self.conn.clone();
            let (index, spent, reserved): (i64, String, String) =
                self.ask(inv.invoke_async(&mut c)).await?;
            match usize::try_from(index) {
                Ok(0) => return Ok(id),
                Ok(i) => {
                    return Err(LedgerError::Refused {
                        index: i - 1,
                        spent: spent.parse().unwrap_or_default(),
                        reserved: reserved.parse().unwrap_or_default(),
                    })
                }
                // Not this replica's epoch: rebuild, then ask again.
                Err(_) => self.sync(Some(&epoch)).await?,
            }
        }
        Err(self.unsettled())
    }

    fn unsettled(&self) -> LedgerError {
        LedgerError::Unreachable(
            self.describe.clone(),
            "its epoch changed three times during one question (is something emptying it?)".into(),
        )
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
        seq: u64,
        accounts: &[(String, i64)],
        cost: i128,
    ) -> Result<bool, LedgerError> {
        Ok(self
            .charge_watching(request_id, seq, accounts, cost, &[])
            .await?
            .added)
    }

    /// [`Ledger::charge`], watching thresholds: `thresholds[i]` are amounts (10^-12 USD)
    /// of `accounts[i]`; every one this charge took the spend to or past (from below) is
    /// returned, once across all replicas.
    pub async fn charge_watching(
        &self,
        request_id: &str,
        seq: u64,
        accounts: &[(String, i64)],
        cost: i128,
        thresholds: &[Vec<i128>],
    ) -> Result<Charged, LedgerError> {
        let mut lists = Vec::with_capacity(accounts.len());
        for i in 0..accounts.len() {
            let list = thresholds.get(i).map(Vec::as_slice).unwrap_or_default();
            let mut text = String::new();
            for t in list {
                if !text.is_empty() {
                    text.push(',');
                }
                text.push_str(&pico(*t)?.to_string());
            }
            lists.push(text);
        }
        let mut out: Option<Vec<i64>> = None;
        for _ in 0..3 {
            let epoch = self.epoch_or_none();
            let mut inv = self.charge.prepare_invoke();
            inv.key(EPOCH_KEY)
                .key(contribution_key(&epoch, &self.binding.node))
                .key(format!("logbook:charged:{request_id}"));
            for (name, start) in accounts {
                inv.key(key(name, *start));
            }
            inv.arg(&epoch).arg(seq).arg(pico(cost)?).arg(KEY_TTL_S);
            for text in &lists {
                inv.arg(text);
            }
            let mut c = self.conn.clone();
            let got: Vec<i64> = self.ask(inv.invoke_async(&mut c)).await?;
            if got.first() == Some(&-1) {
                self.sync(Some(&epoch)).await?;
                continue;
            }
            out = Some(got);
            break;
        }
        let out = out.ok_or_else(|| self.unsettled())?;
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
