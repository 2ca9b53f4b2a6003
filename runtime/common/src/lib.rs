//! Building blocks shared by every process of the cluster: identifiers, resource
//! quantities, the cluster token and TLS settings, RPC server and client plumbing,
//! session folders and tunable settings.

pub mod auth;
pub mod config;
pub mod gcs_client;
pub mod ids;
pub mod logging;
pub mod process;
pub mod resources;
pub mod rpc;
pub mod session;
pub mod time;
pub mod tls;

pub use ids::NodeId;
pub use resources::{FixedPoint, ResourceSet};
