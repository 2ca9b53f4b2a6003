//! A whole AWS cluster against a real moto server. moto runs no VMs, so each
//! instance it "launches" is played by an sshd on loopback: the test makes the
//! cluster's VPC and subnet `127.A.B.0/24` (the block of an [`SshHosts`]), and
//! moto hands out private addresses from `.4` on, which are sshd hosts. `ray up`
//! then launches a tagged head in moto and sets it up over SSH, the head's
//! autoscaler launches and sets up workers in moto, and `ray down` leaves no
//! cluster instance and no Ray process.
//!
//! With `launch_via: user_data` nothing sets a worker up over SSH: the test plays
//! cloud-init (it runs each new instance's user data on that instance's host) and
//! the instance metadata service (instance id, spot interruption notices).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use ray_tests::moto::Moto;
use ray_tests::ssh::SshHosts;
use ray_tests::*;

#[path = "support/aws.rs"]
mod aws;

/// moto's first address in a subnet (AWS keeps .0-.3).
const FIRST_HOST: u8 = 4;

struct Cloud {
    moto: Moto,
    ec2: aws_sdk_ec2::Client,
    rt: tokio::runtime::Runtime,
    ami: String,
    subnet: String,
}

impl Cloud {
    /// moto, with a VPC and subnet on `hosts`' loopback block.
    fn new(hosts: &SshHosts) -> Self {
        let moto = Moto::start();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ec2, ami, subnet) = rt.block_on(async {
            let ec2 = aws_sdk_ec2::Client::new(&aws::sdk_config(&moto).await);
            let ami = aws::an_image(&ec2).await;
            let (a, b) = hosts.block();
            let cidr = format!("127.{a}.{b}.0/24");
            let vpc = ec2.create_vpc().cidr_block(&cidr).send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string();
            let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block(&cidr).send().await.unwrap();
            let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
            ec2.create_key_pair().key_name("test-key").send().await.unwrap();
            (ec2, ami, subnet)
        });
        Self { moto, ec2, rt, ami, subnet }
    }

    /// The cluster's instances in `states`: (id, private ip, tags).
    fn instances(&self, cluster: &str, states: &[&str]) -> Vec<(String, String, BTreeMap<String, String>)> {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_instances()
                .filters(Filter::builder().name("tag:ray-cluster-name").values(cluster).build())
                .filters(Filter::builder().name("instance-state-name").set_values(Some(states.iter().map(|s| s.to_string()).collect())).build())
                .send()
                .await
                .unwrap();
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(|i| {
                    let tags = i.tags().iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect();
                    (i.instance_id().unwrap().to_string(), i.private_ip_address().unwrap_or_default().to_string(), tags)
                })
                .collect()
        })
    }

    fn user_data(&self, id: &str) -> String {
        use base64::Engine as _;
        self.rt.block_on(async {
            let out = self.ec2.describe_instance_attribute().instance_id(id).attribute("userData".into()).send().await.unwrap();
            let b64 = out.user_data().and_then(|u| u.value()).unwrap_or_default().to_string();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        })
    }
}

/// The index of the sshd host playing the instance at `ip`.
fn host_of(hosts: &SshHosts, ip: &str) -> usize {
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    let i = usize::from(last) - 2;
    assert!(i < hosts.len(), "moto gave {ip}, beyond the {} sshd hosts", hosts.len());
    i
}

fn cluster_yaml(cloud: &Cloud, hosts: &SshHosts, creds: &str, extra_provider: &str, worker_extra: &str) -> String {
    let nc = format!("{{InstanceType: m5.large, ImageId: {}, KeyName: test-key, SubnetIds: [{}]{worker_extra}}}", cloud.ami, cloud.subnet);
    let head_nc = format!("{{InstanceType: m5.large, ImageId: {}, KeyName: test-key, SubnetIds: [{}]}}", cloud.ami, cloud.subnet);
    format!(
        "cluster_name: moto\n\
         max_workers: 2\n\
         idle_timeout_minutes: 0.1\n\
         provider: {{type: aws, region: us-west-2, endpoint_url: \"{endpoint}\", cache_stopped_nodes: false, use_internal_ips: true{extra_provider}}}\n\
         auth: {{ssh_user: root, ssh_private_key: {key}}}\n\
         available_node_types:\n\
         \x20 head: {{resources: {{CPU: 1}}, node_config: {head_nc}}}\n\
         \x20 worker: {{resources: {{CPU: 2}}, min_workers: 0, max_workers: 2, node_config: {nc}}}\n\
         head_node_type: head\n\
         file_mounts: {{\"~/.aws/credentials\": \"{creds}\"}}\n\
         head_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - AUTOSCALER_NODE_START_WAIT_S=30 ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml\n\
         worker_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - ray start --address=$RAY_HEAD_IP:6379\n",
        endpoint = cloud.moto.endpoint,
        key = hosts.key().display(),
    )
}

