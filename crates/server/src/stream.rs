//! One pump for every streaming response (ConverseStream, InvokeModelWithResponseStream,
//! OpenAI chat with `stream`).
//!
//! Frames pass through as the upstream produces them. Frames a format marks *final* are
//! held back until the call's record is durable; if a non-final frame follows, the held
//! ones were not final after all and go out first. At the end the record is committed;
//! then the held frames (plus any trailer, e.g. `[DONE]`) are released, or, if the stream
//! failed or the record could not be made durable, an error frame instead. A client that
//! goes away stops the upstream and is recorded as `ClientDisconnected`.

use crate::bedrock::CLIENT_DISCONNECTED;
use crate::capture::{Call, Outcome, StreamStart};
use crate::invoke::Invoker;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use logbook_providers::ProviderError;
use logbook_record::Output;
use logbook_wire::aws::AwsErrorCode;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How one streaming API turns upstream items into frames and a record.
pub trait StreamFormat: Send + 'static {
    /// What the upstream stream yields.
    type Item: Send + 'static;

    /// Frames for one item, each with whether it is final.
    fn frames(
        &mut self,
        item: Self::Item,
        call: &mut Call,
    ) -> Result<Vec<(Bytes, bool)>, ProviderError>;

    /// The record's output section from everything seen (also fills token counts in `call`).
    fn output(&mut self, call: &mut Call) -> Output;

    /// The output body assembled so far, without consuming anything (journaled now and
    /// then, so an interrupted call's record holds what its client had received).
    fn partial(&self) -> Option<serde_json::Value> {
        None
    }

    /// The frame that tells the client about an error.
    fn error_frame(&self, code: AwsErrorCode, message: &str) -> Option<Bytes>;

    /// Frames sent after the held ones once the record is durable.
    fn trailer(&self) -> Vec<Bytes> {
        Vec::new()
    }
}

/// How often a running stream journals the output its client has received so far.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn timeout_error() -> ProviderError {
    ProviderError::new(
        AwsErrorCode::ModelTimeoutException,
        "Model has timed out in processing the request.",
    )
}

/// Run a stream to its end, recording the call; frames go to `tx`. `start` (the journaled
/// start entry) is held until the record is final.
pub async fn pump<F: StreamFormat>(
    core: Invoker,
    start: StreamStart,
    mut call: Call,
    mut stream: BoxStream<'static, Result<F::Item, ProviderError>>,
    timeout: Duration,
    mut format: F,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut held: Vec<Bytes> = Vec::new();
    let mut error: Option<ProviderError> = None;
    let mut gone = false;
    let mut last_progress = tokio::time::Instant::now();
    let mut sent_since_progress = false;
    'items: loop {
        let item = match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                error = Some(timeout_error());
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                error = Some(e);
                break;
            }
            Ok(Some(Ok(item))) => item,
        };
        let frames = match format.frames(item, &mut call) {
            Ok(f) => f,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        for (frame, is_final) in frames {
            if is_final {
                held.push(frame);
                continue;
            }
            for f in held.drain(..).chain(std::iter::once(frame)) {
                if tx.send(Ok(f)).await.is_err() {
                    gone = true;
                    break 'items;
                }
                sent_since_progress = true;
            }
        }
        if sent_since_progress
            && start.journals_progress()
            && last_progress.elapsed() >= PROGRESS_EVERY
        {
            if let Some(p) = format.partial() {
                core.recorder().stream_progress(&call.request_id, p);
            }
            last_progress = tokio::time::Instant::now();
            sent_since_progress = false;
        }
    }
    drop(stream); // stops the upstream, so a departed client costs no more tokens
    let output = format.output(&mut call);
    let recorded_error = match (&error, gone) {
        (Some(e), _) => Some((e.code.as_str().to_string(), e.message.clone())),
        (None, true) => Some((
            CLIENT_DISCONNECTED.to_string(),
            "client disconnected before the stream completed".to_string(),
        )),
        (None, false) => None,
    };
    let outcome = Outcome {
        output: Some(output),
        error: recorded_error,
        http_status: if gone { 499 } else { 200 },
    };
    let committed = core.recorder().commit(call.record(outcome)).await;
    // Committed or not, the start entry stays in the journal: after a restart, a stream
    // whose record never became durable is recorded from it as interrupted.
    drop(start);
    if gone {
        return;
    }
    let frames: Vec<Bytes> = match (error, committed) {
        (Some(e), _) => format.error_frame(e.code, &e.message).into_iter().collect(),
        (None, Err(e)) => format
            .error_frame(AwsErrorCode::InternalServerException, &e.to_string())
            .into_iter()
            .collect(),
        (None, Ok(_)) => {
            let mut h = held;
            h.extend(format.trailer());
            h
        }
    };
    for f in frames {
        if tx.send(Ok(f)).await.is_err() {
            break;
        }
    }
}
