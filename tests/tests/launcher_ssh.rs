//! The cluster launcher over real SSH: sshd servers on loopback addresses play
//! the machines of an on-prem (`local` provider) cluster. `ray up` sets up the
//! head over SSH, the head's autoscaler sets up a worker on a free address when a
//! submitted script needs more CPUs, and `ray down` leaves no Ray process on any
//! address. Faults: an unreachable machine and a failing setup command.

use std::time::Duration;

use ray_tests::ssh::SshHosts;
use ray_tests::*;

const SCRIPT: &str = r#"
import os
import time
import ray

ray.init(address="auto")

@ray.remote(num_cpus=1)
def where(i):
    time.sleep(2)
    return os.environ.get("RAY_NODE_IP_ADDRESS")

ips = sorted(set(ray.get([where.remote(i) for i in range(3)])))
print("ran on:", " ".join(ips))
"#;

/// A local-provider cluster over `hosts` (host 0 is the head); the head offers
/// one CPU, each worker one.
fn cluster_yaml(hosts: &SshHosts, extra: &str) -> String {
    format!(
        "cluster_name: onprem\n\
         {provider}\
         min_workers: 0\n\
         max_workers: 2\n\
         idle_timeout_minutes: 0.1\n\
         head_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - AUTOSCALER_NODE_START_WAIT_S=5 ray start --head --port=6379 --num-cpus=1 --autoscaling-config=~/ray_bootstrap_config.yaml\n\
         worker_start_ray_commands:\n\
         \x20 - ray stop\n\
         \x20 - ray start --address=$RAY_HEAD_IP:6379 --num-cpus=1\n\
         {extra}",
        provider = hosts.provider_yaml()
    )
}

/// The head's autoscaler and updater logs, for failure messages.
fn head_logs(hosts: &SshHosts) -> String {
    let mut out = String::new();
    let root = hosts.ray_tmpdir(0).join("ray");
    let sessions = std::fs::read_dir(&root).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.join("logs").is_dir()).collect::<Vec<_>>()).unwrap_or_default();
    for s in sessions {
        for f in std::fs::read_dir(s.join("logs")).map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>()).unwrap_or_default() {
            let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.starts_with("monitor") || name.starts_with("updater") {
                out.push_str(&format!("==== {}\n{}\n", f.display(), std::fs::read_to_string(&f).unwrap_or_default()));
            }
        }
    }
    out
}

fn write(env: &RayEnv, name: &str, body: &str) -> String {
    env.write_file(name, body).display().to_string()
}

