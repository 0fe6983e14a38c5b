//! Wire formats spoken at the front door and upstream, without I/O.
//!
//! * [`aws`]: AWS rest-json error shapes (`x-amzn-ErrorType`, `{"message": ...}`).
//! * [`eventstream`]: `application/vnd.amazon.eventstream` frames, via `aws-smithy-eventstream`.
//! * [`sse`]: server-sent events as used by OpenAI and Anthropic streams.
//! * [`sigv4`]: parsing of the SigV4 `Authorization` header (who is calling, which scope).
//! * [`openai`]: OpenAI error shapes.

pub mod aws;
pub mod credentials;
pub mod eventstream;
pub mod openai;
pub mod sigv4;
pub mod sse;
