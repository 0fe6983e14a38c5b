//! Queries run apart from model calls. A [`QueryService`] owns the threads queries run on
//! (a tokio runtime of their own, with large stacks), admits at most `max_running +
//! max_queued` queries at once (the rest are refused at once, as CloudWatch refuses past
//! its account concurrency), gives each query a memory pool with a per-query and a total
//! limit (no spilling: a query past its limit fails with a clear error), a time limit,
//! and cancels the query when its caller goes away (`StopQuery`, a client that
//! disconnects, shutdown).
//!
//! Whatever a query does, the threads that serve model calls never run it: a heavy query
//! slows calls only by the CPU the OS gives it, and the query threads run at a lower
//! scheduling priority where the OS allows it.

use crate::{Engine, QueryError, QueryRequest, QueryResult};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The limits every query runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Threads that run queries (never the threads that serve calls).
    pub threads: usize,
    /// Queries executing at once.
    pub max_running: usize,
    /// Queries waiting for a slot; past `max_running + max_queued` a query is refused.
    pub max_queued: usize,
    /// Memory one query may hold in DataFusion's operators (hash tables, sorts, joins).
    pub query_memory_bytes: usize,
    /// Memory all queries together may hold.
    pub total_memory_bytes: usize,
    /// The longest query text, in characters (CloudWatch's `queryString` allows 10,000).
    pub max_query_chars: usize,
    /// Stack of each query thread (planning recurses over the plan).
    pub stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            threads: (cores / 2).max(1),
            max_running: 4,
            // CloudWatch allows 30 concurrent queries per account.
            max_queued: 26,
            query_memory_bytes: 512 << 20,
            total_memory_bytes: 1 << 30,
            max_query_chars: 10_000,
            stack_bytes: 64 << 20,
        }
    }
}

/// A byte budget shared by reservations.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One query's memory pool: its own limit, inside the limit of all queries together.
#[derive(Debug)]
struct QueryPool {
    query: Budget,
    total: Arc<Budget>,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "logbook query pool ({} of {} bytes; all queries {} of {})",
            self.query.used(),
            self.query.limit,
            self.total.used(),
            self.total.limit
        )
    }
}

fn mib(n: usize) -> usize {
    n >> 20
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "logbook-query"
    }

    fn grow(&self, _r: &MemoryReservation, additional: usize) {
        self.query.take(additional);
        self.total.take(additional);
    }

    fn shrink(&self, _r: &MemoryReservation, shrink: usize) {
        self.query.give(shrink);
        self.total.give(shrink);
    }

    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> datafusion::error::Result<()> {
        if !self.query.try_take(additional) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory limit of {} MiB (in {}); narrow the time range, filter earlier or group by fewer values",
                mib(self.query.limit),
                r.consumer().name()
            )));
        }
        if !self.total.try_take(additional) {
            self.query.give(additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the queries running now hold the memory limit of all queries ({} MiB); try again later",
                mib(self.total.limit)
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.query.used()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.query.limit)
    }

    fn register(&self, _consumer: &MemoryConsumer) {}
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Whatever the query still held goes back to the total.
        self.total.give(self.query.used());
    }
}

/// Aborts a task when dropped (the caller went away, or timed out); a query whose caller
/// left before it ended counts as cancelled.
struct AbortOnDrop {
    task: tokio::task::AbortHandle,
    stats: Arc<ServiceStats>,
    ended: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.task.abort();
        if !self.ended {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A place among the admitted queries, held until the query ends.
#[derive(Debug)]
pub struct Admission(tokio::sync::OwnedSemaphorePermit);

/// Counters of the service (for health and metrics).
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Queries admitted.
    pub admitted: AtomicUsize,
    /// Queries refused because too many were running or waiting.
    pub refused: AtomicUsize,
    /// Queries stopped by their time limit.
    pub timed_out: AtomicUsize,
    /// Queries cancelled (stopped, disconnected, shutdown).
    pub cancelled: AtomicUsize,
    /// Queries failed for memory.
    pub out_of_memory: AtomicUsize,
}

/// Runs queries on their own threads under [`Limits`].
pub struct QueryService {
    engine: Arc<Engine>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    total: Arc<Budget>,
    limits: Limits,
    /// Counters.
    pub stats: Arc<ServiceStats>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService")
            .field("limits", &self.limits)
            .finish()
    }
}

impl QueryService {
    /// Start the query threads.
    pub fn new(engine: Arc<Engine>, limits: Limits) -> Result<QueryService, QueryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("logbook-query")
            .thread_stack_size(limits.stack_bytes.max(2 << 20))
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Engine(format!("start the query threads: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(QueryService {
            engine,
            runtime: Mutex::new(Some(runtime)),
            handle,
            admitted: Arc::new(Semaphore::new(
                limits.max_running.max(1) + limits.max_queued,
            )),
            running: Arc::new(Semaphore::new(limits.max_running.max(1))),
            total: Arc::new(Budget::new(limits.total_memory_bytes)),
            limits,
            stats: Default::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes all running queries hold now.
    pub fn memory_in_use(&self) -> usize {
        self.total.used()
    }

    /// Queries admitted and not finished (running or waiting).
    pub fn in_flight(&self) -> usize {
        (self.limits.max_running.max(1) + self.limits.max_queued)
            .saturating_sub(self.admitted.available_permits())
    }

    fn check_text(&self, req: &QueryRequest) -> Result<(), QueryError> {
        let n = req.query.chars().count();
        if n > self.limits.max_query_chars {
            return Err(QueryError::Invalid(format!(
                "the query is {n} characters long; at most {} are allowed",
                self.limits.max_query_chars
            )));
        }
        Ok(())
    }

    /// Check a query's text and take a place among the queries admitted, or refuse at once
    /// (`LimitExceeded`) when `max_running + max_queued` are in flight.
    pub fn admit(&self, req: &QueryRequest) -> Result<Admission, QueryError> {
        self.check_text(req)?;
        self.admit_any()
    }

    fn admit_any(&self) -> Result<Admission, QueryError> {
        let Ok(permit) = self.admitted.clone().try_acquire_owned() else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(QueryError::LimitExceeded(format!(
                "Account maximum query concurrency limit of [{}] reached.",
                self.limits.max_running.max(1) + self.limits.max_queued
            )));
        };
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Admission(permit))
    }

