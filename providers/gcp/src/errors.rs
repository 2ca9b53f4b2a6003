//! Google Cloud errors, classified for the autoscaler: capacity (try the next
//! zone, then another type), quota (stop asking; `ray status` says so),
//! throttling (slow down and retry), auth (say where the credentials came from),
//! invalid config.
//!
//! Compute answers most launch failures twice over: a request it refuses at once
//! is an HTTP error whose `errors[].reason` says why (`quotaExceeded`,
//! `rateLimitExceeded`, ...); a request it accepts can still fail later, and then
//! the *operation* ends with `error.errors[].code` (`ZONE_RESOURCE_POOL_EXHAUSTED`,
//! `QUOTA_EXCEEDED`, ...).

use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::error::Error;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use ray_providers::{ErrorClass, ProviderError};

/// Operation error codes (and HTTP reasons) meaning "no room for this here and now".
const CAPACITY: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_POOL_EXHAUSTED",
    "STOCKOUT",
    "resourceExhausted",
    "RESOURCE_NOT_AVAILABLE",
];
/// The project's quotas.
const QUOTA: &[&str] = &["QUOTA_EXCEEDED", "quotaExceeded", "limitExceeded", "REGIONAL_QUOTA_EXCEEDED"];
/// The API asks the caller to slow down.
const THROTTLED: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"];
/// Credentials missing, wrong or not allowed.
const AUTH: &[&str] = &["authError", "forbidden", "insufficientPermissions", "accessNotConfigured", "PERMISSIONS_ERROR"];
/// The request itself is wrong.
const INVALID: &[&str] = &["invalid", "badRequest", "required", "notFound", "invalidParameter", "parseError", "conditionNotMet"];

/// The class of an operation error code or an HTTP error reason.
pub fn class_of_code(code: &str) -> Option<ErrorClass> {
    if CAPACITY.contains(&code) {
        Some(ErrorClass::Capacity)
    } else if QUOTA.contains(&code) {
        Some(ErrorClass::Quota)
    } else if THROTTLED.contains(&code) {
        Some(ErrorClass::Throttled)
    } else if AUTH.contains(&code) {
        Some(ErrorClass::Auth)
    } else if INVALID.contains(&code) {
        Some(ErrorClass::InvalidConfig)
    } else {
        None
    }
}

/// The `errors[].reason` values of a service error.
pub fn reasons(e: &Error) -> Vec<String> {
    e.status()
        .map(|s| {
            s.details
                .iter()
                .filter_map(|d| match d {
                    StatusDetails::ErrorInfo(i) if !i.reason.is_empty() => Some(i.reason.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// True when the API answered 404 (the resource does not exist).
pub fn is_not_found(e: &ProviderError) -> bool {
    e.message.contains("(HTTP 404")
}

/// True when the API answered 409 (the resource exists already).
pub fn is_already_exists(e: &ProviderError) -> bool {
    e.message.contains("(HTTP 409")
}

/// A classified error for a failure of `op` (`instances.insert`, ...).
pub fn classify(op: &str, e: &Error, credentials_source: &str) -> ProviderError {
    if e.is_authentication() {
        return ProviderError::new(ErrorClass::Auth, format!("{op}: no usable Google Cloud credentials from {credentials_source}: {e}"));
    }
    let http = e.http_status_code();
    let reasons = reasons(e);
    let message = e.status().map(|s| s.message.clone()).unwrap_or_else(|| e.to_string());
    // Compute's errors carry no `status`: the reason decides, then the HTTP code.
    let class = reasons.iter().find_map(|r| class_of_code(r)).unwrap_or_else(|| match (http, e.status().map(|s| s.code)) {
        (Some(429), _) | (_, Some(Code::ResourceExhausted)) => ErrorClass::Throttled,
        (Some(401 | 403), _) | (_, Some(Code::Unauthenticated | Code::PermissionDenied)) => ErrorClass::Auth,
        (Some(400 | 404 | 409 | 412), _) | (_, Some(Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition)) => {
            ErrorClass::InvalidConfig
        }
        (Some(500..=599), _) | (_, Some(Code::Unavailable | Code::Internal | Code::Aborted | Code::DeadlineExceeded)) => ErrorClass::Transient,
        (None, _) if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() => ErrorClass::Transient,
        _ => ErrorClass::Other,
    });
    let code = http.map(|h| format!(" (HTTP {h}{})", if reasons.is_empty() { String::new() } else { format!(" {}", reasons.join(",")) })).unwrap_or_default();
    let mut text = format!("{op}: {message}{code}");
    if class == ErrorClass::Auth {
        text.push_str(&format!(" (credentials from {credentials_source})"));
    }
    ProviderError::new(class, text)
}

/// The error an operation ended with, classified; `None` when it succeeded.
pub fn classify_operation(what: &str, op: &Operation, credentials_source: &str) -> Option<ProviderError> {
    let errors = &op.error.as_ref()?.errors;
    let first = errors.first()?;
    let code = first.code.clone().unwrap_or_default();
    let class = class_of_code(&code).unwrap_or(match op.http_error_status_code {
        Some(401 | 403) => ErrorClass::Auth,
        Some(400 | 404 | 409) => ErrorClass::InvalidConfig,
        Some(429) => ErrorClass::Throttled,
        Some(500..=599) => ErrorClass::Transient,
        _ => ErrorClass::Other,
    });
    let all: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.code.as_deref().unwrap_or("?"), e.message.as_deref().unwrap_or("")))
        .collect();
    let mut text = format!("{what}: {}", all.join("; "));
    if class == ErrorClass::Auth {
        text.push_str(&format!(" (credentials from {credentials_source})"));
    }
    Some(ProviderError::new(class, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons_map_to_classes() {
        assert_eq!(class_of_code("ZONE_RESOURCE_POOL_EXHAUSTED"), Some(ErrorClass::Capacity));
        assert_eq!(class_of_code("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"), Some(ErrorClass::Capacity));
        assert_eq!(class_of_code("QUOTA_EXCEEDED"), Some(ErrorClass::Quota));
        assert_eq!(class_of_code("quotaExceeded"), Some(ErrorClass::Quota));
        assert_eq!(class_of_code("rateLimitExceeded"), Some(ErrorClass::Throttled));
        assert_eq!(class_of_code("forbidden"), Some(ErrorClass::Auth));
        assert_eq!(class_of_code("invalid"), Some(ErrorClass::InvalidConfig));
        assert_eq!(class_of_code("somethingNew"), None);
    }

    #[test]
    fn an_operation_error_is_classified_by_its_code() {
        let op: Operation = serde_json::from_value(serde_json::json!({
            "name": "operation-1", "status": "DONE", "httpErrorStatusCode": 503,
            "error": {"errors": [{"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": "The zone does not have enough resources"}]}
        }))
        .unwrap();
        let e = classify_operation("instances.insert", &op, "x").unwrap();
        assert_eq!(e.class, ErrorClass::Capacity);
        assert!(e.message.contains("ZONE_RESOURCE_POOL_EXHAUSTED"), "{e}");
        let ok: Operation = serde_json::from_value(serde_json::json!({"name": "operation-2", "status": "DONE"})).unwrap();
        assert!(classify_operation("x", &ok, "x").is_none());
    }
}
