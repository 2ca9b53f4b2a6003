//! Configs in Ray's format load as Ray 2.60 loads them.
//!
//! - `corpus/*.yaml`: our own configs for every provider, written with the habits of
//!   Ray's templates. Each says under `metadata.expect` what Ray resolves it to
//!   (Ray does not read `metadata`); the values were checked against Ray 2.60's
//!   `prepare_config` + `validate_config`, plus (for `aws` node types) what Ray's
//!   `ray up` adds from DescribeInstanceTypes, which this loader takes from its
//!   instance-type table. A file Ray itself refuses says why
//!   under `metadata.ray_2_60_refuses`.
//! - `corpus/rejected/*.yaml`: configs Ray refuses too; each starts with
//!   `# expect-error: <text of our message>` lines.
//! - every `defaults.yaml` in Ray 2.60's wheel, read straight out of the `.whl`
//!   (`RAY_WHEEL_DIR`, by default `~/.cache/ray-rs/ray-wheel`; `scripts/test.sh`
//!   downloads it).
//!
//! Ray's published example configs are Ray's files, not ours, so they are not in
//! the repository; `cargo run --release -p ray-autoscaler --example
//! check_ray_configs -- DIR` checks a folder of them against Ray's verdicts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ray_autoscaler::config::{self, ClusterConfig, LEGACY_TOP_LEVEL_KEYS, NODE_TYPE_KEYS, TOP_LEVEL_KEYS};


