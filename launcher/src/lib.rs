//! The cluster launcher: what `ray up`, `ray down`, `ray exec`, `ray submit`,
//! `ray attach` and `ray rsync-up/down` do with a cluster config and its node
//! provider, and the node updater the autoscaler uses to set up the workers it
//! launches.
//!
//! - [`runner`]: running commands and copying files on a node (SSH with the
//!   system `ssh`/`rsync`, or this machine for the local-process provider).
//! - [`updater`]: bringing one node up to date (file mounts, setup and start
//!   commands) with the status tags Ray shows.
//! - [`node_plan`], [`hash`]: what a node of a type runs, and the launch and
//!   runtime hashes that say whether it already does.
//! - [`bootstrap`]: the config the head's autoscaler runs with.
//! - [`up`], [`down`], [`remote`], [`dry_run`]: the commands.
//! - [`worker_setup`]: the autoscaler's `NodeSetup` over the updater.

pub mod bootstrap;
pub mod cluster;
pub mod down;
pub mod dry_run;
pub mod hash;
pub mod node_plan;
pub mod remote;
pub mod runner;
pub mod up;
pub mod updater;
pub mod worker_setup;

pub use cluster::{Cluster, Head, LaunchError, Progress};