fn env_for(cloud: &Cloud) -> (RayEnv, String) {
    let mut env = RayEnv::new();
    for (k, v) in cloud.moto.env() {
        env.set(&k, &v);
    }
    let creds = env.write_file("credentials", "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n").display().to_string();
    (env, creds)
}

fn head_monitor_log(hosts: &SshHosts, head: usize) -> String {
    std::fs::read_to_string(hosts.ray_tmpdir(head).join("ray/session_latest/logs/monitor.log")).unwrap_or_default()
}

#[test]
fn ray_up_launches_a_tagged_head_the_autoscaler_scales_workers_in_moto_and_down_leaves_nothing() {
    let hosts = SshHosts::start(5);
    let cloud = Cloud::new(&hosts);
    let (env, creds) = env_for(&cloud);
    let cfg = env.write_file("cluster.yaml", &cluster_yaml(&cloud, &hosts, &creds, "", "")).display().to_string();

    let out = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(out.contains("launched and set up"), "{out}");
    let heads = cloud.instances("moto", &["pending", "running"]);
    assert_eq!(heads.len(), 1, "one instance: the head");
    let (head_id, head_ip, tags) = &heads[0];
    assert_eq!(head_ip, &format!("127.{}.{}.{FIRST_HOST}", hosts.block().0, hosts.block().1));
    assert_eq!(tags.get("ray-node-type").map(String::as_str), Some("head"));
    assert_eq!(tags.get("ray-user-node-type").map(String::as_str), Some("head"));
    assert_eq!(tags.get("ray-node-status").map(String::as_str), Some("up-to-date"));
    assert_eq!(tags.get("Name").map(String::as_str), Some("ray-moto-head"));
    assert!(tags.contains_key("ray-launch-config") && tags.contains_key("ray-runtime-config"), "{tags:?}");
    let head = host_of(&hosts, head_ip);
    assert_eq!(env.ray_ok(&["get-head-ip", &cfg]).trim(), head_ip.as_str());
    // The bootstrap made the cluster's security group and the head's profile.
    let boot = std::fs::read_to_string(hosts.home(head).join("ray_bootstrap_config.yaml")).unwrap();
    assert!(boot.contains("SecurityGroupIds") && boot.contains("ray-rs-autoscaler-v1"), "{boot}");

    // Demand beyond the head's one CPU: a worker launches in moto and joins.
    let demand = env.write_file("demand.py", "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=3)\n");
    env.ray_ok(&["submit", &cfg, demand.to_str().unwrap()]);
    let mut status = String::new();
    let grew = wait_until(Duration::from_secs(90), || {
        status = String::from_utf8_lossy(&env.ray(&["exec", &cfg, "ray status"]).stdout).into_owned();
        status.contains("1 worker")
    });
    assert!(grew, "a worker joined:\n{status}\n{}", head_monitor_log(&hosts, head));
    let all = cloud.instances("moto", &["pending", "running"]);
    let workers: Vec<_> = all.iter().filter(|(id, _, _)| id != head_id).collect();
    assert_eq!(workers.len(), 1, "{all:?}");
    let wtags = &workers[0].2;
    assert_eq!(wtags.get("ray-node-type").map(String::as_str), Some("worker"));
    assert_eq!(wtags.get("ray-user-node-type").map(String::as_str), Some("worker"));
    assert_eq!(wtags.get("ray-node-status").map(String::as_str), Some("up-to-date"));
    let worker_host = host_of(&hosts, &workers[0].1);
    assert!(!hosts.live_ray_processes(worker_host).is_empty(), "Ray runs on the worker's host");

    // No more demand: the idle worker is drained and its instance terminated.
    let none = env.write_file("none.py", "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=0)\n");
    env.ray_ok(&["submit", &cfg, none.to_str().unwrap()]);
    let shrank = wait_until(Duration::from_secs(90), || cloud.instances("moto", &["pending", "running"]).len() == 1);
    assert!(shrank, "the idle worker's instance ends:\n{}", head_monitor_log(&hosts, head));
    let gone = cloud.instances("moto", &["terminated", "shutting-down"]);
    assert!(gone.iter().any(|(id, _, _)| *id == workers[0].0), "terminated, not stopped (cache_stopped_nodes: false)");
    // A terminated VM takes its processes with it; moto's only exist on paper.
    hosts.kill_processes(worker_host);

    env.ray_ok(&["down", &cfg, "--yes"]);
    assert!(cloud.instances("moto", &["pending", "running", "stopping", "stopped"]).is_empty(), "no cluster instance is left");
    for i in 0..hosts.len() {
        assert!(wait_until(Duration::from_secs(20), || hosts.live_ray_processes(i).is_empty()), "Ray left on {}: {:?}", hosts.ip(i), hosts.live_ray_processes(i));
    }
    env.ray_ok(&["down", &cfg, "--yes"]);
}

/// The instance metadata service of every simulated instance:
/// `/<instance id>/latest/...`; `notices` holds the instances EC2 is about to reclaim.
struct Imds {
    port: u16,
    notices: Arc<Mutex<BTreeSet<String>>>,
}

