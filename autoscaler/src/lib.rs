//! The autoscaler: reads demand from the GCS and grows or shrinks the cluster
//! through a node provider. This crate also formats `ray status`.

pub mod config;
pub mod instance;
pub mod reconciler;
pub mod scheduler;
pub mod status;
