//! Typing the merged top level into a [`ClusterConfig`] and checking it as Ray's
//! `validate_config` and schema do: every key's type, `head_node_type` among the
//! node types, the sum of `min_workers` within `max_workers`, docker's image and
//! container named together. Then Ray's fill-ins: merged setup commands
//! (`merge_setup_commands`) and per-type worker limits
//! (`fill_node_type_min_max_workers`).

use std::collections::BTreeMap;

use ray_common::{FixedPoint, ResourceSet};

use super::prepare::{Merged, check_typed_keys};
use super::reader::{Reader, child_path, did_you_mean, to_json};
use super::scalar::Resolved;
use super::schema::{AUTH_KEYS, DOCKER_KEYS, NODE_DOCKER_KEYS, NODE_TYPE_KEYS};
use super::yaml::{Mark, Node};
use super::{AuthConfig, ClusterConfig, NodeTypeConfig};

/// A node type as written, before Ray fills in its worker limits.
struct RawType {
    config: NodeTypeConfig,
    min_workers: Option<u32>,
    max_workers: Option<u32>,
    min_mark: Mark,
    mark: Mark,
    resources_given: bool,
}

/// Types and checks the merged config. `None` when a fault leaves nothing to build.
pub fn build(r: &mut Reader, m: Merged) -> Option<ClusterConfig> {
    let top = &m.top;
    let at = m.top_mark;
    let get = |k: &str| top.get(k);

    let cluster_name =
        r.required(top, at, "", "cluster_name", "a name for the cluster").and_then(|n| r.string(n, "cluster_name"));
    let max_workers_node = r.required(top, at, "", "max_workers", "the most worker nodes, e.g. max_workers: 2");
    // An invalid global max is reported once; checks that depend on it are skipped.
    let max_workers =
        max_workers_node.and_then(|n| r.integer(n, "max_workers", 0)).map(|v| v.min(i64::from(u32::MAX - 1)) as u32);
    let upscaling_speed =
        get("upscaling_speed").and_then(|n| r.number(n, "upscaling_speed", 0.0, false)).unwrap_or(1.0);
    let idle_timeout_minutes =
        get("idle_timeout_minutes").and_then(|n| r.number(n, "idle_timeout_minutes", 0.0, true)).unwrap_or(5.0);
    let auth = get("auth").map(|n| auth(r, n)).unwrap_or_default();
    let docker = get("docker").and_then(|n| docker(r, n));

    let list = |r: &mut Reader, key: &str| get(key).and_then(|n| r.string_list(n, key)).unwrap_or_default();
    let setup_commands = list(r, "setup_commands");
    let head_setup = list(r, "head_setup_commands");
    let worker_setup = list(r, "worker_setup_commands");
    let (head_setup_commands, worker_setup_commands) = if m.as_is {
        (head_setup, worker_setup)
    } else {
        (
            setup_commands.iter().chain(&head_setup).cloned().collect(),
            setup_commands.iter().chain(&worker_setup).cloned().collect(),
        )
    };

    let types_node = r.required(top, at, "", "available_node_types", "a mapping of node type name to its settings");
    // Ray's AWS launcher fills `resources` from the instance type before its schema
    // check; so does this loader (from its table).
    let aws = m.provider_type == "aws";
    let gcp = m.provider_type == "gcp";
    let raw = types_node.map(|n| node_types(r, n, aws)).unwrap_or_default();
    let names: Vec<&str> = raw.iter().map(|t| t.config.name.as_str()).collect();
    let head_node_type = match get("head_node_type") {
        Some(h) if !m.head_type_defaulted => {
            let name = r.string(h, "head_node_type").unwrap_or_default();
            if !raw.is_empty() && !name.is_empty() && !names.contains(&name.as_str()) {
                let hint = did_you_mean(&name, &names).map(|s| format!("; did you mean {s:?}?")).unwrap_or_default();
                r.error(
                    h,
                    "head_node_type",
                    format!("{name:?} is not one of available_node_types ({}){hint}", names.join(", ")),
                );
            }
            name
        }
        Some(h) => {
            // The provider's default name: fine if the file's node types have it.
            let name = h.as_scalar().map(|s| s.text.clone()).unwrap_or_default();
            if !raw.is_empty() && !names.contains(&name.as_str()) {
                r.error_at(at, "head_node_type", format!(
                    "missing; the {} default {name:?} is not one of available_node_types ({}), so name the head's node type",
                    m.provider_type,
                    names.join(", ")
                ));
            }
            name
        }
        None => {
            if !raw.is_empty() {
                r.error_at(
                    at,
                    "head_node_type",
                    format!(
                        "missing; expected the name of the head's node type, one of available_node_types ({})",
                        names.join(", ")
                    ),
                );
            }
            String::new()
        }
    };

    // Ray: min_workers defaults to 0; max_workers to 0 for the head's type and to
    // the global max for the others.
    let mut node_types = Vec::with_capacity(raw.len());
    for t in raw {
        let mut c = t.config;
        c.min_workers = t.min_workers.unwrap_or(0);
        c.max_workers = match t.max_workers {
            Some(v) => v,
            None if c.name == head_node_type => 0,
            None => max_workers.unwrap_or(0),
        };
        if max_workers.is_some() && c.min_workers > c.max_workers {
            let path = child_path(&child_path("available_node_types", &c.name), "min_workers");
            let mark = if t.min_mark == Mark::NONE { t.mark } else { t.min_mark };
            r.error_at(
                mark,
                &path,
                format!("min_workers ({}) is larger than max_workers ({})", c.min_workers, c.max_workers),
            );
        }
        if aws {
            let is_head = c.name == head_node_type;
            if let Some(why) = super::instance_types::fill_aws(&mut c, is_head, t.resources_given) {
                // Ray would ask DescribeInstanceTypes; a type the table lacks keeps
                // what the file says (ray start on the node detects the rest).
                let path = child_path(&child_path("available_node_types", &c.name), "resources");
                r.warn_at(t.mark, &path, why);
            }
        }
        if gcp {
            super::instance_types::fill_gcp_price(&mut c);
        }
        node_types.push(c);
    }
    // Ray sums every type's min_workers, the head's type included.
    let min_sum: u64 = node_types.iter().map(|t| u64::from(t.min_workers)).sum();
    if let Some(max) = max_workers
        && min_sum > u64::from(max)
    {
        let msg = format!(
            "the global max_workers ({max}) is smaller than the sum of min_workers of the node types ({min_sum})"
        );
        let mark = max_workers_node.map(|n| n.mark).filter(|m| *m != Mark::NONE).unwrap_or(at);
        r.error_at(mark, "max_workers", msg);
    }

    let file_mounts = get("file_mounts")
        .and_then(|n| r.string_map(n, "file_mounts"))
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let scalars = |r: &mut Reader, key: &str| get(key).and_then(|n| r.scalar_list(n, key)).unwrap_or_default();
    let cluster_synced_files = scalars(r, "cluster_synced_files");
    let rsync_exclude = scalars(r, "rsync_exclude");
    let rsync_filter = scalars(r, "rsync_filter");
    let file_mounts_sync_continuously = get("file_mounts_sync_continuously")
        .and_then(|n| r.boolean(n, "file_mounts_sync_continuously"))
        .unwrap_or(false);
    let metadata = get("metadata").and_then(|n| r.mapping(n, "metadata").map(|_| to_json(n)));
    let no_restart = match get("no_restart") {
        None => false,
        Some(n) => match n.as_scalar().map(|s| s.resolved) {
            Some(Resolved::Bool(b)) => b,
            _ => {
                r.warn_at(n.mark, "no_restart", "ignored: not true or false (`ray up --no-restart` sets it)");
                false
            }
        },
    };

    Some(ClusterConfig {
        cluster_name: cluster_name?,
        max_workers: max_workers?,
        upscaling_speed,
        idle_timeout_minutes,
        provider: m.provider,
        provider_type: m.provider_type,
        auth,
        docker,
        node_types,
        head_node_type,
        file_mounts,
        cluster_synced_files,
        file_mounts_sync_continuously,
        rsync_exclude,
        rsync_filter,
        metadata,
        initialization_commands: list(r, "initialization_commands"),
        setup_commands,
        head_setup_commands,
        worker_setup_commands,
        head_start_ray_commands: list(r, "head_start_ray_commands"),
        worker_start_ray_commands: list(r, "worker_start_ray_commands"),
        no_restart,
    })
}

