//! Building blocks shared by every process of the cluster: identifiers, resource
//! quantities, the cluster token and TLS settings, RPC server and client plumbing,
//! session folders, tunable settings and the raylet's command line.

pub mod auth;
pub mod config;
pub mod gcs_client;
pub mod gcs_reconnect;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod raylet_command;
pub mod resources;
pub mod rpc;
pub mod session;
pub mod time;
pub mod tls;

pub use ids::{JobId, NodeId, ObjectId, TaskId, WorkerId};
pub use resources::{FixedPoint, ResourceSet};
