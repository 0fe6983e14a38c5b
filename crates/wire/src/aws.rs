//! AWS rest-json errors as Bedrock returns them (reference §4 "REST-JSON error wire format").

use serde_json::json;

/// The exceptions of the `bedrock-runtime` model (botocore `bedrock-runtime/2023-09-30`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorCode {
    /// 400
    ValidationException,
    /// 400
    ServiceQuotaExceededException,
    /// 403
    AccessDeniedException,
    /// 404
    ResourceNotFoundException,
    /// 408
    ModelTimeoutException,
    /// 429
    ThrottlingException,
    /// 429
    ModelNotReadyException,
    /// 424
    ModelErrorException,
    /// 424
    ModelStreamErrorException,
    /// 500
    InternalServerException,
    /// 503
    ServiceUnavailableException,
    /// 413 (request body over the 25 MB limit; answered before the model is called)
    PayloadTooLarge,
    /// 415 (wrong content type)
    UnsupportedMediaType,
}

impl AwsErrorCode {
    /// HTTP status of the exception.
    pub fn status(self) -> u16 {
        use AwsErrorCode::*;
        match self {
            ValidationException | ServiceQuotaExceededException => 400,
            AccessDeniedException => 403,
            ResourceNotFoundException => 404,
            ModelTimeoutException => 408,
            ThrottlingException | ModelNotReadyException => 429,
            ModelErrorException | ModelStreamErrorException => 424,
            InternalServerException => 500,
            ServiceUnavailableException => 503,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
        }
    }

    /// The shape name, as carried in `x-amzn-ErrorType` and in records' `errorCode`.
    pub fn as_str(self) -> &'static str {
        use AwsErrorCode::*;
        match self {
            ValidationException => "ValidationException",
            ServiceQuotaExceededException => "ServiceQuotaExceededException",
            AccessDeniedException => "AccessDeniedException",
            ResourceNotFoundException => "ResourceNotFoundException",
            ModelTimeoutException => "ModelTimeoutException",
            ThrottlingException => "ThrottlingException",
            ModelNotReadyException => "ModelNotReadyException",
            ModelErrorException => "ModelErrorException",
            ModelStreamErrorException => "ModelStreamErrorException",
            InternalServerException => "InternalServerException",
            ServiceUnavailableException => "ServiceUnavailableException",
            // API Gateway-style names used by AWS front ends for these statuses.
            PayloadTooLarge => "ValidationException",
            UnsupportedMediaType => "ValidationException",
        }
    }

    /// Parse a shape name (the part of `x-amzn-ErrorType` before `:`).
    pub fn parse(s: &str) -> Option<Self> {
        use AwsErrorCode::*;
        let name = s.split(':').next().unwrap_or(s);
        let name = name.rsplit('#').next().unwrap_or(name);
        Some(match name {
            "ValidationException" => ValidationException,
            "ServiceQuotaExceededException" => ServiceQuotaExceededException,
            "AccessDeniedException" => AccessDeniedException,
            "ResourceNotFoundException" => ResourceNotFoundException,
            "ModelTimeoutException" => ModelTimeoutException,
            "ThrottlingException" => ThrottlingException,
            "ModelNotReadyException" => ModelNotReadyException,
            "ModelErrorException" => ModelErrorException,
            "ModelStreamErrorException" => ModelStreamErrorException,
            "InternalServerException" => InternalServerException,
            "ServiceUnavailableException" => ServiceUnavailableException,
            _ => return None,
        })
    }

    /// The member name of this exception inside an event stream union
    /// (`:exception-type`), e.g. `throttlingException`.
    pub fn stream_member(self) -> &'static str {
        use AwsErrorCode::*;
        match self {
            ValidationException | PayloadTooLarge | UnsupportedMediaType => "validationException",
            ThrottlingException | ModelNotReadyException | ServiceQuotaExceededException => {
                "throttlingException"
            }
            ModelTimeoutException => "modelTimeoutException",
            ServiceUnavailableException => "serviceUnavailableException",
            ModelStreamErrorException
            | ModelErrorException
            | ResourceNotFoundException
            | AccessDeniedException => "modelStreamErrorException",
            InternalServerException => "internalServerException",
        }
    }
}

/// Value of the `x-amzn-ErrorType` header for Bedrock.
pub fn error_type_header(code: AwsErrorCode) -> String {
    format!(
        "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        code.as_str()
    )
}

/// The JSON body of an AWS error.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "message": message })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_parse_round_trip() {
        for c in [
            AwsErrorCode::ValidationException,
            AwsErrorCode::ThrottlingException,
            AwsErrorCode::ModelTimeoutException,
            AwsErrorCode::ResourceNotFoundException,
        ] {
            assert_eq!(AwsErrorCode::parse(&error_type_header(c)), Some(c));
        }
        assert_eq!(
            AwsErrorCode::parse("com.amazon.coral#ThrottlingException"),
            Some(AwsErrorCode::ThrottlingException)
        );
        assert_eq!(error_body("x\"y"), br#"{"message":"x\"y"}"#.to_vec());
    }
}
