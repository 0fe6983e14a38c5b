//! The invoke core: every model call, whatever API it came through (Converse,
//! ConverseStream, InvokeModel, InvokeModelWithResponseStream, OpenAI chat and
//! embeddings), passes here. It knows no HTTP. A front door parses its wire format into a
//! [`Call`] and a provider request, asks the core to admit the call (authorization,
//! routing, the journal's readiness, budgets, in that order), runs the model through it
//! (the route's timeout, the usage noted once), has it record how the call ended (cost
//! and metrics stamped by the [`Recorder`]), and renders the answer in its own wire shape.

use crate::capture::{Call, Outcome, RecordError, Recorder, Refusal, StreamStart};
use crate::routing::{Resolved, Routes};
use logbook_ops::budgets::Budgets;
use logbook_ops::Catalog;
use logbook_providers::ProviderError;
use logbook_record::Output;
use logbook_wire::aws::AwsErrorCode;
use std::sync::Arc;

/// What the call path needs, and nothing else: the handlers of the runtime APIs get this,
/// not the application state.
#[derive(Clone)]
pub struct Invoker {
    recorder: Recorder,
    routes: Arc<Routes>,
    budgets: Arc<Budgets>,
    pricing: Arc<Catalog>,
    max_body_bytes: usize,
}

/// Why a call was not made. Each front door words and shapes it; all but
/// [`Refused::Logging`] are recorded (through [`Invoker::fail`]).
#[derive(Debug)]
pub enum Refused {
    /// The caller may not invoke this model (`AccessDeniedException`, 403).
    Denied,
    /// No route serves the model id (`ResourceNotFoundException`, 404).
    NoRoute,
    /// The journal cannot take the record, or logging is required and off: nothing can
    /// be recorded, so nothing is.
    Logging(Refusal),
    /// A budget is spent (`ThrottlingException`, 429); the message names it.
    OverBudget(String),
}

impl Invoker {
    /// The core over a recorder, the routes, the budgets (possibly none) and the price
    /// catalog the budgets estimate with.
    pub fn new(
        recorder: Recorder,
        routes: Arc<Routes>,
        budgets: Arc<Budgets>,
        pricing: Arc<Catalog>,
        max_body_bytes: usize,
    ) -> Self {
        Invoker {
            recorder,
            routes,
            budgets,
            pricing,
            max_body_bytes,
        }
    }

    /// The recorder (for trail events and status).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The routes (for model listings).
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The largest request body a call may send.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Admit a parsed call before its model is called: the caller's permission for the
    /// model, a route, the journal's readiness, then the budgets (a reservation of the
    /// call's estimated cost rides on the call until it ends). On success the model may
    /// be called and the call is marked so.
    pub async fn admit(&self, call: &mut Call) -> Result<Resolved, Refused> {
        if !call.caller.permissions.may_invoke(&call.model_id) {
            return Err(Refused::Denied);
        }
        let r = self
            .routes
            .resolve(&call.model_id)
            .ok_or(Refused::NoRoute)?;
        call.route = Some(r.info.clone());
        self.recorder.ready(call).map_err(Refused::Logging)?;
        self.reserve(call).await.map_err(Refused::OverBudget)?;
        call.model_called = true;
        Ok(r)
    }

    /// Reserve the call's estimated cost in every budget it matches, or say why not.
    async fn reserve(&self, call: &mut Call) -> Result<(), String> {
        if self.budgets.is_empty() {
            return Ok(());
        }
        let facts = logbook_ops::budgets::CallFacts {
            principal: &call.caller.arn,
            tags: &call.caller.tags,
            meta: call.request_metadata.as_ref(),
            model: &call.model_id,
        };
        let Some(budget) = self.budgets.first_match(&facts) else {
            return Ok(());
        };
        let body = call.input.input_body_json.as_ref();
        let max_output = body.and_then(logbook_ops::budgets::max_output_tokens);
        let (kind, upstream) = match &call.route {
            Some(r) => (Some(r.kind), r.upstream_model.as_str()),
            None => (None, call.model_id.as_str()),
        };
        let provider = logbook_ops::pricing::billing_provider(kind, call.api);
        // A budget cannot hold a call it cannot price: refused, saying how to fix it.
        let Some(estimate) = logbook_ops::budgets::estimate(
            &self.pricing,
            provider,
            upstream,
            &call.caller.region,
            call.body_bytes,
            max_output,
        ) else {
            return Err(format!(
                "Budget {budget:?} covers this call, but catalog {} has no {} price for {upstream} in {}, so the budget cannot hold; add a price in [pricing]. The call was not made.",
                self.pricing.version(),
                provider.as_str(),
                call.caller.region
            ));
        };
        let now = logbook_store::now_ms();
        let local = self
            .budgets
            .admit(&facts, estimate, now)
            .map_err(|refused| refused.to_string())?;
        // Replicas: the shared ledger must have room too, in every budget the call
        // matches (this replica's own view alone would let N replicas spend N times).
        if let Some(ledger) = self.recorder.ledger() {
            let accounts = self.budgets.accounts_for_call(&facts, now);
            match ledger.admit(&accounts, estimate, now).await {
                Ok(id) => {
                    let keys = accounts
                        .into_iter()
                        .map(|(n, _, start)| (n, start))
                        .collect();
                    call.ledger_hold = Some(Arc::new(crate::capture::LedgerHold::new(
                        ledger.clone(),
                        keys,
                        id,
                    )));
                }
                Err(logbook_cluster::ledger::LedgerError::Refused {
                    index,
                    spent,
                    reserved,
                }) => {
                    let name = accounts.get(index).map_or("", |a| a.0.as_str());
                    return Err(self
                        .budgets
                        .refusal(name, estimate, spent, reserved)
                        .to_string());
                }
                // Budgets that cannot be checked do not hold: refused (fail closed).
                Err(e) => return Err(format!("{e}; the call was not made.")),
            }
        }
        call.reservation = Some(Arc::new(local));
        Ok(())
    }

