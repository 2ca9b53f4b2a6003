//! The google-cloud-rust clients of one project, with a client-side rate limit
//! (`governor`) in front of every call and jittered retries of throttled or
//! transient failures. The SDK's own retries are off, so what is retried, how
//! often and why is decided (and logged) in one place. Zonal and global
//! operations are awaited with `operations.wait`, never assumed done.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use google_cloud_compute_v1::client::{Firewalls, GlobalOperations, Instances, Networks, Projects, Subnetworks, ZoneOperations};
use google_cloud_compute_v1::model::Operation;
use google_cloud_compute_v1::model::operation::Status as OpStatus;
use google_cloud_gax::retry_policy::NeverRetry;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ray_providers::{ErrorClass, ProviderError};

use crate::credentials;
use crate::errors::{classify, classify_operation};
use crate::settings::Settings;

/// Most tries of one call that keeps being throttled or failing transiently.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry waits up to this long; the ceiling doubles per try.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait between tries.
const RETRY_CAP: Duration = Duration::from_secs(5);
/// Longest wait for one operation (each `wait` call returns after at most 2 min).
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(600);

/// The clients.
pub struct Api {
    /// Compute Engine instances.
    pub instances: Instances,
    /// Zonal operations.
    pub zone_ops: ZoneOperations,
    /// Global operations (firewalls, project metadata).
    pub global_ops: GlobalOperations,
    /// Networks.
    pub networks: Networks,
    /// Subnetworks.
    pub subnetworks: Subnetworks,
    /// Firewall rules.
    pub firewalls: Firewalls,
    /// The project (common instance metadata).
    pub projects: Projects,
    /// IAM service accounts (bootstrap only).
    pub iam: google_cloud_iam_admin_v1::client::Iam,
    /// The project's IAM policy (bootstrap only).
    pub crm: google_cloud_resourcemanager_v3::client::Projects,
    limiter: DefaultDirectRateLimiter,
    /// Where the credentials came from, for error messages.
    pub credentials_source: String,
}

macro_rules! client {
    ($t:ty, $creds:expr, $endpoint:expr) => {{
        let mut b = <$t>::builder().with_credentials($creds.clone()).with_retry_policy(NeverRetry);
        if let Some(e) = $endpoint {
            b = b.with_endpoint(e.clone());
        }
        b.build().await.map_err(|e| ProviderError::new(ErrorClass::InvalidConfig, format!("cannot make a {} client: {e}", stringify!($t))))?
    }};
}

impl Api {
    /// Clients for the settings' project, credentials from `provider.gcp_credentials`
    /// or application default credentials, endpoint from `provider.endpoint_url` (or
    /// `RAY_GCP_ENDPOINT_URL`) when set.
    pub async fn connect(s: &Settings) -> Result<Self, ProviderError> {
        let (creds, credentials_source) = credentials::load(s)?;
        let ep = s.endpoint_url.as_ref();
        let rps = NonZeroU32::new(s.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            instances: client!(Instances, creds, ep),
            zone_ops: client!(ZoneOperations, creds, ep),
            global_ops: client!(GlobalOperations, creds, ep),
            networks: client!(Networks, creds, ep),
            subnetworks: client!(Subnetworks, creds, ep),
            firewalls: client!(Firewalls, creds, ep),
            projects: client!(Projects, creds, ep),
            iam: client!(google_cloud_iam_admin_v1::client::Iam, creds, ep),
            crm: client!(google_cloud_resourcemanager_v3::client::Projects, creds, ep),
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(rps)),
            credentials_source,
        })
    }

    /// Runs one API call (`f` makes a fresh request each try) under the rate
    /// limit; throttled and transient failures are retried with full jitter.
    pub async fn call<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, google_cloud_gax::error::Error>>,
    {
        let mut attempt = 0;
        loop {
            self.limiter.until_ready().await;
            attempt += 1;
            match f().await.map_err(|e| classify(op, &e, &self.credentials_source)) {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient) && attempt < MAX_ATTEMPTS => {
                    let wait = ray_providers::helpers::backoff(attempt, RETRY_BASE, RETRY_CAP);
                    tracing::warn!(op, attempt, wait_ms = wait.as_millis() as u64, error = %e, "GCP call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a zonal (`zone` set) or global operation is done; its error,
    /// if any, classified.
    pub async fn wait(&self, project: &str, zone: Option<&str>, op: Operation, what: &'static str) -> Result<Operation, ProviderError> {
        let deadline = tokio::time::Instant::now() + OPERATION_DEADLINE;
        let mut op = op;
        while op.status != Some(OpStatus::Done) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::new(
                    ErrorClass::Transient,
                    format!("{what}: operation {} not done after {} s", op.name.as_deref().unwrap_or("?"), OPERATION_DEADLINE.as_secs()),
                ));
            }
            let name = op.name.clone().unwrap_or_default();
            op = match zone {
                Some(z) => {
                    self.call("zoneOperations.wait", || self.zone_ops.wait().set_project(project).set_zone(z).set_operation(&name).send()).await?
                }
                None => self.call("globalOperations.wait", || self.global_ops.wait().set_project(project).set_operation(&name).send()).await?,
            };
        }
        match classify_operation(what, &op, &self.credentials_source) {
            Some(e) => Err(e),
            None => Ok(op),
        }
    }
}
