//! Prometheus metrics end to end: a head with the fake_multinode autoscaler,
//! every `/metrics` endpoint found through the service discovery file the head
//! writes, read over HTTP with the cluster token (and refused without it), and
//! values that move when demand arrives.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use ray_common::metrics::{Sample, parse};
use ray_tests::*;

fn config(provider_extra: &str) -> String {
    format!(
        "cluster_name: metrics\nmax_workers: 4\nidle_timeout_minutes: 5\nprovider:\n  type: fake_multinode\n{provider_extra}\
         available_node_types:\n  ray.head.default:\n    resources: {{CPU: 0}}\n    node_config: {{}}\n  \
         small:\n    resources: {{CPU: 1}}\n    node_config: {{}}\n    max_workers: 4\nhead_node_type: ray.head.default\n"
    )
}

/// `GET /metrics` on `target`: (status code, body).
fn get(target: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(target).unwrap_or_else(|e| panic!("connect {target}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {target}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a sized body: {head}"
    );
    (code, body.to_string())
}

/// The targets in the service discovery file (empty until it exists).
fn targets(root: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(root.join("prom_metrics_service_discovery.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("the discovery file is JSON");
    assert_eq!(v[0]["labels"]["job"], "ray", "{text}");
    v[0]["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Each endpoint's samples, by which daemon it is: "gcs", "autoscaler", or "raylet <target>".
fn scrape_all(env: &RayEnv) -> BTreeMap<String, Vec<Sample>> {
    let token = env.token();
    let mut out = BTreeMap::new();
    for t in targets(&env.root()) {
        let (code, body) = get(&t, Some(&token));
        assert_eq!(code, 200, "{t}: {body}");
        let samples = parse(&body)
            .unwrap_or_else(|e| panic!("{t} answered text that does not parse: {e}\n{body}"));
        let has = |n: &str| samples.iter().any(|s| s.name == n);
        let name = if has("ray_gcs_nodes") {
            "gcs".to_string()
        } else if has("autoscaler_active_nodes") {
            "autoscaler".to_string()
        } else {
            assert!(has("ray_resources"), "{t} is none of the daemons: {body}");
            format!("raylet {t}")
        };
        out.insert(name, samples);
    }
    out
}

/// The value of the sample `name` with these labels (0 when absent: an empty family).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}

/// The sum over every raylet.
fn raylets_sum(all: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(k, _)| k.starts_with("raylet"))
        .map(|(_, s)| value(s, name, labels))
        .sum()
}

fn wait_for(
    env: &RayEnv,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&BTreeMap<String, Vec<Sample>>) -> bool,
) {
    if !wait_until(timeout, || f(&scrape_all(env))) {
        let now: Vec<String> = scrape_all(env)
            .iter()
            .flat_map(|(k, v)| {
                v.iter()
                    .filter(|s| !s.name.ends_with("_bucket"))
                    .map(move |s| format!("{k}: {} {:?} {}", s.name, s.labels, s.value))
            })
            .collect();
        panic!(
            "timed out waiting for {what}; samples now:\n{}\n{}",
            now.join("\n"),
            env.status()
        );
    }
}

#[test]
fn every_daemon_serves_metrics_behind_the_token_and_they_move_with_demand() {
    let env = RayEnv::new();
    let yaml = env.write_file("cluster.yaml", &config("  launch_delay_s: 1.5\n"));
    env.start_head(&[
        "--num-cpus",
        "1",
        "--autoscaling-config",
        yaml.to_str().unwrap(),
    ]);

    // The head lists its GCS, its raylet and the autoscaler for Prometheus.
    assert!(
        wait_until(Duration::from_secs(15), || targets(&env.root()).len() == 3),
        "targets: {:?}",
        targets(&env.root())
    );
    let all = scrape_all(&env);
    assert_eq!(
        all.keys().filter(|k| k.starts_with("raylet")).count(),
        1,
        "{:?}",
        all.keys()
    );
    let (gcs, autoscaler) = (&all["gcs"], &all["autoscaler"]);
    let raylet = all
        .iter()
        .find(|(k, _)| k.starts_with("raylet"))
        .map(|(_, v)| v)
        .unwrap();

    // Without the token, or with another one, every endpoint answers 401.
    for t in targets(&env.root()) {
        assert_eq!(get(&t, None).0, 401, "{t} without a token");
        assert_eq!(
            get(&t, Some("not-the-token")).0,
            401,
            "{t} with a wrong token"
        );
    }

    // Ray's names, with values that parse.
    assert_eq!(value(gcs, "ray_gcs_nodes", &[("State", "ALIVE")]), 1.0);
    assert_eq!(
        value(
            gcs,
            "ray_cluster_active_nodes",
            &[("node_type", "ray.head.default")]
        ),
        1.0
    );
    assert!(
        !gcs.is_empty()
            && gcs
                .iter()
                .all(|s| s.label("SessionName").starts_with("session_"))
    );
    assert_eq!(
        value(
            raylet,
            "ray_resources",
            &[("Name", "CPU"), ("State", "AVAILABLE")]
        ),
        1.0
    );
    assert_eq!(
        value(
            raylet,
            "ray_resources",
            &[("Name", "CPU"), ("State", "USED")]
        ),
        0.0
    );
    assert!(value(raylet, "ray_object_store_available_memory", &[]) > 0.0);
    assert!(value(raylet, "ray_node_cpu_count", &[]) >= 1.0);
    assert!(value(raylet, "ray_node_mem_total", &[]) > value(raylet, "ray_node_mem_used", &[]));
    for name in [
        "ray_object_store_memory",
        "ray_scheduler_unscheduleable_tasks",
        "ray_node_cpu_utilization",
        "ray_raylet_workers",
    ] {
        assert!(
            raylet.iter().any(|s| s.name == name),
            "{name} missing from the raylet's"
        );
    }
    assert_eq!(
        value(
            autoscaler,
            "autoscaler_active_nodes",
            &[("NodeType", "small")]
        ),
        0.0
    );
    assert_eq!(
        value(autoscaler, "autoscaler_started_nodes_total", &[]),
        0.0
    );
    assert!(
        value(autoscaler, "autoscaler_update_time_seconds_count", &[]) >= 1.0,
        "rounds are timed"
    );

    // The session's Prometheus config reads the targets from the file and the
    // token from its file, and never holds the token itself.
    let prom = std::fs::read_to_string(
        env.root()
            .join("session_latest/metrics/prometheus/prometheus.yml"),
    )
    .expect("prometheus.yml");
    assert!(
        prom.contains("credentials_file: '") && prom.contains(".ray/auth_token'"),
        "{prom}"
    );
    assert!(
        prom.contains("prom_metrics_service_discovery.json'"),
        "{prom}"
    );
    assert!(
        !prom.contains(&env.token()),
        "the config holds the token itself"
    );

    // Demand: two workers are launched (slowly), shown pending, then active.
    env.python_ok("import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=3)\n");
    wait_for(&env, "pending nodes", Duration::from_secs(10), |m| {
        value(
            &m["autoscaler"],
            "autoscaler_pending_nodes",
            &[("NodeType", "small")],
        ) >= 1.0
            && value(
                &m["autoscaler"],
                "autoscaler_pending_resources",
                &[("resource", "CPU")],
            ) >= 1.0
    });
    wait_for(&env, "2 active small nodes", Duration::from_secs(30), |m| {
        value(
            &m["autoscaler"],
            "autoscaler_active_nodes",
            &[("NodeType", "small")],
        ) == 2.0
            && value(
                &m["autoscaler"],
                "autoscaler_pending_nodes",
                &[("NodeType", "small")],
            ) == 0.0
            && value(
                &m["gcs"],
                "ray_cluster_active_nodes",
                &[("node_type", "small")],
            ) == 2.0
            && m.keys().filter(|k| k.starts_with("raylet")).count() == 3
    });
    let m = scrape_all(&env);
    assert_eq!(
        value(&m["autoscaler"], "autoscaler_started_nodes_total", &[]),
        2.0
    );
    assert_eq!(
        value(
            &m["autoscaler"],
            "autoscaler_worker_create_node_time_seconds_count",
            &[]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m["autoscaler"],
            "autoscaler_cluster_resources",
            &[("resource", "CPU")]
        ),
        2.0
    );
    assert_eq!(
        raylets_sum(
            &m,
            "ray_resources",
            &[("Name", "CPU"), ("State", "AVAILABLE")]
        ),
        3.0
    );

    // Tasks and an actor: the task table and the resources in use move.
    env.python_ok(
        "import ray\nray.init(address='auto')\n@ray.remote\ndef f(x):\n    return x\nassert sum(ray.get([f.remote(i) for i in range(5)])) == 10\n\
         @ray.remote(num_cpus=1)\nclass A:\n    def ping(self):\n        return 1\n\
         a = A.options(name='a', lifetime='detached').remote()\nassert ray.get(a.ping.remote()) == 1\n",
    );
    wait_for(
        &env,
        "finished tasks, a live actor and a CPU in use",
        Duration::from_secs(15),
        |m| {
            value(
                &m["gcs"],
                "ray_tasks",
                &[("Name", "f"), ("State", "FINISHED"), ("IsRetry", "0")],
            ) == 5.0
                && value(
                    &m["gcs"],
                    "ray_actors",
                    &[("Name", "A"), ("State", "ALIVE")],
                ) == 1.0
                && raylets_sum(m, "ray_resources", &[("Name", "CPU"), ("State", "USED")]) == 1.0
                && raylets_sum(m, "ray_raylet_workers", &[("State", "LEASED")]) == 1.0
        },
    );
    assert!(
        value(&scrape_all(&env)["gcs"], "ray_finished_jobs", &[]) >= 2.0,
        "both drivers' jobs ended"
    );
}

#[test]
fn launch_failures_are_counted() {
    let env = RayEnv::new();
    let yaml = env.write_file(
        "cluster.yaml",
        &config("  launch_error: {class: quota, message: \"no quota\"}\n"),
    );
    env.start_head(&[
        "--num-cpus",
        "0",
        "--autoscaling-config",
        yaml.to_str().unwrap(),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || targets(&env.root()).len() == 3),
        "targets: {:?}",
        targets(&env.root())
    );
    env.python_ok("import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=2)\n");
    wait_for(&env, "failed launches", Duration::from_secs(15), |m| {
        let a = &m["autoscaler"];
        value(a, "autoscaler_failed_create_nodes_total", &[]) >= 2.0
            && value(a, "autoscaler_node_launch_exceptions_total", &[]) >= 1.0
            && value(
                a,
                "autoscaler_recently_failed_nodes",
                &[("NodeType", "small")],
            ) >= 1.0
    });
    let m = scrape_all(&env);
    assert_eq!(
        value(&m["autoscaler"], "autoscaler_started_nodes_total", &[]),
        0.0
    );
    assert_eq!(
        value(
            &m["autoscaler"],
            "autoscaler_active_nodes",
            &[("NodeType", "small")]
        ),
        0.0
    );
}