    /// Run a query under the limits, for at most `timeout` (waiting for a slot included).
    /// Dropping the returned future cancels the query.
    pub async fn run(
        &self,
        req: QueryRequest,
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        let a = self.admit(&req)?;
        self.run_admitted(a, req, timeout).await
    }

    /// [`QueryService::run`] for a query already admitted.
    pub async fn run_admitted(
        &self,
        admission: Admission,
        req: QueryRequest,
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        self.submit(admission, timeout, move |engine, env| async move {
            engine.run_in(&req, env).await
        })
        .await
    }

    /// The overview of a range ([`crate::overview`]), under the same limits.
    pub async fn overview(
        &self,
        req: crate::overview::OverviewRequest,
        timeout: Duration,
    ) -> Result<crate::overview::Overview, QueryError> {
        req.check()?;
        let a = self.admit_any()?;
        self.submit(a, timeout, move |engine, env| async move {
            engine.overview_in(&req, env).await
        })
        .await
    }

    /// The chargeback report ([`crate::chargeback`]: rollups where they fit, SQL for the
    /// rest), under the same limits.
    pub async fn chargeback(
        &self,
        spec: crate::report::Chargeback,
        groups: Vec<String>,
        (start, end): (i64, i64),
        after_seq: u64,
        timeout: Duration,
    ) -> Result<crate::report::Report, QueryError> {
        let a = self.admit_any()?;
        self.submit(a, timeout, move |engine, env| async move {
            engine
                .chargeback_in(&spec, &groups, start, end, after_seq, env)
                .await
                .map(|(r, _)| r)
        })
        .await
    }

    /// One record by pointer (`@ptr`), under the same limits.
    pub async fn record(
        &self,
        ptr: String,
        timeout: Duration,
    ) -> Result<Vec<(String, String)>, QueryError> {
        let a = self.admit_any()?;
        self.submit(a, timeout, move |engine, env| async move {
            engine.record_in(&ptr, env).await
        })
        .await
    }

    async fn submit<T, F, Fut>(
        &self,
        admission: Admission,
        timeout: Duration,
        work: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Engine>, Arc<datafusion::execution::runtime_env::RuntimeEnv>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
    {
        let admitted = admission.0;
        let engine = self.engine.clone();
        let running = self.running.clone();
        let pool = Arc::new(QueryPool {
            query: Budget::new(self.limits.query_memory_bytes),
            total: self.total.clone(),
        });
        let task = self.handle.spawn(async move {
            let _admitted = admitted;
            let _slot = running
                .acquire_owned()
                .await
                .map_err(|_| QueryError::Cancelled("the server is shutting down".into()))?;
            let env = engine.query_env(pool);
            // A panic inside the engine fails this query, nothing else.
            AssertUnwindSafe(work(engine, env))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(QueryError::Engine("the query failed unexpectedly".into())))
        });
        let mut guard = AbortOnDrop {
            task: task.abort_handle(),
            stats: self.stats.clone(),
            ended: false,
        };
        let out = match tokio::time::timeout(timeout, task).await {
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(QueryError::Timeout(timeout))
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_cancelled() => {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                Err(QueryError::Cancelled("the query was cancelled".into()))
            }
            Ok(Err(_)) => Err(QueryError::Engine("the query failed unexpectedly".into())),
        };
        guard.ended = true;
        drop(guard);
        if matches!(&out, Err(QueryError::LimitExceeded(m)) if m.contains("memory")) {
            self.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Cancel every query and stop the query threads (at shutdown). Later queries fail.
    pub fn shutdown(&self) {
        self.admitted.close();
        self.running.close();
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = rt {
            rt.shutdown_background();
        }
    }
}

impl Drop for QueryService {
    fn drop(&mut self) {
        // `shutdown_background` never blocks, so this is safe inside an async context.
        self.shutdown();
    }
}

/// Query threads yield the CPU to the threads serving calls: `nice 10` for this thread
/// (Linux applies a nice value per thread id).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            tracing::debug!(error = %e, "could not lower the query thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reservation(pool: &Arc<dyn MemoryPool>) -> MemoryReservation {
        MemoryConsumer::new("test").register(pool)
    }

    #[test]
    fn a_query_pool_holds_its_own_limit_and_the_total() {
        let total = Arc::new(Budget::new(100));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool {
            query: Budget::new(60),
            total: total.clone(),
        });
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool {
            query: Budget::new(60),
            total: total.clone(),
        });
        let ra = reservation(&a);
        let rb = reservation(&b);
        ra.try_grow(60).unwrap();
        let e = ra.try_grow(1).unwrap_err().to_string();
        assert!(e.contains("its memory limit"), "{e}");
        // b fits its own limit but not what is left of the total.
        let e = rb.try_grow(50).unwrap_err().to_string();
        assert!(e.contains("all queries"), "{e}");
        assert_eq!(total.used(), 60);
        rb.try_grow(40).unwrap();
        assert_eq!(total.used(), 100);
        ra.shrink(30);
        assert_eq!(total.used(), 70);
        drop(ra);
        drop(rb);
        drop(a);
        drop(b);
        // Everything went back.
        assert_eq!(total.used(), 0);
    }
}
