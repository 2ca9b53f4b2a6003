//! Ray's cluster YAML, typed once at the edge: parsed with positions, defaults
//! filled the way Ray fills them (a shallow merge of the provider's defaults, then
//! per-type min/max and merged setup commands), and validated so that any fault is
//! reported with its file, line, YAML path and what was expected.

pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use ray_common::{FixedPoint, ResourceSet};

pub use yaml::{ConfigError, ConfigErrors};
use yaml::{Reader, child_path, to_json};

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

/// Keys of `docker`.
pub const DOCKER_KEYS: &[&str] = &[
    "image",
    "container_name",
    "pull_before_run",
    "run_options",
    "head_image",
    "head_run_options",
    "worker_image",
    "worker_run_options",
    "disable_automatic_runtime_detection",
    "disable_shm_size_detection",
    "use_podman",
];

/// Keys of a node type's `docker`.
pub const NODE_DOCKER_KEYS: &[&str] = &["pull_before_run", "worker_image", "worker_run_options"];

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
    /// `docker` (free-form after key checks).
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
    /// `metadata` (ignored).
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

impl ClusterConfig {
    /// Reads, fills and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
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
        Self::parse(&file, &text)
    }

    /// Parses, fills and validates config text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigErrors> {
        let opts = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let root = marked_yaml::parse_yaml_with_options(0, text, opts).map_err(|e| {
            let (line, column) = load_error_position(&e);
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line,
                column,
                path: String::new(),
                message: format!("not valid YAML: {}", load_error_message(&e)),
            }])
        })?;
        let mut r = Reader::new(file);
        let cfg = build(&mut r, &root);
        match cfg {
            Some(c) if r.errors.is_empty() => Ok(c),
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

    /// Idle timeout of a type, in milliseconds.
    pub fn idle_timeout_ms(&self, node_type: &str) -> u64 {
        let secs = self
            .node_type(node_type)
            .and_then(|t| t.idle_timeout_s)
            .unwrap_or(self.idle_timeout_minutes * 60.0);
        (secs * 1000.0).max(0.0) as u64
    }
}

fn load_error_position(e: &marked_yaml::LoadError) -> (usize, usize) {
    use marked_yaml::LoadError::*;
    #[allow(deprecated)]
    let m = match e {
        TopLevelMustBeMapping(m) | TopLevelMustBeSequence(m) | UnexpectedAnchor(m) | MappingKeyMustBeScalar(m)
        | UnexpectedTag(m) | ScanError(m, _) => Some(*m),
        DuplicateKey(d) => d.key.span().start().copied(),
    };
    m.map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

fn load_error_message(e: &marked_yaml::LoadError) -> String {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(_) => "the top level must be a mapping of keys such as cluster_name, provider, ...".into(),
        UnexpectedAnchor(_) => "YAML anchors and aliases are not supported".into(),
        MappingKeyMustBeScalar(_) => "mapping keys must be plain strings".into(),
        UnexpectedTag(_) => "YAML tags (!!...) are not supported".into(),
        ScanError(_, se) => se.to_string(),
        DuplicateKey(d) => format!("duplicate key {:?}", d.key.as_str()),
        other => other.to_string(),
    }
}

/// Provider defaults for keys the user left out (Ray merges its defaults file at the
/// top level only).
struct Defaults {
    max_workers: u32,
    idle_timeout_minutes: f64,
    node_types: Vec<NodeTypeConfig>,
    head_node_type: &'static str,
}

fn default_type(name: &str, resources: &[(&str, i64)], min: u32, max: u32) -> NodeTypeConfig {
    NodeTypeConfig {
        name: name.to_string(),
        node_config: serde_json::json!({}),
        resources: resources.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_int(*v))).collect(),
        min_workers: min,
        max_workers: max,
        idle_timeout_s: None,
        priority: 0,
        price: None,
        labels: BTreeMap::new(),
        initialization_commands: None,
        worker_setup_commands: None,
        docker: None,
    }
}

