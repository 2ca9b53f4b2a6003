//! The cluster's wire protocol, generated from `proto/*.proto` at build time.

#![allow(clippy::all, missing_docs)]

/// Messages and services of package `ray.rpc`.
pub mod rpc {
    tonic::include_proto!("ray.rpc");

    /// Messages and services of package `ray.rpc.autoscaler`.
    pub mod autoscaler {
        tonic::include_proto!("ray.rpc.autoscaler");
    }
}

pub use rpc::*;
