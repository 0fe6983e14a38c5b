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