fn defaults_for(provider_type: &str) -> Defaults {
    match provider_type {
        "fake_multinode" => Defaults {
            max_workers: 8,
            idle_timeout_minutes: 5.0,
            node_types: vec![
                default_type("ray.head.default", &[], 0, 0),
                default_type("ray.worker.cpu", &[("CPU", 1)], 0, 4),
                default_type("ray.worker.gpu", &[("CPU", 4), ("GPU", 1)], 0, 2),
            ],
            head_node_type: "ray.head.default",
        },
        _ => Defaults {
            max_workers: 2,
            idle_timeout_minutes: 5.0,
            node_types: vec![default_type("ray.head.default", &[], 0, 0), default_type("ray.worker.default", &[], 0, 2)],
            head_node_type: "ray.head.default",
        },
    }
}

fn get<'n>(map: &'n MarkedMappingNode, key: &str) -> Option<&'n Node> {
    map.get_node(key)
}

fn build(r: &mut Reader, root: &Node) -> Option<ClusterConfig> {
    let top = r.mapping(root, "")?;
    r.check_keys(top, "", TOP_LEVEL_KEYS);

    // provider first: its type picks the defaults.
    let provider_node = r.required(top, "", "provider", "a mapping with at least `type`, e.g. {type: fake_multinode}");
    let mut provider = serde_json::json!({});
    let mut provider_type = String::new();
    if let Some(p) = provider_node
        && let Some(m) = r.mapping(p, "provider")
    {
        provider = to_json(p);
        if let Some(t) = r.required(m, "provider", "type", "a provider name such as fake_multinode, local, aws or gcp") {
            provider_type = r.string(t, "provider.type").unwrap_or_default();
        }
    }
    let d = defaults_for(&provider_type);

    let cluster_name = match get(top, "cluster_name") {
        Some(n) => r.string(n, "cluster_name").unwrap_or_default(),
        None => "default".to_string(),
    };
    let max_workers_node = get(top, "max_workers");
    // An invalid global max is reported once; the default stands in so that the
    // checks that depend on it do not report follow-on faults.
    let (max_workers, max_workers_valid) = match max_workers_node {
        Some(n) => match r.integer(n, "max_workers", 0) {
            Some(v) => (v.min(i64::from(u32::MAX - 1)) as u32, true),
            None => (d.max_workers, false),
        },
        None => (d.max_workers, true),
    };
    let upscaling_speed = match get(top, "upscaling_speed") {
        Some(n) => r.number(n, "upscaling_speed", 0.0).unwrap_or(1.0),
        None => 1.0,
    };
    let idle_timeout_minutes = match get(top, "idle_timeout_minutes") {
        Some(n) => r.number(n, "idle_timeout_minutes", 0.0).unwrap_or(d.idle_timeout_minutes),
        None => d.idle_timeout_minutes,
    };

    let auth = match get(top, "auth") {
        Some(n) => auth(r, n),
        None => AuthConfig::default(),
    };
    let docker = get(top, "docker").and_then(|n| {
        let m = r.mapping(n, "docker")?;
        r.check_keys(m, "docker", DOCKER_KEYS);
        Some(to_json(n))
    });
    let list = |r: &mut Reader, key: &str| get(top, key).and_then(|n| r.string_list(n, key)).unwrap_or_default();
    let setup_commands = list(r, "setup_commands");
    let head_setup = list(r, "head_setup_commands");
    let worker_setup = list(r, "worker_setup_commands");

    let (node_types, head_node_type) = match get(top, "available_node_types") {
        Some(n) => {
            let types = node_types(r, n, max_workers);
            let head = match get(top, "head_node_type") {
                Some(h) => {
                    let name = r.string(h, "head_node_type").unwrap_or_default();
                    if !types.is_empty() && !types.iter().any(|t| t.name == name) {
                        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
                        let hint = yaml::did_you_mean(&name, &names)
                            .map(|s| format!("; did you mean {s:?}?"))
                            .unwrap_or_default();
                        r.error(h, "head_node_type", format!(
                            "{name:?} is not one of available_node_types ({}){hint}",
                            names.join(", ")
                        ));
                    }
                    name
                }
                None => {
                    let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
                    r.error_at(top.span(), "head_node_type", format!(
                        "missing; expected the name of the head's node type, one of available_node_types ({})",
                        names.join(", ")
                    ));
                    String::new()
                }
            };
            (types, head)
        }
        None => {
            let head = match get(top, "head_node_type") {
                Some(h) => r.string(h, "head_node_type").unwrap_or_default(),
                None => d.head_node_type.to_string(),
            };
            (d.node_types, head)
        }
    };

    let mut node_types = node_types;
    // Ray: the head type's max_workers defaults to 0; others default to the global max.
    for t in node_types.iter_mut() {
        if t.name == head_node_type && t.max_workers == u32::MAX {
            t.max_workers = 0;
        } else if t.max_workers == u32::MAX {
            t.max_workers = max_workers;
        }
    }
    for t in &node_types {
        if max_workers_valid && t.min_workers > t.max_workers {
            // Position: the min_workers line, found again from the tree.
            let span = get(top, "available_node_types")
                .and_then(|n| n.as_mapping())
                .and_then(|m| m.get_node(&t.name))
                .and_then(|n| n.as_mapping())
                .and_then(|m| m.get_node("min_workers"))
                .map(|n| *n.span());
            let path = child_path(&child_path("available_node_types", &t.name), "min_workers");
            let msg = format!("min_workers ({}) is larger than max_workers ({})", t.min_workers, t.max_workers);
            match span {
                Some(s) => r.error_at(&s, &path, msg),
                None => r.error_at(top.span(), &path, msg),
            }
        }
    }
    let min_sum: u64 = node_types.iter().filter(|t| t.name != head_node_type).map(|t| u64::from(t.min_workers)).sum();
    if max_workers_valid && min_sum > u64::from(max_workers) {
        let msg = format!(
            "the global max_workers ({max_workers}) is smaller than the sum of min_workers of the worker node types ({min_sum})"
        );
        match max_workers_node {
            Some(n) => r.error(n, "max_workers", msg),
            None => r.error_at(top.span(), "max_workers", msg),
        }
    }

    let file_mounts = get(top, "file_mounts")
        .and_then(|n| r.string_map(n, "file_mounts"))
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let boolean = |r: &mut Reader, key: &str| get(top, key).and_then(|n| r.boolean(n, key)).unwrap_or(false);
    Some(ClusterConfig {
        cluster_name,
        max_workers,
        upscaling_speed,
        idle_timeout_minutes,
        provider,
        provider_type,
        auth,
        docker,
        node_types,
        head_node_type,
        file_mounts,
        cluster_synced_files: list(r, "cluster_synced_files"),
        file_mounts_sync_continuously: boolean(r, "file_mounts_sync_continuously"),
        rsync_exclude: list(r, "rsync_exclude"),
        rsync_filter: list(r, "rsync_filter"),
        metadata: get(top, "metadata").map(to_json),
        initialization_commands: list(r, "initialization_commands"),
        head_setup_commands: setup_commands.iter().chain(head_setup.iter()).cloned().collect(),
        worker_setup_commands: setup_commands.iter().chain(worker_setup.iter()).cloned().collect(),
        setup_commands,
        head_start_ray_commands: list(r, "head_start_ray_commands"),
        worker_start_ray_commands: list(r, "worker_start_ray_commands"),
        no_restart: boolean(r, "no_restart"),
    })
}