fn auth(r: &mut Reader, n: &Node) -> AuthConfig {
    let Some(m) = r.mapping(n, "auth") else { return AuthConfig::default() };
    r.check_keys(m, "auth", AUTH_KEYS);
    let s = |r: &mut Reader, k: &str| m.get(k).and_then(|n| r.string(n, &child_path("auth", k)));
    let a = AuthConfig {
        ssh_user: s(r, "ssh_user"),
        ssh_private_key: s(r, "ssh_private_key"),
        ssh_public_key: s(r, "ssh_public_key"),
        ssh_proxy_command: s(r, "ssh_proxy_command"),
        ssh_proxy_use_node_id: m
            .get("ssh_proxy_use_node_id")
            .and_then(|n| r.boolean(n, "auth.ssh_proxy_use_node_id"))
            .unwrap_or(false),
    };
    if a.ssh_proxy_use_node_id && a.ssh_proxy_command.is_none() {
        r.error(n, "auth.ssh_proxy_command", "missing; required when ssh_proxy_use_node_id is true");
    }
    a
}

/// `docker`, checked as Ray's schema and `validate_docker_config` check it.
/// `None` when absent or empty (docker off).
fn docker(r: &mut Reader, n: &Node) -> Option<serde_json::Value> {
    let m = r.mapping(n, "docker")?;
    check_typed_keys(r, m, "docker", DOCKER_KEYS, true);
    let text = |k: &str| m.get(k).and_then(Node::as_scalar).map(|s| s.text.clone()).filter(|t| !t.is_empty());
    let image = text("image");
    let head = text("head_image").or(image.clone());
    let worker = text("worker_image").or(image.clone());
    let image_given = image.is_some() || (head.is_some() && worker.is_some());
    let name_given = text("container_name").is_some();
    if name_given != image_given {
        let msg = if name_given {
            "an image is missing: set image (or both head_image and worker_image) along with container_name"
        } else {
            "container_name is missing: set it along with the image"
        };
        r.error(n, "docker", msg);
    }
    if m.is_empty() { None } else { Some(to_json(n)) }
}

