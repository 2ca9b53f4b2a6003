//! The autoscaler: reads demand from the GCS and grows or shrinks the cluster
//! through a node provider. This crate also formats `ray status`.

pub mod status;
