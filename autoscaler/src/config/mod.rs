//! Ray's cluster YAML, typed once at the edge. A file Ray 2.60 accepts loads here
//! unchanged:
//!
//! - `yaml`: the text becomes a tree with positions (built by `compose`), read as
//!   PyYAML's `safe_load` reads it (libyaml's grammar, YAML 1.1 types from `scalar`,
//!   anchors, merges).
//! - `prepare`: Ray's `prepare_config`: the provider's defaults (`defaults`) fill
//!   the keys the file leaves out, `local` clusters get their one node type
//!   (`local`), legacy fields are converted or dropped.
//! - `build`: every value typed and checked against Ray's schema (`schema`) and
//!   `validate_config`, with the setup commands merged and per-type worker limits
//!   filled.
//!
//! Every fault is reported at once with its file, line, column and YAML path
//! (`reader`); what Ray would silently change or ignore comes back as warnings.

mod build;
mod compose;
mod defaults;
pub mod instance_types;
mod local;
mod prepare;
mod reader;
pub mod scalar;
mod schema;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use ray_common::ResourceSet;

pub use local::LOCAL_NODE_TYPE;
pub use prepare::{LEGACY_HEAD_TYPE, LEGACY_WORKER_TYPE};
pub use reader::{ConfigError, ConfigErrors, ConfigWarning, to_json};
pub use schema::{AUTH_KEYS, LEGACY_TOP_LEVEL_KEYS, NODE_TYPE_KEYS, PROVIDER_TYPES, TOP_LEVEL_KEYS};

/// Keys of `docker`.
pub fn docker_keys() -> Vec<&'static str> {
    schema::names(schema::DOCKER_KEYS)
}

/// Keys of a node type's `docker`.
pub fn node_docker_keys() -> Vec<&'static str> {
    schema::names(schema::NODE_DOCKER_KEYS)
}

/// The `provider` keys Ray's schema gives a type to (others pass through).
pub fn provider_keys() -> Vec<&'static str> {
    schema::names(schema::PROVIDER_KEYS)
}

/// SSH settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// `ssh_user`.
    pub ssh_user: Option<String>,
    /// `ssh_private_key`.
    pub ssh_private_key: Option<String>,
    /// `ssh_public_key`.
    pub ssh_public_key: Option<String>,
    /// `ssh_proxy_command`.
    pub ssh_proxy_command: Option<String>,
    /// `ssh_proxy_use_node_id`.
    pub ssh_proxy_use_node_id: bool,
}

/// One entry of `available_node_types`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTypeConfig {
    /// The type's name.
    pub name: String,
    /// Provider-specific instance settings.
    pub node_config: serde_json::Value,
    /// What one node of this type offers.
    pub resources: ResourceSet,
    /// `resources` as written, zeros included (`{CPU: 0}` says "no CPUs", where
    /// `{}` leaves them to detection): what a launcher tells `ray start`.
    pub declared_resources: BTreeMap<String, f64>,
    /// Nodes kept up at all times.
    pub min_workers: u32,
    /// Most nodes of this type.
    pub max_workers: u32,
    /// Per-type idle timeout, overriding `idle_timeout_minutes`.
    pub idle_timeout_s: Option<f64>,
    /// Preference when choices tie (higher first).
    pub priority: i64,
    /// Hourly price of one node of this type (`price`, finite, >= 0). The scheduler
    /// picks the cheapest way to place demand; without a price, a type's cost is
    /// proportional to its capacity. Ray's own schema has no such key.
    pub price: Option<f64>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Overrides the global `initialization_commands`.
    pub initialization_commands: Option<Vec<String>>,
    /// Overrides the merged worker setup commands.
    pub worker_setup_commands: Option<Vec<String>>,
    /// Per-type docker settings.
    pub docker: Option<serde_json::Value>,
}