fn node_types(r: &mut Reader, n: &Node, resources_optional: bool) -> Vec<RawType> {
    let Some(m) = r.mapping(n, "available_node_types") else { return Vec::new() };
    if m.is_empty() {
        r.error(n, "available_node_types", "expected at least one node type");
    }
    let mut out = Vec::new();
    for e in m.iter() {
        let path = child_path("available_node_types", &e.key);
        let body = &e.value;
        let Some(tm) = r.mapping(body, &path) else { continue };
        r.check_keys(tm, &path, NODE_TYPE_KEYS);
        let at = if body.mark == Mark::NONE { e.key_mark } else { body.mark };
        let sub = |k: &str| child_path(&path, k);
        let node_config = match r.required(tm, at, &path, "node_config", "a mapping of provider settings (may be {})") {
            Some(nc) => r.mapping(nc, &sub("node_config")).map(|_| to_json(nc)).unwrap_or_default(),
            None => serde_json::json!({}),
        };
        let mut resources = ResourceSet::new();
        let mut declared_resources = BTreeMap::new();
        let resources_given = tm.get("resources").is_some();
        let res = if resources_optional {
            tm.get("resources")
        } else {
            r.required(tm, at, &path, "resources", "a mapping of resource name to whole number (may be {})")
        };
        if let Some(res) = res
            && let Some(rm) = r.mapping(res, &sub("resources"))
        {
            for re in rm.iter() {
                if let Some(q) = r.integer(&re.value, &child_path(&sub("resources"), &re.key), 0) {
                    resources.set(&re.key, FixedPoint::from_int(q));
                    declared_resources.insert(re.key.clone(), q as f64);
                }
            }
        }
        let count = |r: &mut Reader, k: &str| {
            tm.get(k).and_then(|v| r.integer(v, &sub(k), 0)).map(|v| v.min(i64::from(u32::MAX - 1)) as u32)
        };
        let min_workers = count(r, "min_workers");
        let max_workers = count(r, "max_workers");
        let config = NodeTypeConfig {
            name: e.key.clone(),
            node_config,
            resources,
            declared_resources,
            min_workers: 0,
            max_workers: 0,
            idle_timeout_s: tm.get("idle_timeout_s").and_then(|v| r.number(v, &sub("idle_timeout_s"), 0.0, true)),
            priority: tm.get("priority").and_then(|v| r.integer(v, &sub("priority"), i64::MIN)).unwrap_or(0),
            price: tm.get("price").and_then(|v| r.number(v, &sub("price"), 0.0, false)),
            labels: tm
                .get("labels")
                .and_then(|v| r.string_map(v, &sub("labels")))
                .map(|v| v.into_iter().collect::<BTreeMap<_, _>>())
                .unwrap_or_default(),
            initialization_commands: tm
                .get("initialization_commands")
                .and_then(|v| r.string_list(v, &sub("initialization_commands"))),
            worker_setup_commands: tm
                .get("worker_setup_commands")
                .and_then(|v| r.string_list(v, &sub("worker_setup_commands"))),
            docker: tm.get("docker").and_then(|v| {
                let dm = r.mapping(v, &sub("docker"))?;
                check_typed_keys(r, dm, &sub("docker"), NODE_DOCKER_KEYS, true);
                Some(to_json(v))
            }),
        };
        let min_mark = tm.get("min_workers").map(|v| v.mark).unwrap_or(Mark::NONE);
        out.push(RawType { config, min_workers, max_workers, min_mark, mark: at, resources_given });
    }
    out
}