    /// Await the model under the route's timeout (`ModelTimeoutException` when it runs
    /// out).
    pub async fn model<T>(
        r: &Resolved,
        fut: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(r.timeout, fut).await {
            Ok(x) => x,
            Err(_) => Err(ProviderError::new(
                AwsErrorCode::ModelTimeoutException,
                "Model has timed out in processing the request.",
            )),
        }
    }

    /// Record a call that answered, with its output; resolves once the record is durable
    /// (strict mode). An error means the client must get an error, not the answer.
    pub async fn finish(&self, call: &Call, output: Output) -> Result<(), RecordError> {
        let outcome = Outcome {
            output: Some(output),
            error: None,
            http_status: 200,
        };
        self.recorder.commit(call.record(outcome)).await.map(|_| ())
    }

    /// Record a call that answered with the JSON `body` (the record's output), and hand
    /// back its bytes for the response: the body is serialized once.
    pub async fn finish_json(
        &self,
        call: &Call,
        body: serde_json::Value,
    ) -> Result<Vec<u8>, RecordError> {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let output = Output {
            output_content_type: Some("application/json".into()),
            output_body_json: Some(body),
            output_body_s3_path: None,
            output_token_count: None,
        };
        self.finish(call, output).await.map(|()| bytes)
    }

    /// Record a call that failed with `code` (the AWS error code, also for other APIs)
    /// and the message its client got, answered with `http_status`.
    pub async fn fail(
        &self,
        call: &Call,
        code: &str,
        message: &str,
        http_status: u16,
        output: Option<Output>,
    ) {
        let outcome = Outcome {
            output,
            error: Some((code.to_string(), message.to_string())),
            http_status,
        };
        // Fail-closed refusals of the record itself are already counted and logged by
        // the recorder; the client gets the call's own error either way.
        let _ = self.recorder.commit(call.record(outcome)).await;
    }

    /// Open the upstream stream while the stream's start entry is journaled (durably, in
    /// strict mode). Both must succeed before a byte of the stream is released; a failed
    /// start means the stream is refused (the caller drops the upstream stream).
    pub async fn open_stream<T>(
        &self,
        call: &Call,
        upstream: impl std::future::Future<Output = T>,
    ) -> (Result<StreamStart, RecordError>, T) {
        tokio::join!(self.recorder.begin_stream(call), upstream)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! The core without HTTP: admission order, the usage rule per provider and
    //! operation, and estimates when the model reports none.
    use super::*;
    use crate::capture::Usage;
    use crate::config::{Config, LoggingMode};
    use crate::control::LoggingConfigs;
    use crate::identity::{Caller, Principals};
    use logbook_journal::{Journal, JournalConfig};
    use logbook_providers::converse::ConverseRequest;
    use logbook_record::{InvocationRecord, Operation};

    struct Fixture {
        _dir: tempfile::TempDir,
        journal: Journal,
        core: Invoker,
        caller: Caller,
    }

    fn fixture(budgets: Vec<logbook_ops::budgets::BudgetSpec>) -> Fixture {
        fixture_with(budgets, |_| {})
    }

    fn fixture_with(
        budgets: Vec<logbook_ops::budgets::BudgetSpec>,
        edit: impl FnOnce(&mut Config),
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path()).unwrap();
        edit(&mut config);
        let journal = Journal::open(JournalConfig::new(dir.path().join("journal"))).unwrap();
        let logging = Arc::new(
            LoggingConfigs::open(
                &dir.path().join("control"),
                config.logging_default.clone(),
                Default::default(),
            )
            .unwrap(),
        );
        let budgets = Budgets::new(budgets);
        let recorder = Recorder::new(
            journal.clone(),
            "test".into(),
            config.on_failure,
            LoggingMode::Strict,
            logging,
            false,
        )
        .with_pricing(config.pricing.clone())
        .with_budgets(budgets.clone());
        let core = Invoker::new(
            recorder,
            Arc::new(Routes::new(&config).unwrap()),
            budgets,
            Arc::new(config.pricing.clone()),
            config.max_body_bytes,
        );
        let caller = Principals::new(&config, &[]).resolve(&http::HeaderMap::new());
        Fixture {
            _dir: dir,
            journal,
            core,
            caller,
        }
    }

