//! The keys a cluster config may have, as Ray 2.60's `ray-schema.json` lists them
//! (plus this project's `price`), the legacy keys Ray still tolerates, and the
//! provider types Ray knows.

/// Every top-level key of Ray's schema.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "cluster_name",
    "max_workers",
    "upscaling_speed",
    "idle_timeout_minutes",
    "provider",
    "auth",
    "docker",
    "head_node_type",
    "file_mounts",
    "cluster_synced_files",
    "file_mounts_sync_continuously",
    "rsync_exclude",
    "rsync_filter",
    "metadata",
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
    "no_restart",
    "available_node_types",
];

/// Top-level keys of older configs that Ray still reads before it checks the
/// schema: empty `head_node`/`worker_nodes` are dropped, `min_workers` is taken out
/// (the `local` provider uses it for its one node type).
pub const LEGACY_TOP_LEVEL_KEYS: &[&str] = &["head_node", "worker_nodes", "min_workers"];

/// Keys of one node type.
pub const NODE_TYPE_KEYS: &[&str] = &[
    "node_config",
    "resources",
    "min_workers",
    "max_workers",
    "idle_timeout_s",
    "priority",
    "price",
    "labels",
    "initialization_commands",
    "worker_setup_commands",
    "docker",
];

/// Keys of `auth`.
pub const AUTH_KEYS: &[&str] =
    &["ssh_user", "ssh_public_key", "ssh_private_key", "ssh_proxy_command", "ssh_proxy_use_node_id"];

/// The type Ray's schema gives a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A string.
    String,
    /// A string or null.
    StringOrNull,
    /// `true` or `false`.
    Boolean,
    /// A list (of anything).
    Array,
    /// A mapping (of anything).
    Object,
}

impl Type {
    /// How messages name it.
    pub fn expected(self) -> &'static str {
        match self {
            Type::String => "a string",
            Type::StringOrNull => "a string or null",
            Type::Boolean => "a boolean (true or false)",
            Type::Array => "a list",
            Type::Object => "a mapping",
        }
    }
}

/// Keys of `docker`, with their types.
pub const DOCKER_KEYS: &[(&str, Type)] = &[
    ("image", Type::String),
    ("container_name", Type::String),
    ("pull_before_run", Type::Boolean),
    ("run_options", Type::Array),
    ("head_image", Type::String),
    ("head_run_options", Type::Array),
    ("worker_image", Type::String),
    ("worker_run_options", Type::Array),
    ("disable_automatic_runtime_detection", Type::Boolean),
    ("disable_shm_size_detection", Type::Boolean),
    ("use_podman", Type::Boolean),
];

/// Keys of a node type's `docker`, with their types.
pub const NODE_DOCKER_KEYS: &[(&str, Type)] =
    &[("pull_before_run", Type::Boolean), ("worker_image", Type::String), ("worker_run_options", Type::Array)];

/// The `provider` keys Ray's schema types (others are allowed and passed through
/// to the provider untouched).
pub const PROVIDER_KEYS: &[(&str, Type)] = &[
    ("type", Type::String),
    ("region", Type::String),
    ("module", Type::String),
    ("head_ip", Type::String),
    ("worker_ips", Type::Array),
    ("use_internal_ips", Type::Boolean),
    ("namespace", Type::String),
    ("location", Type::String),
    ("resource_group", Type::String),
    ("tags", Type::Object),
    ("subscription_id", Type::String),
    ("msi_identity_id", Type::String),
    ("msi_identity_principal_id", Type::String),
    ("subnet_id", Type::String),
    ("autoscaler_service_account", Type::Object),
    ("autoscaler_role", Type::Object),
    ("autoscaler_role_binding", Type::Object),
    ("cache_stopped_nodes", Type::Boolean),
    ("availability_zone", Type::String),
    ("project_id", Type::StringOrNull),
    ("security_group", Type::Object),
    ("disable_node_updaters", Type::Boolean),
    ("gcp_credentials", Type::Object),
    ("cloudwatch", Type::Object),
];

/// Keys of `provider.security_group` (no others allowed).
pub const SECURITY_GROUP_KEYS: &[(&str, Type)] = &[("GroupName", Type::String), ("IpPermissions", Type::Array)];

/// Keys of `provider.gcp_credentials` (no others allowed; `type` is required).
pub const GCP_CREDENTIALS_KEYS: &[(&str, Type)] = &[("type", Type::String), ("credentials", Type::String)];

/// Every provider type Ray 2.60 knows (`_NODE_PROVIDERS` in Ray's `providers.py`).
pub const PROVIDER_TYPES: &[&str] = &[
    "aws",
    "gcp",
    "azure",
    "vsphere",
    "aliyun",
    "local",
    "readonly",
    "spark",
    "kuberay",
    "external",
    "fake_multinode",
    "fake_multinode_docker",
];

/// The names of a typed key table.
pub fn names(keys: &[(&'static str, Type)]) -> Vec<&'static str> {
    keys.iter().map(|(k, _)| *k).collect()
}
