//! Where a record is born: one [`Call`] per request collects what the record needs while
//! the request is served, and the [`Recorder`] makes the finished record durable in the
//! journal before the response (or a stream's final frame) is released.

use crate::config::{LoggingMode, OnFailure};
use crate::control::LoggingConfigs;
use crate::identity::Caller;
use logbook_delivery::GcCoordinator;
use logbook_journal::{Journal, JournalError, Kind};
use logbook_providers::converse::TokenUsage;
use logbook_record::logging::data_type;
use logbook_record::trail::TrailEvent;
use logbook_record::{
    estimate_tokens, millis_timestamp, record_timestamp, Destination, EstimatedUsage, Identity,
    Input, InvocationRecord, LogbookExt, Operation, Output, SCHEMA_TYPE, SCHEMA_VERSION,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The provider a call was routed to.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// Provider name.
    pub provider: String,
    /// Provider type.
    pub kind: &'static str,
    /// Upstream model id.
    pub upstream_model: String,
    /// Built-in mock?
    pub mock: bool,
}

/// Everything known about one call while it is served.
#[derive(Debug, Clone)]
pub struct Call {
    /// Request id (also `x-amzn-RequestId`).
    pub request_id: String,
    /// Monotonic start.
    pub started: Instant,
    /// Wall-clock start.
    pub start_time: OffsetDateTime,
    /// Operation.
    pub operation: Operation,
    /// `bedrock-runtime` or `openai`.
    pub api: &'static str,
    /// Model id as the caller sent it.
    pub model_id: String,
    /// Caller.
    pub caller: Caller,
    /// Client address.
    pub client_ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// The client's valid W3C `traceparent`, normalized.
    pub trace_parent: Option<String>,
    /// Routing decision, once made.
    pub route: Option<RouteInfo>,
    /// Request side of the record.
    pub input: Input,
    /// Caller key/value pairs.
    pub request_metadata: Option<BTreeMap<String, String>>,
    /// Performance configuration.
    pub performance_config: Option<Value>,
    /// Streamed response?
    pub stream: bool,
    /// Time to the first streamed model output.
    pub first_token: Option<Duration>,
    /// Token usage as the model reported it, set once by [`Call::set_usage`].
    pub usage: Option<TokenUsage>,
    /// Size of the request body as received (budgets reserve by it).
    pub body_bytes: usize,
    /// The model was called (admission passed): a call that then produced output but no
    /// usage report gets estimated counts.
    pub model_called: bool,
    /// The call's budget reservations, released when the call (and every clone) ends.
    pub reservation: Option<Arc<logbook_ops::budgets::Reservation>>,
    /// Its reservation in the ledger the replicas share, likewise.
    pub ledger_hold: Option<Arc<LedgerHold>>,
}

/// A call's token usage, typed by where it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Usage {
    /// The upstream's usage report.
    Reported(TokenUsage),
    /// Estimated from the bodies: the model answered but reported no usage.
    Estimated(EstimatedUsage),
}

/// How a call ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Response side.
    pub output: Option<Output>,
    /// `(errorCode, message)` for failed calls.
    pub error: Option<(String, String)>,
    /// Status the client got.
    pub http_status: u16,
}

impl Call {
    /// Start a call.
    pub fn new(operation: Operation, api: &'static str, model_id: String, caller: Caller) -> Self {
        Call {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            start_time: OffsetDateTime::now_utc(),
            operation,
            api,
            model_id,
            caller,
            client_ip: None,
            user_agent: None,
            trace_parent: None,
            route: None,
            input: Input::default(),
            request_metadata: None,
            performance_config: None,
            stream: false,
            first_token: None,
            usage: None,
            body_bytes: 0,
            model_called: false,
            reservation: None,
            ledger_hold: None,
        }
    }

    /// Start a call from a client: its address and user agent noted.
    pub fn from_client(
        operation: Operation,
        api: &'static str,
        model_id: String,
        caller: Caller,
        client_ip: std::net::IpAddr,
        user_agent: Option<&str>,
    ) -> Self {
        let mut call = Call::new(operation, api, model_id, caller);
        call.client_ip = Some(client_ip.to_string());
        call.user_agent = user_agent.map(|s| s.chars().take(512).collect());
        call
    }