/// A cluster config, defaults filled and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `cluster_name`.
    pub cluster_name: String,
    /// Most worker nodes (the head not counted).
    pub max_workers: u32,
    /// How fast to grow: launches in flight per type up to `max(5, speed x running)`.
    pub upscaling_speed: f64,
    /// Idle time before a worker is drained and terminated.
    pub idle_timeout_minutes: f64,
    /// The `provider` section (free-form; `type` is checked).
    pub provider: serde_json::Value,
    /// `provider.type`.
    pub provider_type: String,
    /// `auth`.
    pub auth: AuthConfig,
    /// `docker`, checked; `None` when absent or empty (docker off).
    pub docker: Option<serde_json::Value>,
    /// Node types in file order.
    pub node_types: Vec<NodeTypeConfig>,
    /// `head_node_type`.
    pub head_node_type: String,
    /// `file_mounts`: remote path -> local path.
    pub file_mounts: BTreeMap<String, String>,
    /// `cluster_synced_files`.
    pub cluster_synced_files: Vec<String>,
    /// `file_mounts_sync_continuously`.
    pub file_mounts_sync_continuously: bool,
    /// `rsync_exclude`.
    pub rsync_exclude: Vec<String>,
    /// `rsync_filter`.
    pub rsync_filter: Vec<String>,
    /// `metadata` (Ray does not read it).
    pub metadata: Option<serde_json::Value>,
    /// `initialization_commands`.
    pub initialization_commands: Vec<String>,
    /// `setup_commands` (as given; already merged into the two below).
    pub setup_commands: Vec<String>,
    /// `setup_commands` + `head_setup_commands`.
    pub head_setup_commands: Vec<String>,
    /// `setup_commands` + `worker_setup_commands`.
    pub worker_setup_commands: Vec<String>,
    /// `head_start_ray_commands`.
    pub head_start_ray_commands: Vec<String>,
    /// `worker_start_ray_commands`.
    pub worker_start_ray_commands: Vec<String>,
    /// `no_restart`.
    pub no_restart: bool,
}

/// A loaded config and what Ray would have warned about while loading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The config.
    pub config: ClusterConfig,
    /// Things Ray accepts but changes or ignores (a dropped empty `head_node`, a
    /// `min_workers` capped to the number of `worker_ips`...), for the CLI to show.
    pub warnings: Vec<ConfigWarning>,
}

impl ClusterConfig {
    /// Reads, fills and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::load_with_warnings(path).map(|l| l.config)
    }

    /// Like [`ClusterConfig::load`], and also returns the warnings.
    pub fn load_with_warnings(path: &Path) -> Result<Loaded, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        Self::parse_with_warnings(&file, &text)
    }

    /// Parses, fills and validates config text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigErrors> {
        Self::parse_with_warnings(file, text).map(|l| l.config)
    }

    /// Like [`ClusterConfig::parse`], and also returns the warnings.
    pub fn parse_with_warnings(file: &str, text: &str) -> Result<Loaded, ConfigErrors> {
        let one = |line, column, message: String| {
            ConfigErrors(vec![ConfigError { file: file.to_string(), line, column, path: String::new(), message }])
        };
        let (root, yaml_warnings) = match yaml::parse_with_warnings(text) {
            Ok((Some(root), w)) => (root, w),
            Ok((None, _)) => return Err(one(0, 0, "the file is empty; expected a mapping with at least provider: {type: ...}".into())),
            Err(faults) => {
                return Err(ConfigErrors(
                    faults
                        .into_iter()
                        .map(|f| ConfigError {
                            file: file.to_string(),
                            line: f.mark.line,
                            column: f.mark.column,
                            path: f.path,
                            message: match f.kind {
                                yaml::YamlErrorKind::Syntax => format!("not valid YAML: {}", f.message),
                                yaml::YamlErrorKind::Document => f.message,
                            },
                        })
                        .collect(),
                ));
            }
        };
        let mut r = reader::Reader::new(file);
        for w in yaml_warnings {
            r.warn_at(w.mark, &w.path, w.message);
        }
        let config = prepare::merge(&mut r, &root).and_then(|m| build::build(&mut r, m));
        match config {
            Some(config) if r.errors.is_empty() => Ok(Loaded { config, warnings: r.warnings }),
            _ => {
                r.errors.sort_by_key(|e| (e.line, e.column));
                Err(ConfigErrors(r.errors))
            }
        }
    }

    /// A node type by name.
    pub fn node_type(&self, name: &str) -> Option<&NodeTypeConfig> {
        self.node_types.iter().find(|t| t.name == name)
    }

    /// Idle timeout of a type, in milliseconds (`u64::MAX` for `.inf`).
    pub fn idle_timeout_ms(&self, node_type: &str) -> u64 {
        let secs = self.node_type(node_type).and_then(|t| t.idle_timeout_s).unwrap_or(self.idle_timeout_minutes * 60.0);
        (secs * 1000.0).max(0.0) as u64
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ray;
#[cfg(test)]
mod tests_yaml;