#[path = "support/expect.rs"]
mod expect;
use expect::compare;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_config_loads_as_ray_resolves_it() {
    let files = yaml_files(&corpus_dir());
    assert!(files.len() >= 12, "the corpus is missing: {}", corpus_dir().display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match ClusterConfig::load_with_warnings(path) {
            Err(e) => failures.push(format!("{name}: refused:\n{e}")),
            Ok(l) => {
                let expect = l.config.metadata.as_ref().and_then(|m| m.get("expect")).cloned();
                let expect = expect.unwrap_or_else(|| panic!("{name}: no metadata.expect"));
                for d in compare(&l, &expect) {
                    failures.push(format!("{name}: {d}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rejected_corpus_config_is_refused_with_its_reason() {
    let files = yaml_files(&corpus_dir().join("rejected"));
    assert!(files.len() >= 10);
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let wanted: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect-error: ")).collect();
        assert!(!wanted.is_empty(), "{name}: no `# expect-error:` line");
        match ClusterConfig::load(path) {
            Ok(_) => failures.push(format!("{name}: loaded, but Ray refuses it")),
            Err(e) => {
                let shown = e.to_string();
                for w in wanted {
                    if !shown.contains(w) {
                        failures.push(format!("{name}: no {w:?} in:\n{shown}"));
                    }
                }
                if !shown.contains(&format!("{}:", path.display())) {
                    failures.push(format!("{name}: the message does not name the file:\n{shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every key of Ray's schema appears somewhere in the corpus.
#[test]
fn the_corpus_uses_every_key_of_rays_schema() {
    use config::yaml::{self, Node, Value};
    fn walk(n: &Node, path: &str, seen: &mut Vec<String>) {
        match &n.value {
            Value::Mapping(m) => {
                for e in m.iter() {
                    let p = match path {
                        "available_node_types" => "available_node_types.*".to_string(),
                        "" => e.key.clone(),
                        _ => format!("{path}.{}", e.key),
                    };
                    seen.push(p.clone());
                    if !p.starts_with("metadata") && !p.contains("node_config") {
                        walk(&e.value, &p, seen);
                    }
                }
            }
            Value::Sequence(items) => items.iter().for_each(|i| walk(i, path, seen)),
            Value::Scalar(_) => {}
        }
    }
    let mut seen = Vec::new();
    for path in yaml_files(&corpus_dir()) {
        let root = yaml::parse(&std::fs::read_to_string(&path).unwrap()).unwrap().unwrap();
        walk(&root, "", &mut seen);
    }
    let mut wanted: Vec<String> = TOP_LEVEL_KEYS.iter().chain(LEGACY_TOP_LEVEL_KEYS).map(|k| k.to_string()).collect();
    wanted.extend(NODE_TYPE_KEYS.iter().filter(|k| **k != "price").map(|k| format!("available_node_types.*.{k}")));
    wanted.extend(config::AUTH_KEYS.iter().map(|k| format!("auth.{k}")));
    wanted.extend(config::docker_keys().iter().map(|k| format!("docker.{k}")));
    wanted.extend(config::node_docker_keys().iter().map(|k| format!("available_node_types.*.docker.{k}")));
    wanted.extend(config::provider_keys().iter().map(|k| format!("provider.{k}")));
    let missing: Vec<&String> = wanted.iter().filter(|k| !seen.contains(k)).collect();
    assert!(missing.is_empty(), "keys of Ray's schema no corpus file uses: {missing:?}");
}

// ---- Ray 2.60's wheel -------------------------------------------------------------

const RAY_VERSION: &str = "2.60.0";

fn wheel() -> PathBuf {
    let dir = std::env::var_os("RAY_WHEEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is not set; set RAY_WHEEL_DIR");
        Path::new(&home).join(".cache/ray-rs/ray-wheel")
    });
    let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&format!("ray-{RAY_VERSION}-")) && n.ends_with(".whl")
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "Ray {RAY_VERSION}'s wheel is not in {dir}. This test reads the defaults.yaml files shipped in it. \
             scripts/test.sh downloads it; by hand:\n    .venv/bin/python -m pip download --no-deps ray=={RAY_VERSION} -d {dir}\n\
             (or point RAY_WHEEL_DIR at a folder that has it)",
            dir = dir.display()
        )
    })
}

/// What Ray 2.60 makes of each `defaults.yaml` in its wheel, loaded as a config of
/// its own: `Ok((head type, max_workers, [(type, min, max)]))`, or `Err(what our
/// message says)` for the two Ray refuses too.
type Verdict = Result<(&'static str, u32, &'static [(&'static str, u32, u32)]), &'static str>;

fn wheel_verdicts() -> BTreeMap<&'static str, Verdict> {
    let two = |head| -> &'static [(&'static str, u32, u32)] {
        if head == "gcp" {
            &[("ray_head_default", 0, 0), ("ray_worker_small", 0, 2)]
        } else {
            &[("ray.head.default", 0, 0), ("ray.worker.default", 0, 2)]
        }
    };
    BTreeMap::from([
        ("ray/autoscaler/aws/defaults.yaml", Ok(("ray.head.default", 2, two("aws")))),
        ("ray/autoscaler/azure/defaults.yaml", Ok(("ray.head.default", 2, two("azure")))),
        ("ray/autoscaler/gcp/defaults.yaml", Ok(("ray_head_default", 2, two("gcp")))),
        (
            "ray/autoscaler/spark/defaults.yaml",
            Ok(("ray.head.default", 8, &[("ray.head.default", 0, 0), ("ray.worker", 0, 4)][..])),
        ),
        (
            "ray/autoscaler/_private/readonly/defaults.yaml",
            Ok(("ray.head.default", 0, &[("ray.head.default", 0, 0)][..])),
        ),
        // No `provider` (Ray: KeyError 'provider').
        ("ray/autoscaler/local/defaults.yaml", Err("provider: missing")),
        // Node types without node_config (Ray: "'node_config' is a required property").
        ("ray/autoscaler/vsphere/defaults.yaml", Err("node_config: missing")),
    ])
}

#[test]
fn every_defaults_yaml_in_rays_wheel_loads_as_ray_loads_it() {
    let path = wheel();
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut zip = zip::ZipArchive::new(file).unwrap_or_else(|e| panic!("{}: not a wheel: {e}", path.display()));
    let mut found = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().to_string();
        if name.starts_with("ray/autoscaler/") && name.ends_with("/defaults.yaml") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            found.insert(name, text);
        }
    }
    let verdicts = wheel_verdicts();
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        verdicts.keys().copied().collect::<Vec<_>>(),
        "the wheel's defaults.yaml files changed"
    );
    for (name, text) in &found {
        let result = ClusterConfig::parse_with_warnings(name, text);
        match (&verdicts[name.as_str()], result) {
            (Ok((head, max, types)), Ok(l)) => {
                let c = &l.config;
                assert_eq!((c.head_node_type.as_str(), c.max_workers), (*head, *max), "{name}");
                let got: Vec<(&str, u32, u32)> =
                    c.node_types.iter().map(|t| (t.name.as_str(), t.min_workers, t.max_workers)).collect();
                assert_eq!(got, *types, "{name}");
                // The file lists every command, so Ray's merge is ours: setup + head/worker.
                let root = config::yaml::parse(text).unwrap().unwrap();
                let list = |k: &str| -> Vec<String> {
                    match root.as_mapping().unwrap().get(k).map(|n| &n.value) {
                        Some(config::yaml::Value::Sequence(items)) => {
                            items.iter().map(|i| i.as_scalar().unwrap().text.clone()).collect()
                        }
                        _ => Vec::new(),
                    }
                };
                let setup = list("setup_commands");
                assert_eq!(c.head_setup_commands, [setup.clone(), list("head_setup_commands")].concat(), "{name}");
                assert_eq!(c.worker_setup_commands, [setup, list("worker_setup_commands")].concat(), "{name}");
            }
            (Err(why), Err(e)) => assert!(e.to_string().contains(why), "{name}: expected {why:?} in:\n{e}"),
            (want, got) => panic!("{name}: Ray 2.60 says {want:?}, we say {got:?}"),
        }
    }
}

#[test]
fn the_repositorys_example_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("configs");
    let mut files = yaml_files(&root);
    files.extend(yaml_files(&root.join("aws")));
    assert!(files.len() >= 3, "{files:?}");
    for path in &files {
        let l = ClusterConfig::load_with_warnings(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(l.warnings.is_empty(), "{}: {:?}", path.display(), l.warnings);
        for t in &l.config.node_types {
            assert!(!t.resources.is_empty() || l.config.provider_type != "aws", "{}: {} has resources", path.display(), t.name);
        }
    }
    let full = ClusterConfig::load(&root.join("aws/example-full.yaml")).unwrap();
    let w = full.node_type("ray.worker.default").unwrap();
    assert_eq!(w.declared_resources.get("CPU"), Some(&2.0), "m5.large from the table");
    assert!(w.price.is_some_and(|p| p > 0.0 && p < 0.096), "spot price estimate: {:?}", w.price);
    let minimal = ClusterConfig::load(&root.join("aws/example-minimal.yaml")).unwrap();
    assert_eq!(minimal.head_node_type, "ray.head.default", "from the AWS defaults");
}