    /// The call's usage, by one rule: what the model reported; else, when the model was
    /// called and produced output (a stream cut before its usage event, a model that
    /// reports no counts), an estimate from the bodies; else none (refused or failed
    /// before the model answered: nothing billed).
    pub fn usage(&self, output: Option<&Output>) -> Option<Usage> {
        if let Some(u) = &self.usage {
            return Some(Usage::Reported(*u));
        }
        if !self.model_called {
            return None;
        }
        let out = output.and_then(|o| o.output_body_json.as_ref())?;
        Some(Usage::Estimated(EstimatedUsage {
            input_tokens: self.estimated_input_tokens(),
            output_tokens: estimate_tokens(out),
        }))
    }

    /// The input's estimated tokens (see [`logbook_record::estimate_tokens`]).
    pub fn estimated_input_tokens(&self) -> u64 {
        self.input
            .input_body_json
            .as_ref()
            .map_or(0, estimate_tokens)
    }

    /// The model's usage report. The record's token counts come from here and nowhere
    /// else, by one rule ([`Call::record`]).
    pub fn set_usage(&mut self, usage: TokenUsage) {
        self.usage = Some(usage);
    }

    /// Note the first streamed output, once.
    pub fn mark_first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
    }

    /// The record for this call. `logbook.sequence` is filled in by the journal.
    ///
    /// Token counts follow one rule, Bedrock's: the kinds are disjoint (`inputTokenCount`
    /// is uncached input), set only when the model reported usage; the chat operations
    /// (Converse, ConverseStream, OpenAI chat) always carry both cache counts, 0 when
    /// none, as Bedrock's Converse records do; InvokeModel and embeddings carry them only
    /// when the model reported them.
    pub fn record(&self, mut outcome: Outcome) -> InvocationRecord {
        let (error_code, error_message) = match outcome.error {
            Some((c, m)) => (Some(c), Some(m)),
            None => (None, None),
        };
        let mut input = self.input.clone();
        let mut estimated_usage = None;
        match self.usage(outcome.output.as_ref()) {
            Some(Usage::Reported(u)) => {
                let chat = matches!(
                    self.operation,
                    Operation::Converse
                        | Operation::ConverseStream
                        | Operation::ChatCompletions
                        | Operation::Responses
                        | Operation::Completions
                );
                let cache = |n: Option<u64>| if chat { Some(n.unwrap_or(0)) } else { n };
                input.input_token_count = Some(u.input_tokens);
                input.cache_read_input_token_count = cache(u.cache_read_input_tokens);
                input.cache_write_input_token_count = cache(u.cache_write_input_tokens);
                if let Some(o) = outcome.output.as_mut() {
                    o.output_token_count = Some(u.output_tokens);
                }
            }
            // Bedrock's count fields stay what the upstream reported: absent.
            Some(Usage::Estimated(e)) => estimated_usage = Some(e),
            None => {}
        }
        InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: record_timestamp(self.start_time),
            account_id: self.caller.account_id.clone(),
            identity: Identity {
                arn: self.caller.arn.clone(),
            },
            region: self.caller.region.clone(),
            request_id: self.request_id.clone(),
            operation: self.operation.as_str().into(),
            model_id: self.model_id.clone(),
            input,
            output: outcome.output,
            request_metadata: self.request_metadata.clone(),
            inference_region: None,
            error_code,
            performance_config: self.performance_config.clone(),
            logbook: LogbookExt {
                sequence: 0,
                node_id: String::new(),
                provider: self.route.as_ref().map(|r| r.provider.clone()),
                provider_type: self.route.as_ref().map(|r| r.kind.to_string()),
                upstream_model: self.route.as_ref().map(|r| r.upstream_model.clone()),
                mock: self.route.as_ref().is_some_and(|r| r.mock),
                stream: self.stream,
                latency_ms: self.started.elapsed().as_millis() as u64,
                time_to_first_token_ms: self.first_token.map(|d| d.as_millis() as u64),
                start_time: millis_timestamp(self.start_time),
                http_status: outcome.http_status,
                error_message,
                client_ip: self.client_ip.clone(),
                user_agent: self.user_agent.clone(),
                trace_parent: self.trace_parent.clone(),
                auth: self.caller.auth.into(),
                access_key_id: self.caller.access_key_id.clone(),
                api_key_id: self.caller.api_key_id.clone(),
                api: self.api.into(),
                principal_tags: (!self.caller.tags.is_empty()).then(|| self.caller.tags.clone()),
                destination: None,
                bodies_omitted: None,
                cost: None,
                price_catalog: None,
                unpriced: None,
                estimated_usage,
            },
        }
    }
}