impl Imds {
    fn start() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let notices: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let n = notices.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let len = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..len]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut parts = path.trim_start_matches('/').splitn(2, '/');
                let id = parts.next().unwrap_or_default().to_string();
                let rest = parts.next().unwrap_or_default();
                let (code, body) = match rest {
                    "latest/api/token" => (200, "token-1".to_string()),
                    "latest/meta-data/instance-id" => (200, id.clone()),
                    "latest/meta-data/spot/instance-action" if n.lock().unwrap().contains(&id) => {
                        (200, r#"{"action": "terminate", "time": "2026-12-02T00:02:00Z"}"#.to_string())
                    }
                    _ => (404, "Not Found".to_string()),
                };
                let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        Self { port, notices }
    }

    fn endpoint(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/{id}", self.port)
    }
}

#[test]
fn user_data_workers_join_without_ssh_and_a_spot_notice_brings_a_replacement() {
    let hosts = SshHosts::start(6);
    let cloud = Cloud::new(&hosts);
    let (env, creds) = env_for(&cloud);
    let yaml = cluster_yaml(&cloud, &hosts, &creds, ", launch_via: user_data", ", InstanceMarketOptions: {MarketType: spot}")
        .replace("min_workers: 0, max_workers: 2", "min_workers: 1, max_workers: 2");
    let cfg = env.write_file("cluster.yaml", &yaml).display().to_string();
    env.ray_ok(&["up", &cfg, "--yes"]);
    let head_id = cloud.instances("moto", &["running"])[0].0.clone();
    let head = host_of(&hosts, &cloud.instances("moto", &["running"])[0].1);

    // Play cloud-init: run each new worker's user data on its host.
    let imds = Imds::start();
    let booted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let boot = |cloud: &Cloud, booted: &Arc<Mutex<BTreeSet<String>>>| {
        for (id, ip, _) in cloud.instances("moto", &["running"]) {
            if id == head_id || !booted.lock().unwrap().insert(id.clone()) {
                continue;
            }
            let script = cloud.user_data(&id);
            assert!(script.starts_with("#!/bin/bash") && script.contains("ray start --address"), "{script}");
            let h = host_of(&hosts, &ip);
            let cmd = format!("AWS_EC2_METADATA_SERVICE_ENDPOINT={} RAY_spot_interruption_poll_ms=300 nohup bash -s > ~/cloud-init.log 2>&1", imds.endpoint(&id));
            let mut child = hosts.ssh_command(h, &cmd).stdin(std::process::Stdio::piped()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            let st = child.wait().unwrap();
            assert!(st.success(), "the user data ran on {ip}: {}", std::fs::read_to_string(hosts.home(h).join("cloud-init.log")).unwrap_or_default());
        }
    };
    let mut status = String::new();
    let joined = wait_until(Duration::from_secs(90), || {
        boot(&cloud, &booted);
        status = String::from_utf8_lossy(&env.ray(&["exec", &cfg, "ray status"]).stdout).into_owned();
        status.contains("1 worker")
    });
    assert!(joined, "min_workers: 1 brought a worker up from its user data:\n{status}\n{}", head_monitor_log(&hosts, head));
    assert!(!head_monitor_log(&hosts, head).contains("waiting for SSH"), "no SSH set-up of workers");
    let first: Vec<String> = cloud.instances("moto", &["running"]).into_iter().map(|x| x.0).filter(|id| *id != head_id).collect();
    assert_eq!(first.len(), 1);
    let tags = &cloud.instances("moto", &["running"]).into_iter().find(|x| x.0 == first[0]).unwrap().2;
    assert_eq!(tags.get("ray-market").map(String::as_str), Some("spot"));

    // EC2's two-minute notice: the node drains and a replacement launches while it still runs.
    imds.notices.lock().unwrap().insert(first[0].clone());
    let replaced = wait_until(Duration::from_secs(60), || {
        boot(&cloud, &booted);
        cloud.instances("moto", &["pending", "running"]).len() == 3
    });
    assert!(replaced, "a replacement was launched:\n{}", head_monitor_log(&hosts, head));
    assert!(cloud.instances("moto", &["running"]).iter().any(|x| x.0 == first[0]), "before the reclaimed one is gone");
    let raylet_log = std::fs::read_to_string(hosts.ray_tmpdir(host_of(&hosts, &cloud.instances("moto", &["running"]).into_iter().find(|x| x.0 == first[0]).unwrap().1)).join("ray/session_latest/logs/raylet.out")).unwrap_or_default();
    assert!(raylet_log.contains("spot interruption notice"), "{raylet_log}");

    env.ray_ok(&["down", &cfg, "--yes"]);
    assert!(cloud.instances("moto", &["pending", "running", "stopping", "stopped"]).is_empty(), "no cluster instance is left");
    let ended: Vec<String> = cloud.instances("moto", &["terminated", "shutting-down"]).into_iter().map(|x| x.0).collect();
    assert!(ended.contains(&first[0]) && ended.contains(&head_id), "spot workers and the head end: {ended:?}");
}
