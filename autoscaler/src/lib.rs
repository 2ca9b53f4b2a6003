//! The autoscaler: reads demand from the GCS and grows or shrinks the cluster
//! through a node provider. (`ray status` text is formatted by `ray-status`.)
//!
//! The loop ([`Autoscaler`]) is split as in Ray's autoscaler v2: the instance
//! manager ([`instance::manager`]) owns the persisted instance table, the
//! [`reconciler`] compares what is wanted with what is there and returns actions,
//! the [`actuator`] carries them out against the provider and the [`cluster`], and
//! the [`reporter`] publishes what `ray status` shows.

pub mod actuator;
pub mod autoscaler;
pub mod backoff;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod instance;
pub mod metrics;
pub mod plan;
pub mod reconciler;
pub mod reporter;
pub mod scheduler;
pub mod setup;
#[cfg(test)]
mod testing;

pub use autoscaler::{Autoscaler, Reconfigure};