/// Charge a record to this replica's budgets; the thresholds it crossed are queued in
/// `crossings` (`None` with a shared ledger: there the ledger says what the whole cluster
/// crossed, and this replica's own spend crossing is no news).
fn charge(
    budgets: &Option<Arc<logbook_ops::budgets::Budgets>>,
    crossings: Option<&std::sync::Mutex<Vec<logbook_ops::budgets::Crossing>>>,
    record: &InvocationRecord,
    seq: u64,
) {
    if let Some(b) = budgets {
        let c = b.charge(record, seq);
        if let (false, Some(crossings)) = (c.is_empty(), crossings) {
            crossings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(c);
        }
    }
}

/// A record could not be made durable and the configuration says fail closed.
#[derive(Debug, thiserror::Error)]
#[error("the invocation could not be logged durably: {0}")]
pub struct RecordError(pub String);

/// Logbook's own error code for a streamed call whose gateway stopped (crash, kill) after
/// the stream started and before its record was complete.
pub const GATEWAY_INTERRUPTED: &str = "GatewayInterrupted";

/// The `logbookEntry` field of a stream's start entry (journal kind
/// [`Kind::StreamStarted`]; the field stays so that format-1 journals are recognised).
pub const STREAM_STARTED: &str = "streamStarted";

/// The `logbookEntry` kind of a stream's progress entry: the output assembled so far,
/// journaled about once a second while the stream runs, so that an interrupted call's
/// record holds what its client had already received.
pub const STREAM_PROGRESS: &str = "streamProgress";

/// A stream's progress entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamProgressEntry {
    /// Always [`STREAM_PROGRESS`].
    pub logbook_entry: String,
    /// Version of this entry's shape.
    pub entry_version: u32,
    /// The call's request id.
    pub request_id: String,
    /// The output body assembled so far.
    pub output_body_json: Value,
}

/// A stream's start entry: journaled (durably, in strict mode) before the stream's first
/// byte leaves; it holds the record the call gets if nothing completes it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStartEntry {
    /// Always [`STREAM_STARTED`].
    pub logbook_entry: String,
    /// Version of this entry's shape.
    pub entry_version: u32,
    /// The call's request id: the record that completes it has the same.
    pub request_id: String,
    /// The record if the stream never completes (errorCode [`GATEWAY_INTERRUPTED`]).
    pub record: InvocationRecord,
}

/// Start entries of streams in flight keep their journal segments from collection.
#[derive(Debug, Default)]
struct Pins {
    next_id: u64,
    by_id: BTreeMap<u64, u64>,
}

/// Holds a stream's start entry against journal GC until the stream's record is final.
#[derive(Debug)]
pub struct StreamStart {
    pin: Option<Pin>,
    /// Whether the output may be journaled as it streams (logging on, bodies kept).
    progress: bool,
}

impl StreamStart {
    /// Should the pump journal progress entries for this stream?
    pub fn journals_progress(&self) -> bool {
        self.progress
    }
}

#[derive(Debug)]
struct Pin {
    pins: Arc<std::sync::Mutex<Pins>>,
    id: u64,
    gc: Option<Arc<GcCoordinator>>,
}

impl StreamStart {
    fn none() -> Self {
        StreamStart {
            pin: None,
            progress: false,
        }
    }
}

fn pinned_min(p: &Pins) -> u64 {
    p.by_id.values().copied().min().unwrap_or(u64::MAX)
}

impl Drop for StreamStart {
    fn drop(&mut self) {
        if let Some(Pin { pins, id, gc }) = self.pin.take() {
            let mut p = pins.lock().unwrap_or_else(|e| e.into_inner());
            p.by_id.remove(&id);
            if let Some(gc) = gc {
                gc.set(GC_NAME, pinned_min(&p));
            }
        }
    }
}