    fn records(j: &Journal) -> Vec<InvocationRecord> {
        let upto = *j.committed().borrow();
        let mut r = j.reader(j.first_available().unwrap());
        let mut out = Vec::new();
        while let Some(e) = r.next_entry(upto).unwrap() {
            if let Ok(rec) = serde_json::from_slice::<InvocationRecord>(&e.payload) {
                if rec.schema_type == logbook_record::SCHEMA_TYPE {
                    out.push(rec);
                }
            }
        }
        out
    }

    fn converse_call(f: &Fixture, model: &str, text: &str) -> (Call, ConverseRequest) {
        let body = serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]});
        let mut call = Call::new(
            Operation::Converse,
            "bedrock-runtime",
            model.into(),
            f.caller.clone(),
        );
        call.input.input_body_json = Some(body.clone());
        (call, serde_json::from_value(body).unwrap())
    }

    #[tokio::test]
    async fn a_converse_call_through_the_core_is_recorded_with_reported_usage_and_cost() {
        let f = fixture(Vec::new());
        let (mut call, req) = converse_call(&f, "amazon.nova-lite-v1:0", "hello there");
        let r = f.core.admit(&mut call).await.unwrap();
        assert!(call.model_called && call.route.is_some());
        let resp = Invoker::model(&r, r.provider.converse(&r.info.upstream_model, &req))
            .await
            .unwrap();
        call.set_usage(resp.usage);
        assert_eq!(call.usage(None), Some(Usage::Reported(resp.usage)));
        f.core
            .finish(
                &call,
                Output {
                    output_content_type: Some("application/json".into()),
                    output_body_json: Some(resp.to_json()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let recs = records(&f.journal);
        assert_eq!(recs.len(), 1);
        let rec = &recs[0];
        assert_eq!(rec.input.input_token_count, Some(resp.usage.input_tokens));
        assert_eq!(rec.input.cache_read_input_token_count, Some(0));
        assert!(rec.logbook.estimated_usage.is_none());
        assert!(
            rec.logbook.cost.as_deref().is_some_and(|c| c != "0"),
            "{rec:?}"
        );
    }

    #[tokio::test]
    async fn output_without_a_usage_report_is_estimated_and_priced_never_left_at_zero() {
        let f = fixture(Vec::new());
        let (mut call, _) = converse_call(&f, "amazon.nova-lite-v1:0", "abcdefgh"); // 8 bytes
        f.core.admit(&mut call).await.unwrap();
        let out = serde_json::json!({"output": {"message": {"role": "assistant",
            "content": [{"text": "0123456789ab"}]}}}); // 12 bytes of text, "assistant" 9
        let output = Output {
            output_body_json: Some(out),
            ..Default::default()
        };
        match call.usage(Some(&output)) {
            Some(Usage::Estimated(e)) => {
                // "user" (4) + "abcdefgh" (8) = 12 bytes → 3; "assistant" + 12 = 21 → 6.
                assert_eq!((e.input_tokens, e.output_tokens), (3, 6));
            }
            other => panic!("{other:?}"),
        }
        f.core
            .fail(&call, "ClientDisconnected", "gone", 499, Some(output))
            .await;
        let rec = &records(&f.journal)[0];
        assert_eq!(
            rec.input.input_token_count, None,
            "Bedrock's fields stay reported-only"
        );
        let est = rec.logbook.estimated_usage.unwrap();
        assert_eq!((est.input_tokens, est.output_tokens), (3, 6));
        let cost = logbook_record::money::parse(rec.logbook.cost.as_deref().unwrap()).unwrap();
        assert!(cost > 0, "{rec:?}");
    }

    #[tokio::test]
    async fn a_call_refused_before_its_model_has_no_usage_and_costs_nothing() {
        // Only one model is routed.
        let f = fixture_with(Vec::new(), |c| {
            c.routes.retain(|r| r.model != "*");
            c.routes.push(crate::config::RouteConfig {
                model: "only-this".into(),
                provider: c.providers[0].name.clone(),
                upstream_model: None,
            });
        });
        let (mut call, _) = converse_call(&f, "no-such-model-anywhere", "hi");
        match f.core.admit(&mut call).await {
            Err(Refused::NoRoute) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(!call.model_called);
        f.core
            .fail(&call, "ResourceNotFoundException", "no route", 404, None)
            .await;
        let rec = &records(&f.journal)[0];
        assert!(rec.logbook.estimated_usage.is_none());
        assert_eq!(rec.logbook.cost.as_deref(), Some("0"));
    }

    #[test]
    fn one_token_rule_for_every_operation() {
        // Reported usage without cache counts: the chat operations carry both cache
        // counts as 0 (as Bedrock's Converse records do), the native-body operations and
        // embeddings only what the model reported; cache counts, when reported, reach
        // the record whatever the operation.
        let f = fixture(Vec::new());
        let plain = logbook_providers::TokenUsage::new(10, 4);
        let cached = logbook_providers::TokenUsage {
            cache_read_input_tokens: Some(7),
            cache_write_input_tokens: Some(3),
            ..plain
        };
        let out = || Output {
            output_body_json: Some(serde_json::json!({"x": "y"})),
            ..Default::default()
        };
        for (op, chat) in [
            (Operation::Converse, true),
            (Operation::ConverseStream, true),
            (Operation::ChatCompletions, true),
            (Operation::InvokeModel, false),
            (Operation::InvokeModelWithResponseStream, false),
            (Operation::Embeddings, false),
        ] {
            let mut call = Call::new(op, "bedrock-runtime", "m".into(), f.caller.clone());
            call.model_called = true;
            call.set_usage(plain);
            let rec = call.record(Outcome {
                output: Some(out()),
                error: None,
                http_status: 200,
            });
            let zero = chat.then_some(0);
            assert_eq!(rec.input.input_token_count, Some(10), "{op:?}");
            assert_eq!(
                rec.output.as_ref().unwrap().output_token_count,
                Some(4),
                "{op:?}"
            );
            assert_eq!(rec.input.cache_read_input_token_count, zero, "{op:?}");
            assert_eq!(rec.input.cache_write_input_token_count, zero, "{op:?}");
            assert!(rec.logbook.estimated_usage.is_none(), "{op:?}");
            call.set_usage(cached);
            let rec = call.record(Outcome {
                output: Some(out()),
                error: None,
                http_status: 200,
            });
            assert_eq!(rec.input.cache_read_input_token_count, Some(7), "{op:?}");
            assert_eq!(rec.input.cache_write_input_token_count, Some(3), "{op:?}");
            // No report: estimated (never in Bedrock's fields), for every operation alike.
            call.usage = None;
            let rec = call.record(Outcome {
                output: Some(out()),
                error: None,
                http_status: 200,
            });
            assert_eq!(rec.input.input_token_count, None, "{op:?}");
            assert_eq!(rec.input.cache_read_input_token_count, None, "{op:?}");
            assert!(rec.logbook.estimated_usage.is_some(), "{op:?}");
        }
    }

    #[tokio::test]
    async fn admission_checks_permission_before_anything_else() {
        let mut f = fixture(Vec::new());
        f.caller.permissions = Arc::new(crate::identity::Permissions::from_strings(&[
            "invoke:anthropic.*".into(),
        ]));
        let (mut call, _) = converse_call(&f, "amazon.nova-lite-v1:0", "hi");
        assert!(matches!(
            f.core.admit(&mut call).await,
            Err(Refused::Denied)
        ));
        assert!(call.route.is_none() && !call.model_called);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_the_call_before_its_model() {
        let spec = logbook_ops::budgets::BudgetSpec {
            name: "tiny".into(),
            scope: logbook_ops::budgets::Scope::Model("*".into()),
            period: logbook_ops::budgets::BudgetPeriod::Day,
            limit: 1, // 10^-12 USD
            warn_at: Vec::new(),
            actions: Vec::new(),
        };
        let f = fixture(vec![spec]);
        let (mut call, _) = converse_call(&f, "amazon.nova-lite-v1:0", "hi");
        match f.core.admit(&mut call).await {
            Err(Refused::OverBudget(m)) => assert!(m.contains("tiny"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(!call.model_called);
    }
}