fn auth(r: &mut Reader, n: &Node) -> AuthConfig {
    let Some(m) = r.mapping(n, "auth") else { return AuthConfig::default() };
    r.check_keys(m, "auth", AUTH_KEYS);
    let s = |r: &mut Reader, k: &str| get(m, k).and_then(|n| r.string(n, &child_path("auth", k)));
    let a = AuthConfig {
        ssh_user: s(r, "ssh_user"),
        ssh_private_key: s(r, "ssh_private_key"),
        ssh_public_key: s(r, "ssh_public_key"),
        ssh_proxy_command: s(r, "ssh_proxy_command"),
        ssh_proxy_use_node_id: get(m, "ssh_proxy_use_node_id")
            .and_then(|n| r.boolean(n, "auth.ssh_proxy_use_node_id"))
            .unwrap_or(false),
    };
    if a.ssh_proxy_use_node_id && a.ssh_proxy_command.is_none() {
        r.error(n, "auth.ssh_proxy_command", "missing; required when ssh_proxy_use_node_id is true");
    }
    a
}

fn node_types(r: &mut Reader, n: &Node, _global_max: u32) -> Vec<NodeTypeConfig> {
    let Some(m) = r.mapping(n, "available_node_types") else { return Vec::new() };
    if m.is_empty() {
        r.error(n, "available_node_types", "expected at least one node type");
    }
    let mut out = Vec::new();
    for (name, body) in m.iter() {
        let path = child_path("available_node_types", name.as_str());
        let Some(tm) = r.mapping(body, &path) else { continue };
        r.check_keys(tm, &path, NODE_TYPE_KEYS);
        let node_config = match r.required(tm, &path, "node_config", "a mapping of provider settings (may be {})") {
            Some(nc) => {
                let _ = r.mapping(nc, &child_path(&path, "node_config"));
                to_json(nc)
            }
            None => serde_json::json!({}),
        };
        let mut resources = ResourceSet::new();
        if let Some(res) = r.required(tm, &path, "resources", "a mapping of resource name to whole number (may be {})") {
            let rp = child_path(&path, "resources");
            if let Some(rm) = r.mapping(res, &rp) {
                for (k, v) in rm.iter() {
                    let kp = child_path(&rp, k.as_str());
                    if let Some(q) = r.integer(v, &kp, 0) {
                        resources.set(k.as_str(), FixedPoint::from_int(q));
                    }
                }
            }
        }
        let int = |r: &mut Reader, k: &str| get(tm, k).and_then(|v| r.integer(v, &child_path(&path, k), 0));
        let min_workers = int(r, "min_workers").unwrap_or(0) as u32;
        let max_workers = int(r, "max_workers").map(|v| v.min(u32::MAX as i64 - 1) as u32).unwrap_or(u32::MAX);
        let idle_timeout_s = get(tm, "idle_timeout_s").and_then(|v| r.number(v, &child_path(&path, "idle_timeout_s"), 0.0));
        let priority = get(tm, "priority").and_then(|v| r.integer(v, &child_path(&path, "priority"), i64::MIN)).unwrap_or(0);
        let price = get(tm, "price").and_then(|v| r.number(v, &child_path(&path, "price"), 0.0));
        let labels = get(tm, "labels")
            .and_then(|v| r.string_map(v, &child_path(&path, "labels")))
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        let initialization_commands =
            get(tm, "initialization_commands").and_then(|v| r.string_list(v, &child_path(&path, "initialization_commands")));
        let worker_setup_commands =
            get(tm, "worker_setup_commands").and_then(|v| r.string_list(v, &child_path(&path, "worker_setup_commands")));
        let docker = get(tm, "docker").and_then(|v| {
            let dp = child_path(&path, "docker");
            let dm = r.mapping(v, &dp)?;
            r.check_keys(dm, &dp, NODE_DOCKER_KEYS);
            Some(to_json(v))
        });
        out.push(NodeTypeConfig {
            name: name.as_str().to_string(),
            node_config,
            resources,
            min_workers,
            max_workers,
            idle_timeout_s,
            priority,
            price,
            labels,
            initialization_commands,
            worker_setup_commands,
            docker,
        });
    }
    out
}

#[cfg(test)]
mod tests;