fn text(out: &std::process::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn up_submit_grows_by_a_worker_over_ssh_and_down_leaves_nothing() {
    let hosts = SshHosts::start(3);
    let env = RayEnv::new();
    let cfg = write(&env, "cluster.yaml", &cluster_yaml(&hosts, "setup_commands: [echo set-up >> ~/setups.txt]\n"));
    let out = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(out.contains(&format!("{}: waiting for SSH", hosts.ip(0))), "{out}");
    assert!(out.contains("launched and set up"), "{out}");
    assert!(hosts.home(0).join("ray_bootstrap_config.yaml").exists(), "the head got its config");
    assert!(hosts.home(0).join(".ray/auth_token").exists(), "and the cluster token");
    assert_eq!(std::fs::read_to_string(hosts.home(0).join("setups.txt")).unwrap(), "set-up\n");
    assert_eq!(env.ray_ok(&["get-head-ip", &cfg]).trim(), hosts.ip(0).to_string());

    // Unchanged config: nothing runs again and Ray is not restarted.
    let again = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(again.contains("already up to date"), "{again}");
    assert_eq!(std::fs::read_to_string(hosts.home(0).join("setups.txt")).unwrap(), "set-up\n");

    let script = write(&env, "job.py", SCRIPT);
    let out = env.ray_ok(&["submit", &cfg, &script]);
    let ran_on = out.lines().find_map(|l| l.strip_prefix("ran on: ")).unwrap_or_else(|| panic!("no result: {out}"));
    let workers: Vec<String> = hosts.ips()[1..].iter().map(|ip| ip.to_string()).collect();
    assert!(ran_on.split(' ').any(|ip| workers.contains(&ip.to_string())), "a worker on a free address ran tasks: {ran_on}");
    let worker_ips = env.ray_ok(&["get-worker-ips", &cfg]);
    assert!(!worker_ips.trim().is_empty(), "the provider lists the worker: {worker_ips}");
    let log = std::fs::read_dir(hosts.ray_tmpdir(0).join("ray/session_latest/logs"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("updater-"));
    assert!(log, "each worker's set-up has its own log on the head");

    let exec = env.ray_ok(&["exec", &cfg, "echo $RAY_NODE_IP_ADDRESS"]);
    assert!(exec.contains(&hosts.ip(0).to_string()), "{exec}");

    // Files both ways, and the head's autoscaler log from here.
    let local = write(&env, "data.txt", "payload");
    env.ray_ok(&["rsync-up", &cfg, &local, "~/data/"]);
    assert_eq!(std::fs::read_to_string(hosts.home(0).join("data/data.txt")).unwrap(), "payload");
    let back = env.tmpdir().join("back.txt");
    env.ray_ok(&["rsync-down", &cfg, "~/data/data.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "payload");
    let log = env.ray_ok(&["monitor", &cfg, "--lines", "2000", "--no-follow"]);
    assert!(log.contains("node(s) of type local.cluster.node"), "the head's autoscaler log: {log}");

    env.ray_ok(&["down", &cfg, "--yes"]);
    for i in 0..hosts.len() {
        assert!(
            wait_until(Duration::from_secs(20), || hosts.live_ray_processes(i).is_empty()),
            "Ray processes left on {}: {:?}",
            hosts.ip(i),
            hosts.live_ray_processes(i)
        );
    }
    env.ray_ok(&["down", &cfg, "--yes"]);
}

#[test]
fn an_unreachable_head_fails_naming_the_host_and_down_cleans_up() {
    let mut hosts = SshHosts::start(2);
    let env = {
        let mut e = RayEnv::new();
        e.set("AUTOSCALER_NODE_START_WAIT_S", "2");
        e
    };
    hosts.stop(0);
    let cfg = write(&env, "cluster.yaml", &cluster_yaml(&hosts, ""));
    let out = env.ray(&["up", &cfg, "--yes"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains(&hosts.ip(0).to_string()) && err.contains("waiting for SSH"), "{err}");
    assert!(err.contains("Connection refused") || err.contains("cannot reach"), "{err}");
    // The head was taken; `ray down` gives it back, and a second `ray up` works.
    hosts.restart(0);
    env.ray_ok(&["down", &cfg, "--yes"]);
    env.ray_ok(&["up", &cfg, "--yes"]);
    env.ray_ok(&["down", &cfg, "--yes"]);
}

#[test]
fn a_failing_setup_command_stops_there_and_the_next_up_resumes() {
    let hosts = SshHosts::start(1);
    let env = RayEnv::new();
    let bad = cluster_yaml(&hosts, "setup_commands: [\"echo step-one\", \"echo no such package >&2; exit 3\", \"touch ~/never\"]\n");
    let cfg = write(&env, "cluster.yaml", &bad);
    let out = env.ray(&["up", &cfg, "--yes"]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("setup command 2/3") && err.contains("no such package"), "{err}");
    assert!(!hosts.home(0).join("never").exists(), "nothing after the failing command ran");
    assert!(hosts.live_ray_processes(0).is_empty(), "Ray was not started");
    let good = cluster_yaml(&hosts, "setup_commands: [\"echo step-one\", \"touch ~/fixed\"]\n");
    std::fs::write(&cfg, good).unwrap();
    let out = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(out.contains("updated") || out.contains("set up"), "{out}");
    assert!(hosts.home(0).join("fixed").exists());
    assert!(!hosts.live_ray_processes(0).is_empty(), "Ray runs on the head now");
    env.ray_ok(&["down", &cfg, "--yes"]);
    assert!(wait_until(Duration::from_secs(20), || hosts.live_ray_processes(0).is_empty()));
}

#[test]
fn an_unreachable_worker_is_reported_as_update_failed() {
    let mut hosts = SshHosts::start(2);
    let env = RayEnv::new();
    let cfg = write(&env, "cluster.yaml", &cluster_yaml(&hosts, ""));
    env.ray_ok(&["up", &cfg, "--yes"]);
    hosts.stop(1);
    // Demand for more CPUs than the head has: the autoscaler takes the worker.
    let demand = write(&env, "demand.py", "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init(address='auto')\nrequest_resources(num_cpus=2)\n");
    env.ray_ok(&["submit", &cfg, &demand]);
    let worker = hosts.ip(1).to_string();
    let mut status = String::new();
    let seen = wait_until(Duration::from_secs(60), || {
        status = String::from_utf8_lossy(&env.ray(&["exec", &cfg, "ray status"]).stdout).into_owned();
        status.contains("UpdateFailed") && status.contains(&worker)
    });
    assert!(seen, "ray status shows the failed set-up naming the host:\n{status}");
    assert!(status.contains("waiting for SSH"), "and why: {status}");
    env.ray_ok(&["down", &cfg, "--yes"]);
}

#[test]
fn a_changed_config_updates_the_head_and_the_workers_in_place() {
    let hosts = SshHosts::start(2);
    let env = RayEnv::new();
    let yaml = |v: &str| {
        cluster_yaml(&hosts, &format!("worker_setup_commands: [\"echo {v} >> ~/worker-setups.txt\"]\n")).replace("min_workers: 0", "min_workers: 1")
    };
    let cfg = write(&env, "cluster.yaml", &yaml("v1"));
    env.ray_ok(&["up", &cfg, "--yes"]);
    let setups = hosts.home(1).join("worker-setups.txt");
    let read = || std::fs::read_to_string(&setups).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(30), || read() == "v1\n"), "min_workers: the worker is set up once: {:?}", read());
    let workers_before = env.ray_ok(&["get-worker-ips", &cfg]);
    assert_eq!(workers_before.trim(), hosts.ip(1).to_string());
    let alive = "python -c 'import ray; ray.init(address=\"auto\"); print(\"alive:\", sum(n[\"Alive\"] for n in ray.nodes()))'";
    let joined = wait_until(Duration::from_secs(30), || {
        String::from_utf8_lossy(&env.ray(&["exec", &cfg, alive]).stdout).contains("alive: 2")
    });
    assert!(joined, "the worker joined the head");

    // New worker setup commands: `ray up` updates the head, whose autoscaler then
    // sets the same worker up again (nothing is replaced: its machine is the same).
    std::fs::write(&cfg, yaml("v2")).unwrap();
    let out = env.ray_ok(&["up", &cfg, "--yes"]);
    assert!(out.contains("the config changed"), "{out}");
    assert!(
        wait_until(Duration::from_secs(60), || read() == "v1\nv2\n"),
        "the worker was updated in place: {:?}\n{}",
        read(),
        head_logs(&hosts)
    );
    let joined = wait_until(Duration::from_secs(30), || {
        String::from_utf8_lossy(&env.ray(&["exec", &cfg, alive]).stdout).contains("alive: 2")
    });
    assert!(joined, "the updated worker joined the restarted head");
    env.ray_ok(&["down", &cfg, "--yes"]);
    for i in 0..hosts.len() {
        assert!(wait_until(Duration::from_secs(20), || hosts.live_ray_processes(i).is_empty()), "left on {}", hosts.ip(i));
    }
}

#[test]
fn ctrl_c_during_up_forgets_nothing_and_down_cleans_it() {
    let hosts = SshHosts::start(1);
    let env = RayEnv::new();
    let cfg = write(
        &env,
        "cluster.yaml",
        &cluster_yaml(
            &hosts,
            "head_setup_commands: [\"touch ~/setting-up; sleep 3; touch ~/went-on\"]\n",
        ),
    );
    let mut child = env
        .command(&["up", &cfg, "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || hosts
            .home(0)
            .join("setting-up")
            .exists()),
        "the setup began"
    );
    ray_common::process::signal(child.id(), libc::SIGINT);
    let status = child.wait().unwrap();
    assert!(!status.success(), "interrupted");
    // The command on the node stopped with the ssh session (it has a terminal,
    // which hangs up), instead of running on unseen.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !hosts.home(0).join("went-on").exists(),
        "the setup command went on after Ctrl-C"
    );
    // The head was recorded as taken before anything ran on it: `ray down` finds it.
    let out = env.ray_ok(&["down", &cfg, "--yes"]);
    assert!(out.contains("Terminating the head node"), "{out}");
    assert!(hosts.live_ray_processes(0).is_empty());
    // And the address is free for the next `ray up`.
    std::fs::write(&cfg, cluster_yaml(&hosts, "")).unwrap();
    env.ray_ok(&["up", &cfg, "--yes"]);
    env.ray_ok(&["down", &cfg, "--yes"]);
}

#[test]
fn attach_opens_a_shell_on_the_head() {
    use std::io::Write as _;
    let hosts = SshHosts::start(1);
    let env = RayEnv::new();
    let cfg = write(&env, "cluster.yaml", &cluster_yaml(&hosts, "head_start_ray_commands: []\n"));
    env.ray_ok(&["up", &cfg, "--yes"]);
    let mut child = env
        .command(&["attach", &cfg])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"echo attached-to-$RAY_NODE_IP_ADDRESS\nexit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(all.contains(&format!("attached-to-{}", hosts.ip(0))), "{all}");
    env.ray_ok(&["down", &cfg, "--yes"]);
}
