//! HTTP plumbing shared by the upstream providers.

use crate::ProviderError;
use logbook_wire::aws::AwsErrorCode;
use std::time::Duration;

/// A client with a 10 s connect timeout and `timeout` between reads.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(timeout)
        .build()
        .map_err(|e| ProviderError::validation(format!("cannot build HTTP client: {e}")))
}

/// Map a transport failure to the exception a client should see. `other` is the code for
/// failures that are neither timeouts nor refused connections. The upstream URL is removed
/// from the message (it may carry credentials).
pub(crate) fn transport_error(e: reqwest::Error, other: AwsErrorCode) -> ProviderError {
    if e.is_timeout() {
        ProviderError::new(
            AwsErrorCode::ModelTimeoutException,
            "Model has timed out in processing the request (upstream timeout)",
        )
    } else if e.is_connect() {
        ProviderError::new(
            AwsErrorCode::ServiceUnavailableException,
            "upstream provider unreachable",
        )
    } else {
        let mut s = e.to_string();
        if let Some(u) = e.url() {
            s = s.replace(u.as_str(), "<upstream>");
        }
        ProviderError::new(other, format!("upstream provider error: {s}"))
    }
}

/// Read an upstream error answer: its status and the best message in it (`error.message`,
/// a string `error`, or the start of the body).
pub(crate) async fn error_answer(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message")
                .and_then(serde_json::Value::as_str)
                .or_else(|| e.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
    (status, msg)
}