const GC_NAME: &str = "open-streams";

/// Commits records to the journal, under the logging configuration in force.
#[derive(Debug, Clone)]
pub struct Recorder {
    journal: Journal,
    node_id: String,
    on_failure: OnFailure,
    mode: LoggingMode,
    logging: Arc<LoggingConfigs>,
    require_logging: bool,
    pins: Arc<std::sync::Mutex<Pins>>,
    gc: Option<Arc<GcCoordinator>>,
    unrecorded: Arc<std::sync::atomic::AtomicU64>,
    /// Why calls are refused while the journal's disk budget is exhausted (fail-closed).
    over_budget: Arc<std::sync::Mutex<Option<String>>>,
    /// Prices every record before it is journaled.
    pricing: Arc<logbook_ops::Catalog>,
    /// Counts every finished call (Bedrock's runtime metrics).
    metrics: Option<Arc<logbook_ops::Metrics>>,
    /// Charged with every record, in journal order.
    budgets: Option<Arc<logbook_ops::budgets::Budgets>>,
    /// Budget warning thresholds crossed, waiting to be written to the trail.
    crossings: Arc<std::sync::Mutex<Vec<logbook_ops::budgets::Crossing>>>,
    /// The budgets' ledger shared by replicas (`[cluster] redis_url`).
    ledger: Option<Arc<logbook_cluster::ledger::Ledger>>,
}

/// A call's reservation in the shared ledger, released when the call (and every clone)
/// ends.
pub struct LedgerHold {
    ledger: Arc<logbook_cluster::ledger::Ledger>,
    accounts: Vec<(String, i64)>,
    id: String,
}

impl LedgerHold {
    /// A reservation `id` in `accounts`.
    pub fn new(
        ledger: Arc<logbook_cluster::ledger::Ledger>,
        accounts: Vec<(String, i64)>,
        id: String,
    ) -> Self {
        LedgerHold {
            ledger,
            accounts,
            id,
        }
    }
}

impl std::fmt::Debug for LedgerHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHold").field("id", &self.id).finish()
    }
}

impl Drop for LedgerHold {
    fn drop(&mut self) {
        let (ledger, accounts, id) = (
            self.ledger.clone(),
            std::mem::take(&mut self.accounts),
            std::mem::take(&mut self.id),
        );
        // Not released (no runtime, or Redis unreachable): it expires by itself.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = ledger.release(&accounts, &id).await {
                    tracing::warn!(error = %e, "budget reservation not released; it expires by itself");
                }
            });
        }
    }
}

impl Recorder {
    /// A recorder over an open journal.
    pub fn new(
        journal: Journal,
        node_id: String,
        on_failure: OnFailure,
        mode: LoggingMode,
        logging: Arc<LoggingConfigs>,
        require_logging: bool,
    ) -> Self {
        Recorder {
            journal,
            node_id,
            on_failure,
            mode,
            logging,
            require_logging,
            pins: Default::default(),
            gc: None,
            unrecorded: Default::default(),
            over_budget: Default::default(),
            pricing: Arc::new(
                logbook_ops::Catalog::builtin()
                    .unwrap_or_else(|_| logbook_ops::Catalog::empty("none")),
            ),
            metrics: None,
            budgets: None,
            crossings: Default::default(),
            ledger: None,
        }
    }

