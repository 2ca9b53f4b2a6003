//! A whole GCP cluster against the local Compute server. It runs no VMs, so
//! each instance it "makes" is played by an sshd on loopback: the project's
//! default network has its us-west1 subnetwork on the `127.A.B.0/24` block of
//! an [`SshHosts`], and the server hands out internal addresses from `.2` on,
//! which are the sshd hosts. `ray up` bootstraps the project, launches a
//! labelled head and sets it up over SSH; the head's autoscaler (with the
//! credentials `ray up` copied to gcloud's ADC file on the head) scales a worker
//! up on `request_resources` and deletes it after the idle timeout; `ray down`
//! leaves no cluster instance and no Ray process.

use std::time::Duration;

use ray_tests::gcp::{Gcp, PROJECT};
use ray_tests::ssh::SshHosts;
use ray_tests::*;
use serde_json::Value;

/// The server's first address in a subnetwork (.1 is the gateway).
const FIRST_HOST: u8 = 2;

fn host_of(hosts: &SshHosts, ip: &str) -> usize {
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    let i = usize::from(last - FIRST_HOST);
    assert!(i < hosts.len(), "the server gave {ip}, beyond the {} sshd hosts", hosts.len());
    i
}

/// The cluster's instances: (name, internal ip, labels).
fn instances(gcp: &Gcp, cluster: &str) -> Vec<(String, String, Value)> {
    gcp.state()["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["labels"]["ray-cluster-name"] == cluster)
        .map(|i| (i["name"].as_str().unwrap().to_string(), i["networkInterfaces"][0]["networkIP"].as_str().unwrap().to_string(), i["labels"].clone()))
        .collect()
}

fn cluster_yaml(gcp: &Gcp, hosts: &SshHosts, adc: &str) -> String {
    let nc = "{machineType: n1-standard-2, disks: [{boot: true, autoDelete: true, initializeParams: {diskSizeGb: 50, sourceImage: projects/deeplearning-platform-release/global/images/family/common-cpu}}]}";
    format!(
        "cluster_name: gce\n\
         max_workers: 2\n\
         idle_timeout_minutes: 0.1\n\
         provider: {{type: gcp, region: us-west1, availability_zone: us-west1-a, project_id: {PROJECT}, endpoint_url: \"{endpoint}\", use_internal_ips: true}}\n\
         auth: {{ssh_user: root, ssh_private_key: {key}}}\n\
         available_node_types:\n\
         \x20 ray_head_default: {{resources: {{CPU: 1}}, node_config: {nc}}}\n\
         \x20 ray_worker_small: {{resources: {{CPU: 2}}, min_workers: 0, max_workers: 2, node_config: {nc}}}\n\
         head_node_type: ray_head_default\n\
         file_mounts: {{\"~/.config/gcloud/application_default_credentials.json\": \"{adc}\"}}\n\
         head_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - AUTOSCALER_NODE_START_WAIT_S=30 ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml\n\
         worker_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - ray start --address=$RAY_HEAD_IP:6379\n",
        endpoint = gcp.endpoint,
        key = hosts.key().display(),
    )
}

fn head_monitor_log(hosts: &SshHosts, head: usize) -> String {
    std::fs::read_to_string(hosts.ray_tmpdir(head).join("ray/session_latest/logs/monitor.log")).unwrap_or_default()
}

#[test]
fn ray_up_launches_a_labelled_head_the_autoscaler_scales_a_worker_up_and_down_and_down_leaves_nothing() {
    let hosts = SshHosts::start(4);
    let (a, b) = hosts.block();
    let gcp = Gcp::start(&["--subnet", &format!("us-west1=127.{a}.{b}.0/24")]);
    let env = RayEnv::new();
    let mut env = env;
    for (k, v) in gcp.env() {
        if k != "RAY_GCP_ENDPOINT_URL" {
            env.set(&k, &v);
        }
    }
    let adc = gcp.credentials_file(ray_tests::gcp::REFRESH_TOKEN).display().to_string();
    let cfg = env.write_file("cluster.yaml", &cluster_yaml(&gcp, &hosts, &adc)).display().to_string();

    let out = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(out.contains("launched and set up"), "{out}");
    let heads = instances(&gcp, "gce");
    assert_eq!(heads.len(), 1, "one instance: the head");
    let (head_name, head_ip, labels) = &heads[0];
    assert!(head_name.starts_with("ray-gce-head-"), "{head_name}");
    assert_eq!(head_ip, &format!("127.{a}.{b}.{FIRST_HOST}"));
    assert_eq!(labels["ray-node-type"], "head");
    assert_eq!(labels["ray-user-node-type"], "ray_head_default");
    assert_eq!(labels["ray-node-status"], "up-to-date");
    assert!(labels["ray-launch-config"].is_string() && labels["ray-runtime-config"].is_string(), "{labels}");
    let head = host_of(&hosts, head_ip);
    assert_eq!(env.ray_ok(&["get-head-ip", &cfg]).trim(), head_ip.as_str());
    // The bootstrap gave the head its service account and the cluster its firewall rules.
    let boot = std::fs::read_to_string(hosts.home(head).join("ray_bootstrap_config.yaml")).unwrap();
    assert!(boot.contains("ray-rs-autoscaler-sa-v1@") && boot.contains("subnetworks/default"), "{boot}");
    let state = gcp.state();
    assert_eq!(state["firewalls"].as_array().unwrap().len(), 2);

    // Demand beyond the head's one CPU: a worker launches and joins.
    let demand = env.write_file("demand.py", "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=3)\n");
    env.ray_ok(&["submit", &cfg, demand.to_str().unwrap()]);
    let mut status = String::new();
    let grew = wait_until(Duration::from_secs(90), || {
        status = String::from_utf8_lossy(&env.ray(&["exec", &cfg, "ray status"]).stdout).into_owned();
        status.contains("1 ray_worker_small")
    });
    assert!(grew, "a worker joined:\n{status}\n{}", head_monitor_log(&hosts, head));
    // The updater labels the node up-to-date right after its start commands ran.
    let mut all = Vec::new();
    let labelled = wait_until(Duration::from_secs(30), || {
        all = instances(&gcp, "gce");
        all.iter().any(|(n, _, l)| n != head_name && l["ray-node-status"] == "up-to-date")
    });
    assert!(labelled, "{all:?}");
    let workers: Vec<_> = all.iter().filter(|(n, _, _)| n != head_name).collect();
    assert_eq!(workers.len(), 1, "{all:?}");
    assert!(workers[0].0.starts_with("ray-gce-worker-"));
    assert_eq!(workers[0].2["ray-node-type"], "worker");
    assert_eq!(workers[0].2["ray-user-node-type"], "ray_worker_small");
    assert_eq!(workers[0].2["ray-node-status"], "up-to-date");
    let worker_host = host_of(&hosts, &workers[0].1);
    assert!(!hosts.live_ray_processes(worker_host).is_empty(), "Ray runs on the worker's host");
    // The head's autoscaler made it: its calls came with the token of the credentials file on the head.
    assert!(gcp.calls("instances.insert").len() >= 2);

    // No more demand: the idle worker is drained and its instance deleted.
    let none = env.write_file("none.py", "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=0)\n");
    env.ray_ok(&["submit", &cfg, none.to_str().unwrap()]);
    let shrank = wait_until(Duration::from_secs(90), || instances(&gcp, "gce").len() == 1);
    assert!(shrank, "the idle worker's instance is deleted:\n{}", head_monitor_log(&hosts, head));
    assert!(gcp.calls("instances.delete").iter().any(|l| l.contains(&workers[0].0)));
    // A deleted VM takes its processes with it; the server's only exist on paper.
    hosts.kill_processes(worker_host);

    // Out of vCPU quota (the head's 2 are all there is): the launch fails with
    // QUOTA_EXCEEDED, and `ray status` says so and that the type is paused.
    gcp.set_quota(serde_json::json!({"us-west1": 2}));
    env.ray_ok(&["submit", &cfg, demand.to_str().unwrap()]);
    let said = wait_until(Duration::from_secs(60), || {
        status = String::from_utf8_lossy(&env.ray(&["exec", &cfg, "ray status"]).stdout).into_owned();
        status.contains("QUOTA_EXCEEDED")
    });
    assert!(said && status.contains("paused for"), "ray status names the quota:\n{status}");
    assert_eq!(instances(&gcp, "gce").len(), 1, "nothing launched over quota");

    env.ray_ok(&["down", &cfg, "--yes"]);
    assert!(instances(&gcp, "gce").is_empty(), "no cluster instance is left");
    for i in 0..hosts.len() {
        assert!(wait_until(Duration::from_secs(20), || hosts.live_ray_processes(i).is_empty()), "Ray left on {}: {:?}", hosts.ip(i), hosts.live_ray_processes(i));
    }
    env.ray_ok(&["down", &cfg, "--yes"]);
}
