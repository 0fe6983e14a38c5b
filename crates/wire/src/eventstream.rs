//! `application/vnd.amazon.eventstream` framing for Bedrock's streaming operations
//! (reference §5.1), built on `aws-smithy-eventstream`.
//!
//! * Event: headers `:event-type`, `:content-type: application/json`, `:message-type: event`;
//!   the payload is the event member's JSON plus a random `p` padding field.
//! * InvokeModelWithResponseStream chunk: `:event-type: chunk`,
//!   payload `{"bytes": "<base64 of the model's JSON chunk>", "p": "..."}`.
//! * Exception: `:exception-type: <lowerCamel member>`, `:message-type: exception`,
//!   payload `{"message": "..."}`.

use aws_smithy_eventstream::frame::{write_message_to, DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde_json::{Map, Value};

/// Event-stream encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
#[error("event stream: {0}")]
pub struct EventStreamError(String);

const PAD_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Random-length padding, as Bedrock adds against length side channels.
pub fn padding() -> String {
    let mut rng = rand::rng();
    let n = rng.random_range(1..=40);
    (0..n)
        .map(|_| PAD_CHARS[rng.random_range(0..PAD_CHARS.len())] as char)
        .collect()
}

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Result<Bytes, EventStreamError> {
    let msg = Message::new_from_parts(headers, payload);
    let mut out = BytesMut::new();
    write_message_to(&msg, &mut out).map_err(|e| EventStreamError(e.to_string()))?;
    Ok(out.freeze())
}

fn str_header(name: &'static str, value: impl Into<String>) -> Header {
    Header::new(name, HeaderValue::String(value.into().into()))
}

fn with_padding(mut obj: Map<String, Value>) -> Vec<u8> {
    obj.insert("p".into(), Value::String(padding()));
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// An event frame whose payload is `member` (a JSON object) plus padding.
pub fn event(event_type: &str, member: Map<String, Value>) -> Result<Bytes, EventStreamError> {
    frame(
        vec![
            str_header(":event-type", event_type),
            str_header(":content-type", "application/json"),
            str_header(":message-type", "event"),
        ],
        with_padding(member),
    )
}

/// An InvokeModelWithResponseStream `chunk` frame carrying the model's JSON chunk bytes.
pub fn chunk(model_chunk: &[u8]) -> Result<Bytes, EventStreamError> {
    let mut m = Map::new();
    m.insert(
        "bytes".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(model_chunk)),
    );
    event("chunk", m)
}

/// An exception frame (`:exception-type` is the union member name, e.g. `throttlingException`).
pub fn exception(member: &str, message: &str) -> Result<Bytes, EventStreamError> {
    let mut m = Map::new();
    m.insert("message".into(), Value::String(message.to_string()));
    frame(
        vec![
            str_header(":exception-type", member),
            str_header(":content-type", "application/json"),
            str_header(":message-type", "exception"),
        ],
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default(),
    )
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    /// `:message-type` (`event`, `exception` or `error`).
    pub message_type: String,
    /// `:event-type`, `:exception-type` or `:error-code`.
    pub kind: String,
    /// Raw payload.
    pub payload: Bytes,
}

impl DecodedMessage {
    /// For a `chunk` event, the decoded model bytes inside `{"bytes": "..."}`.
    pub fn chunk_bytes(&self) -> Option<Vec<u8>> {
        let v: Value = serde_json::from_slice(&self.payload).ok()?;
        let b = v.get("bytes")?.as_str()?;
        base64::engine::general_purpose::STANDARD.decode(b).ok()
    }

    /// The payload as a JSON object with the padding field removed.
    pub fn json(&self) -> Option<Map<String, Value>> {
        match serde_json::from_slice(&self.payload).ok()? {
            Value::Object(mut m) => {
                m.remove("p");
                Some(m)
            }
            _ => None,
        }
    }
}

/// Incremental decoder: push bytes as they arrive, get whole messages out.
#[derive(Debug, Default)]
pub struct Decoder {
    inner: MessageFrameDecoder,
    buf: BytesMut,
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes and return every message now complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<DecodedMessage>, EventStreamError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let DecodedFrame::Complete(msg) = self
            .inner
            .decode_frame(&mut self.buf)
            .map_err(|e| EventStreamError(e.to_string()))?
        {
            out.push(to_decoded(&msg));
        }
        Ok(out)
    }

    /// True when no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn header_str(msg: &Message, name: &str) -> Option<String> {
    msg.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str().to_string())
}

fn to_decoded(msg: &Message) -> DecodedMessage {
    let message_type = header_str(msg, ":message-type").unwrap_or_default();
    let kind = header_str(msg, ":event-type")
        .or_else(|| header_str(msg, ":exception-type"))
        .or_else(|| header_str(msg, ":error-code"))
        .unwrap_or_default();
    DecodedMessage {
        message_type,
        kind,
        payload: msg.payload().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_round_trip_byte_by_byte() {
        let a = chunk(br#"{"type":"message_start"}"#).unwrap();
        let mut m = Map::new();
        m.insert("role".into(), Value::String("assistant".into()));
        let b = event("messageStart", m).unwrap();
        let c = exception("throttlingException", "slow down").unwrap();
        let all: Vec<u8> = [a, b, c].iter().flat_map(|x| x.to_vec()).collect();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for byte in all {
            got.extend(d.push(&[byte]).unwrap());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].kind, "chunk");
        assert_eq!(
            got[0].chunk_bytes().unwrap(),
            br#"{"type":"message_start"}"#
        );
        assert_eq!(got[1].json().unwrap()["role"], "assistant");
        assert!(got[1].json().unwrap().get("p").is_none());
        assert_eq!(got[2].message_type, "exception");
        assert_eq!(got[2].kind, "throttlingException");
        assert!(d.is_empty());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut d = Decoder::new();
            let _ = d.push(&data);
        }
    }
}