    /// Charge every record's cost to the ledger the replicas share, too.
    pub fn with_ledger(mut self, ledger: Arc<logbook_cluster::ledger::Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The shared ledger, if any.
    pub fn ledger(&self) -> Option<&Arc<logbook_cluster::ledger::Ledger>> {
        self.ledger.as_ref()
    }

    /// Charge every record's cost to `budgets`, inside its journal append.
    pub fn with_budgets(mut self, budgets: Arc<logbook_ops::budgets::Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Queue budget warning thresholds for the trail.
    pub fn push_crossings(&self, c: Vec<logbook_ops::budgets::Crossing>) {
        self.crossings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(c);
    }

    /// Budget warning thresholds crossed since the last call.
    pub fn take_crossings(&self) -> Vec<logbook_ops::budgets::Crossing> {
        std::mem::take(&mut *self.crossings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn charge(&self, record: &InvocationRecord, seq: u64) {
        charge(&self.budgets, self.local_crossings(), record, seq);
    }

    /// Where this replica's own crossings go: nowhere with a shared ledger.
    fn local_crossings(&self) -> Option<&std::sync::Mutex<Vec<logbook_ops::budgets::Crossing>>> {
        self.ledger.is_none().then_some(&*self.crossings)
    }

    /// The queue of crossings to report (the shared ledger's replay adds to it).
    pub fn crossings_queue(&self) -> Arc<std::sync::Mutex<Vec<logbook_ops::budgets::Crossing>>> {
        self.crossings.clone()
    }

    /// Count every finished call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<logbook_ops::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Price records with `catalog` (the shipped catalog otherwise).
    pub fn with_pricing(mut self, catalog: logbook_ops::Catalog) -> Self {
        self.pricing = Arc::new(catalog);
        self
    }

    /// Calls served without a durable record (fail-open only; each is also logged with
    /// its request id).
    pub fn unrecorded(&self) -> u64 {
        self.unrecorded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refuse new calls with `reason` (the journal's disk budget is exhausted and the
    /// configuration fails closed), or serve them again (`None`).
    pub fn set_over_budget(&self, reason: Option<String>) {
        *self.over_budget.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Keep the start entries of open streams from journal GC through `gc`.
    pub fn with_gc(mut self, gc: Arc<GcCoordinator>) -> Self {
        gc.set(GC_NAME, u64::MAX);
        self.gc = Some(gc);
        self
    }

    fn pin(&self, seq: u64) -> u64 {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        p.next_id += 1;
        let id = p.next_id;
        p.by_id.insert(id, seq);
        if let Some(gc) = &self.gc {
            gc.set(GC_NAME, pinned_min(&p));
        }
        id
    }

    fn repin(&self, id: u64, seq: u64) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        p.by_id.insert(id, seq);
        if let Some(gc) = &self.gc {
            gc.set(GC_NAME, pinned_min(&p));
        }
    }

    /// Journal a stream's start before its first byte leaves: the record it gets if the
    /// gateway stops before the stream ends (input, no output, `GatewayInterrupted`).
    /// Resolves once durable (strict). An error means the stream must be refused.
    pub async fn begin_stream(&self, call: &Call) -> Result<StreamStart, RecordError> {
        let mut provisional = call.record(Outcome {
            output: None,
            error: Some((
                GATEWAY_INTERRUPTED.into(),
                "the gateway stopped before the stream completed".into(),
            )),
            http_status: 200,
        });
        if call.model_called && call.usage.is_none() {
            // If the gateway stops mid-stream, the model has at least read the input;
            // recovery adds what the client had received.
            provisional.logbook.estimated_usage = Some(EstimatedUsage {
                input_tokens: call.estimated_input_tokens(),
                output_tokens: 0,
            });
        }
        self.pricing.price_record(&mut provisional);
        let Some(record) = self.prepare(provisional) else {
            // Logging is off here: nothing would be recorded, so nothing to start.
            return Ok(StreamStart::none());
        };
        // The data-type flag drops input and output bodies together: a kept input body
        // (or none to keep) means the output may be journaled too.
        let progress =
            record.input.input_body_json.is_some() || call.input.input_body_json.is_none();
        let entry = StreamStartEntry {
            logbook_entry: STREAM_STARTED.into(),
            entry_version: 1,
            request_id: call.request_id.clone(),
            record,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| RecordError(e.to_string()))?;
        // Pin below anything this entry can get before it exists, then at its sequence.
        let id = self.pin(*self.journal.committed().borrow());
        let start = StreamStart {
            pin: Some(Pin {
                pins: self.pins.clone(),
                id,
                gc: self.gc.clone(),
            }),
            progress,
        };
        let result = self
            .journal
            .append(Kind::StreamStarted, Box::new(move |_| bytes))
            .await;
        match self.settle(result, &call.request_id) {
            // Fail-open and not journaled: nothing to hold.
            Ok(0) => Ok(StreamStart::none()),
            Ok(seq) => {
                self.repin(id, seq);
                Ok(start)
            }
            Err(e) => Err(e),
        }
    }

    /// Fail fast, before calling a provider: the journal must take records, and when the
    /// configuration requires logging, logging must be on for the caller's region.
    pub fn ready(&self, call: &Call) -> Result<(), Refusal> {
        if self.require_logging
            && self
                .logging
                .effective(&call.caller.account_id, &call.caller.region)
                .is_none()
        {
            return Err(Refusal::LoggingOff(format!(
                "Model invocation logging is off for account {} in {} and this gateway requires it; the call was not made.",
                call.caller.account_id, call.caller.region
            )));
        }
        if let Some(reason) = self
            .over_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(Refusal::Unavailable(reason));
        }
        if self.journal.is_healthy() || self.on_failure == OnFailure::FailOpen {
            Ok(())
        } else {
            Err(Refusal::Unavailable(
                "the journal is unavailable; calls are refused until logging works again".into(),
            ))
        }
    }

    /// The node id stamped on every record.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The logging mode.
    pub fn mode(&self) -> LoggingMode {
        self.mode
    }

    /// Apply the logging configuration in force to the record and append it; resolves once
    /// it is durable (strict) or written (async). Returns `Ok(None)` when logging is off
    /// for the record's (account, region): Bedrock then writes no record either.
    pub async fn commit(&self, mut record: InvocationRecord) -> Result<Option<u64>, RecordError> {
        // Post-call stamping, whatever the logging configuration: cost, then metrics
        // (Bedrock's metrics do not depend on invocation logging either).
        self.pricing.price_record(&mut record);
        if let Some(m) = &self.metrics {
            m.observe(&record);
        }
        if self
            .logging
            .effective(&record.account_id, &record.region)
            .is_none()
        {
            // Not journaled (logging is off here): charged now, not replayed after a crash.
            self.charge(&record, 0);
            return Ok(None);
        }
        let Some(record) = self.prepare(record) else {
            return Ok(None);
        };
        let request_id = record.request_id.clone();
        // The shared ledger is charged once the record is durable (a replay at start
        // charges what a crash left out; the request id makes it count once).
        // (Only with a ledger: without one, no record pays for this.)
        let shared_charge = self.ledger.as_ref().and_then(|l| {
            let b = self.budgets.as_ref()?;
            let accounts = b.accounts_for_record(&record)?;
            Some((l.clone(), b.clone(), accounts))
        });
        let (budgets, crossings) = (self.budgets.clone(), self.crossings.clone());
        let local_crossings = self.ledger.is_none();
        // Serialized here, on the call's own thread: the journal's writer, which every
        // call of a group commit waits for, only writes the sequence in.
        let json = record.to_sequenced_json();
        // The budgets charge from the record, in sequence order, in the writer.
        let mut charged = if budgets.is_some() {
            Some(record)
        } else {
            drop(record);
            None
        };
        let result = self
            .journal
            .append(
                Kind::Record,
                Box::new(move |seq| {
                    if let Some(record) = &mut charged {
                        record.logbook.sequence = seq;
                        // In sequence order, so the budgets' state is "every record up to seq".
                        charge(
                            &budgets,
                            local_crossings.then_some(&*crossings),
                            record,
                            seq,
                        );
                    }
                    json.with_sequence(seq)
                }),
            )
            .await;
        let lost = result.is_err();
        if let (Ok(seq), Some((ledger, budgets, (cost, accounts)))) = (&result, shared_charge) {
            let seq = *seq;
            let id = request_id.clone();
            let queue = self.crossings.clone();
            tokio::spawn(async move {
                // Retried with backoff while the ledger is unreachable (for up to an hour;
                // past that, the replay at the next start charges it). The request id
                // makes a retry of a charge that did land a no-op.
                let mut wait = std::time::Duration::from_millis(250);
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(3600);
                loop {
                    match crate::spend::charge_shared(&ledger, &budgets, &id, seq, &accounts, cost)
                        .await
                    {
                        Ok((_, crossed)) => {
                            queue
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend(crossed);
                            return;
                        }
                        Err(e @ logbook_cluster::ledger::LedgerError::Range(_)) => {
                            tracing::error!(request_id = %id, error = %e, "cost not charged to the shared budget ledger");
                            return;
                        }
                        Err(e) if std::time::Instant::now() >= give_up => {
                            tracing::error!(request_id = %id, error = %e, "cost still not charged to the shared budget ledger after an hour (charged at the next start)");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(request_id = %id, error = %e, retry_in_ms = wait.as_millis() as u64, "cost not yet charged to the shared budget ledger");
                        }
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
            });
        }
        let settled = self.settle(result, &request_id);
        if lost && settled.is_ok() {
            // Fail-open: the call is served without its record. Count it, say which.
            self.unrecorded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(request_id = %request_id, "fail-open: the call is served without a durable record");
        }
        settled.map(Some)
    }

    /// The record as the logging configuration in force says to keep it (destination
    /// stamped, bodies dropped per data type), or `None` when logging is off for its
    /// (account, region).
    fn prepare(&self, mut record: InvocationRecord) -> Option<InvocationRecord> {
        let cfg = self.logging.effective(&record.account_id, &record.region)?;
        let log_group = cfg
            .cloud_watch_config
            .as_ref()
            .map(|c| c.log_group_name.clone());
        let large_data = cfg
            .cloud_watch_config
            .as_ref()
            .and_then(|c| c.large_data_delivery_s3_config.as_ref())
            .map(|s| logbook_record::S3Location {
                bucket: s.bucket_name.clone(),
                key_prefix: s.key_prefix.clone().unwrap_or_default(),
            });
        if let Some(s3) = &cfg.s3_config {
            record.logbook.destination = Some(Destination {
                bucket: s3.bucket_name.clone(),
                key_prefix: s3.key_prefix.clone().unwrap_or_default(),
                log_group,
                large_data,
            });
        } else if log_group.is_some() {
            // CloudWatch only: no bucket takes the record (an empty name matches none).
            record.logbook.destination = Some(Destination {
                bucket: String::new(),
                key_prefix: String::new(),
                log_group,
                large_data,
            });
        }
        let t = data_type(&record.operation, &record.model_id);
        if !cfg.delivers(t) {
            record.input.input_body_json = None;
            if let Some(o) = record.output.as_mut() {
                o.output_body_json = None;
            }
            record.logbook.bodies_omitted = Some(format!("{}=false", t.flag()));
        }
        if !cfg.image_data_delivery_enabled {
            if let Some(body) = record.input.input_body_json.as_mut() {
                if strip_media(body) {
                    let note = "imageDataDeliveryEnabled=false".to_string();
                    record.logbook.bodies_omitted =
                        Some(match record.logbook.bodies_omitted.take() {
                            Some(prev) => format!("{prev},{note}"),
                            None => note,
                        });
                }
            }
        }
        record.logbook.node_id = self.node_id.clone();
        Some(record)
    }

    /// Journal a stream's output so far, in the background (the stream does not wait).
    /// Only for streams whose start entry says so ([`StreamStart::journals_progress`]).
    pub fn stream_progress(&self, request_id: &str, output_body_json: Value) {
        let entry = StreamProgressEntry {
            logbook_entry: STREAM_PROGRESS.into(),
            entry_version: 1,
            request_id: request_id.to_string(),
            output_body_json,
        };
        let Ok(bytes) = serde_json::to_vec(&entry) else {
            return;
        };
        let journal = self.journal.clone();
        let id = request_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = journal
                .append(Kind::StreamProgress, Box::new(move |_| bytes))
                .await
            {
                tracing::warn!(request_id = %id, error = %e, "stream progress not journaled");
            }
        });
    }

    /// Append a control-plane audit event (same durability as records).
    pub async fn commit_event(&self, event: TrailEvent) -> Result<u64, RecordError> {
        let id = event.request_id.clone();
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        let result = self
            .journal
            .append(Kind::TrailEvent, Box::new(move |_| bytes))
            .await;
        match result {
            Ok(seq) => Ok(seq),
            // An audit event is never dropped silently, whatever the invocation policy.
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "audit event not durable");
                Err(RecordError(e.to_string()))
            }
        }
    }

    fn settle(
        &self,
        result: Result<u64, JournalError>,
        request_id: &str,
    ) -> Result<u64, RecordError> {
        match result {
            Ok(seq) => Ok(seq),
            Err(e) => {
                tracing::error!(request_id = %request_id, error = %e, "record not durable");
                match (self.on_failure, &e) {
                    (OnFailure::FailOpen, _) => Ok(0),
                    (_, JournalError::TooLarge(n)) => Err(RecordError(format!(
                        "record of {n} bytes is larger than the journal accepts"
                    ))),
                    _ => Err(RecordError(e.to_string())),
                }
            }
        }
    }
}

/// Remove the bytes of images, documents and videos from a Converse body (the block stays,
/// with its format, so the record still says media was sent). Returns whether any were removed.
pub fn strip_media(body: &mut Value) -> bool {
    let mut stripped = false;
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return false;
    };
    for m in messages {
        let Some(blocks) = m.get_mut("content").and_then(Value::as_array_mut) else {
            continue;
        };
        for b in blocks {
            for kind in ["image", "document", "video"] {
                if let Some(media) = b.get_mut(kind).and_then(Value::as_object_mut) {
                    if media.remove("source").is_some() {
                        stripped = true;
                    }
                }
            }
        }
    }
    stripped
}

/// Why a call is refused before the provider is called.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The journal cannot take records.
    #[error("{0}")]
    Unavailable(String),
    /// Logging is off and the gateway requires it.
    #[error("{0}")]
    LoggingOff(String),
}

/// After a crash: every stream whose start entry has no record gets the record its start
/// entry holds (`GatewayInterrupted`), appended now. Run before delivery or GC starts, so
/// no start entry can have been collected. Returns how many were completed.
pub async fn recover_interrupted_streams(
    journal: &Journal,
    pricing: &logbook_ops::Catalog,
) -> Result<usize, RecordError> {
    let from = journal
        .first_available()
        .map_err(|e| RecordError(e.to_string()))?;
    let upto = *journal.committed().borrow();
    let mut reader = journal.reader(from);
    let open =
        tokio::task::spawn_blocking(move || -> Result<Vec<InvocationRecord>, JournalError> {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Head {
                request_id: Option<String>,
            }
            let mut open: BTreeMap<String, (u64, InvocationRecord)> = BTreeMap::new();
            while let Some(e) = reader.next_entry(upto)? {
                if e.kind == Kind::StreamStarted {
                    if let Ok(s) = serde_json::from_slice::<StreamStartEntry>(&e.payload) {
                        open.insert(s.request_id, (e.seq, s.record));
                    }
                } else if e.kind == Kind::StreamProgress {
                    if let Ok(p) = serde_json::from_slice::<StreamProgressEntry>(&e.payload) {
                        if let Some((_, r)) = open.get_mut(&p.request_id) {
                            // What the client had received by then (the latest wins):
                            // the estimate of what the model generated.
                            if let Some(est) = r.logbook.estimated_usage.as_mut() {
                                est.output_tokens = estimate_tokens(&p.output_body_json);
                            }
                            r.output = Some(Output {
                                output_content_type: Some("application/json".into()),
                                output_body_json: Some(p.output_body_json),
                                output_body_s3_path: None,
                                output_token_count: None,
                            });
                        }
                    }
                } else if e.kind == Kind::Record && !open.is_empty() {
                    if let Some(id) = serde_json::from_slice::<Head>(&e.payload)
                        .ok()
                        .and_then(|h| h.request_id)
                    {
                        open.remove(&id);
                    }
                }
            }
            let mut v: Vec<(u64, InvocationRecord)> = open.into_values().collect();
            v.sort_by_key(|(seq, _)| *seq);
            Ok(v.into_iter().map(|(_, r)| r).collect())
        })
        .await
        .map_err(|e| RecordError(e.to_string()))?
        .map_err(|e| RecordError(e.to_string()))?;
    let n = open.len();
    for mut record in open {
        let id = record.request_id.clone();
        if record.logbook.estimated_usage.is_some() {
            // Priced again with the output the client had received.
            pricing.price_record(&mut record);
        }
        let json = record.to_sequenced_json();
        journal
            .append(Kind::Record, Box::new(move |seq| json.with_sequence(seq)))
            .await
            .map_err(|e| RecordError(e.to_string()))?;
        tracing::warn!(request_id = %id, "a stream interrupted by a stop of the gateway is recorded as GatewayInterrupted");
    }
    Ok(n)
}
