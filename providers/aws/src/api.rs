//! The SDK clients, with a client-side rate limit (`governor`) in front of every
//! call and jittered retries of throttled or transient failures. The SDK's own
//! retries are off, so what is retried, how often and why is decided (and
//! logged) in one place.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ray_providers::{ErrorClass, ProviderError};

use crate::settings::Settings;

/// Most tries of one call that keeps being throttled or failing transiently.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry waits up to this long; the ceiling doubles per try.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait between tries.
const RETRY_CAP: Duration = Duration::from_secs(5);

/// EC2 and IAM clients of one region.
pub struct Api {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// IAM (bootstrap only).
    pub iam: aws_sdk_iam::Client,
    limiter: DefaultDirectRateLimiter,
}

impl Api {
    /// Clients for the settings' region, credentials from the SDK's default chain
    /// (environment, profiles, SSO, instance role), endpoint from
    /// `provider.endpoint_url` or `AWS_ENDPOINT_URL` when set.
    pub async fn connect(s: &Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(s.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(u) = &s.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        let conf = loader.load().await;
        let rps = NonZeroU32::new(s.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_second(rps).allow_burst(rps));
        Self { ec2: aws_sdk_ec2::Client::new(&conf), iam: aws_sdk_iam::Client::new(&conf), limiter }
    }

    /// Runs one API call (`f` makes a fresh request each try) under the rate
    /// limit; throttled and transient failures are retried with full jitter.
    pub async fn call<T, F, Fut>(&self, op: &str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            self.limiter.until_ready().await;
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient) && attempt < MAX_ATTEMPTS => {
                    let wait = ray_providers::helpers::backoff(attempt, RETRY_BASE, RETRY_CAP);
                    tracing::warn!(op, attempt, wait_ms = wait.as_millis() as u64, error = %e, "AWS call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Api {
    /// [`Api::call`] for one SDK request: its failure is classified as `op`'s.
    pub async fn run<T, E, R, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.call(op, || {
            let fut = f();
            async move { fut.await.map_err(|e| crate::errors::classify(op, &e)) }
        })
        .await
    }
}
