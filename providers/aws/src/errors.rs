//! EC2 and IAM errors, classified for the autoscaler: capacity (try another
//! subnet, zone, market or node type), quota (stop asking), throttling (slow
//! down and retry), auth (say where the credentials came from), invalid config.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ray_providers::{ErrorClass, ProviderError};

/// No room for the instance type here and now: another subnet, zone, market or
/// type may have it.
const CAPACITY: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
];

/// The account's limits.
const QUOTA: &[&str] = &["InstanceLimitExceeded", "VcpuLimitExceeded", "AddressLimitExceeded", "LimitExceeded", "ResourceLimitExceeded"];

/// The API asks the caller to slow down.
const THROTTLED: &[&str] = &["RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException", "SlowDown"];

/// Credentials missing, wrong or not allowed.
const AUTH: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
    "Blocked",
    "MissingAuthenticationToken",
];

/// The service had a hiccup.
const TRANSIENT: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "ServerInternal"];

/// The class of an AWS error code.
pub fn class_of_code(code: &str) -> ErrorClass {
    if CAPACITY.contains(&code) {
        ErrorClass::Capacity
    } else if QUOTA.contains(&code) {
        ErrorClass::Quota
    } else if THROTTLED.contains(&code) {
        ErrorClass::Throttled
    } else if AUTH.contains(&code) {
        ErrorClass::Auth
    } else if TRANSIENT.contains(&code) {
        ErrorClass::Transient
    } else if code == "IdempotentParameterMismatch" || code.starts_with("Invalid") || code.starts_with("Missing") || code.starts_with("Unknown") || code == "ValidationError" || code == "MalformedPolicyDocument" {
        ErrorClass::InvalidConfig
    } else {
        ErrorClass::Other
    }
}

/// Where the SDK's default chain takes credentials from here, for messages.
pub fn credentials_source() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if env("AWS_ACCESS_KEY_ID").is_some() {
        return "the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)".into();
    }
    if let Some(p) = env("AWS_PROFILE") {
        return format!("profile {p:?} of ~/.aws/credentials and ~/.aws/config (AWS_PROFILE)");
    }
    if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        return "the web identity token in AWS_WEB_IDENTITY_TOKEN_FILE".into();
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    if home.join(".aws/credentials").exists() || home.join(".aws/config").exists() {
        return "the default profile of ~/.aws/credentials and ~/.aws/config".into();
    }
    "the instance's IAM role (no AWS_ACCESS_KEY_ID, AWS_PROFILE or ~/.aws/credentials here)".into()
}

/// A classified error for an SDK failure of `op` (`RunInstances`, ...).
pub fn classify<E, R>(op: &str, err: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(s) = err {
        let e = s.err();
        let code = e.code().unwrap_or("Unknown");
        let message = e.message().unwrap_or("");
        let mut class = class_of_code(code);
        // EC2 is eventually consistent: a new instance profile, security group or
        // instance takes seconds to be seen everywhere. Retry, don't give up.
        let lower = message.to_ascii_lowercase();
        if (code == "InvalidParameterValue" && lower.contains("instance profile"))
            || matches!(code, "InvalidInstanceID.NotFound" | "InvalidGroup.NotFound")
        {
            class = ErrorClass::Transient;
        }
        let mut text = format!("{op}: {code}: {message}");
        if class == ErrorClass::Auth {
            text.push_str(&format!(" (credentials from {})", credentials_source()));
        }
        return ProviderError::new(class, text);
    }
    let detail = DisplayErrorContext(err).to_string();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("credential") || lower.contains("no identity") || lower.contains("identity resolver") {
        return ProviderError::new(ErrorClass::Auth, format!("{op}: no usable AWS credentials from {}: {detail}", credentials_source()));
    }
    ProviderError::new(ErrorClass::Transient, format!("{op}: {detail}"))
}

/// The AWS error code of a failure, when the service answered with one.
pub fn code_of<E, R>(err: &SdkError<E, R>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        assert_eq!(class_of_code("InsufficientInstanceCapacity"), ErrorClass::Capacity);
        assert_eq!(class_of_code("Unsupported"), ErrorClass::Capacity);
        assert_eq!(class_of_code("VcpuLimitExceeded"), ErrorClass::Quota);
        assert_eq!(class_of_code("InstanceLimitExceeded"), ErrorClass::Quota);
        assert_eq!(class_of_code("RequestLimitExceeded"), ErrorClass::Throttled);
        assert_eq!(class_of_code("AuthFailure"), ErrorClass::Auth);
        assert_eq!(class_of_code("InvalidAMIID.NotFound"), ErrorClass::InvalidConfig);
        assert_eq!(class_of_code("IdempotentParameterMismatch"), ErrorClass::InvalidConfig);
        assert_eq!(class_of_code("InternalError"), ErrorClass::Transient);
        assert_eq!(class_of_code("SomethingNew"), ErrorClass::Other);
    }
}
