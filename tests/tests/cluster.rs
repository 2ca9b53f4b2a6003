//! The runtime foundation, end to end: real GCS and raylet processes on loopback.

use std::time::{Duration, Instant};

use ray_tests::*;

#[test]
fn head_and_two_workers_report_three_nodes_with_summed_resources() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1", "--resources", r#"{"A": 1}"#]);
    env.start_worker(&["--num-cpus", "2", "--resources", r#"{"A": 2.5}"#]);
    env.start_worker(&["--num-cpus", "3", "--num-gpus", "1"]);
    let status = env.status();
    assert_eq!(status_node_count(&status), 3, "{status}");
    assert!(status.contains(" 0.0/6.0 CPU\n"), "{status}");
    assert!(status.contains(" 0.0/3.5 A\n"), "{status}");
    assert!(status.contains(" 0.0/1.0 GPU\n"), "{status}");
    assert!(status.starts_with("======== Autoscaler status: "), "{status}");
    // Three raylets on one machine, each with its own log and port.
    let logs: Vec<String> = std::fs::read_dir(env.logs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in ["gcs_server.out", "raylet.out", "raylet.1.out", "raylet.2.out"] {
        assert!(logs.contains(&f.to_string()), "missing {f} in {logs:?}");
    }
    assert!(env.root().join("session_latest").is_symlink());
}

#[test]
fn killed_raylet_is_marked_dead_within_the_health_check_window() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "2"]);
    let head_raylets: Vec<_> = env.processes().into_iter().filter(|p| p.name == "raylet").collect();
    assert_eq!(head_raylets.len(), 2);
    // The worker is the raylet started last.
    let worker = head_raylets.iter().max_by_key(|p| p.start_ticks).unwrap();
    let node_id = raylet_node_id(worker.pid).expect("node id of the worker raylet");
    assert!(env.status().contains(" 0.0/3.0 CPU\n"));

    let killed_at = Instant::now();
    assert!(ray_common::process::signal(worker.pid, libc::SIGKILL));
    // initial delay 200 ms + 3 failures x 200 ms period; failures are fast
    // (connection refused), so the window is about 0.8 s.
    let window = Duration::from_millis(200 + 3 * 200);
    let mut last = String::new();
    let dead = wait_until(window + Duration::from_secs(5), || {
        last = env.status();
        last.contains(&format!("node_{node_id}: NodeTerminated"))
    });
    let took = killed_at.elapsed();
    assert!(dead, "node never marked dead:\n{last}");
    assert!(last.contains("health check failed"), "{last}");
    assert!(last.contains(" 0.0/1.0 CPU\n"), "dead node's CPUs must leave the totals:\n{last}");
    eprintln!("marked dead after {took:?} (window {window:?})");
}

#[test]
fn a_killed_gcs_comes_back_on_the_port_it_took_and_keeps_its_nodes() {
    let env = RayEnv::new();
    // `--port 0`: the GCS picks its port; the restarted one must take the same.
    let addr = env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "2"]);
    let gcs = env.live_processes().into_iter().find(|p| p.name == "gcs_server").expect("gcs_server");
    let before: Vec<String> = env.node_table().into_iter().map(|n| n.node_id).collect();
    assert_eq!(before.len(), 2);
    assert!(ray_common::process::signal(gcs.pid, libc::SIGKILL));
    let mut status = String::new();
    let back = wait_until(Duration::from_secs(20), || {
        let out = env.ray(&["status", "--address", &addr]);
        status = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && status.contains(" 0.0/3.0 CPU\n")
    });
    assert!(back, "the restarted GCS does not answer at {addr}:\n{status}");
    let again = env.live_processes().into_iter().find(|p| p.name == "gcs_server").expect("a new gcs_server");
    assert_ne!(again.pid, gcs.pid, "the GCS was not restarted");
    assert_eq!(env.gcs_address(), addr, "the recorded address moved");
    let nodes = env.node_table();
    assert_eq!(nodes.len(), 2, "the same two nodes, no new registrations: {nodes:?}");
    for n in nodes {
        assert!(before.contains(&n.node_id), "{n:?}");
        assert_ne!(n.state, ray_proto::rpc::NodeState::Dead as i32, "a node was marked dead: {n:?}");
    }
    let out = env.ray_ok(&["stop"]);
    assert!(out.contains("Stopped all"), "{out}");
    assert!(env.live_processes().is_empty(), "ray stop left the restarted GCS or its supervisor behind");
}

#[test]
fn ray_stop_leaves_no_process_behind() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "1"]);
    let pids: Vec<_> = env.live_processes();
    let names: Vec<&str> = pids.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "raylet").count(), 2, "{pids:?}");
    assert!(names.contains(&"gcs_server") && names.contains(&"dashboard"), "{pids:?}");
    let out = env.ray_ok(&["stop"]);
    assert!(out.contains(&format!("Stopped all {} Ray processes.", pids.len())), "{out}");
    for p in &pids {
        assert!(!ray_common::process::is_same_process_alive(p.pid, p.start_ticks), "{} (pid {}) survived", p.name, p.pid);
    }
    assert!(!env.root().join("ray_current_cluster").exists());
    assert!(env.ray_ok(&["stop"]).contains("Did not find any active Ray processes."));
    // Stopping by SIGTERM unregisters the nodes: a new head starts cleanly on the same root.
    env.start_head(&["--num-cpus", "1"]);
}

#[test]
fn raylet_that_unregisters_is_reported_as_expected_termination() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "2"]);
    let worker = env.processes().into_iter().filter(|p| p.name == "raylet").max_by_key(|p| p.start_ticks).unwrap();
    ray_common::process::signal(worker.pid, libc::SIGTERM);
    let mut last = String::new();
    assert!(wait_until(Duration::from_secs(10), || {
        last = env.status();
        last.contains("NodeTerminated") && last.contains("received SIGTERM")
    }), "{last}");
}

#[test]
fn joining_an_address_where_nothing_listens_fails_fast_and_cleanly() {
    let env = RayEnv::new();
    // Some token must exist for a joining node; give it one.
    env.ray_ok(&["get-auth-token", "--generate"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let out = env.ray(&["start", "--address", &addr, "--node-ip-address", "127.0.0.1"]);
    let took = start.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "error must name the address: {err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(env.live_processes().is_empty(), "left processes behind: {:?}", env.live_processes());
}

#[test]
fn bad_resource_flags_are_refused_naming_the_flag() {
    let env = RayEnv::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--resources", "{not json"], "--resources"),
        (&["--resources", r#"{"A": -1}"#], "--resources"),
        (&["--resources", r#"{"A": "many"}"#], "--resources"),
        (&["--num-cpus", "-2"], "--num-cpus"),
        (&["--num-cpus", "lots"], "--num-cpus"),
        (&["--num-gpus", "1x"], "--num-gpus"),
        (&["--memory", "-5"], "--memory"),
        (&["--labels", "novalue"], "--labels"),
    ];
    for (flags, name) in cases {
        let mut args = vec!["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"];
        args.extend_from_slice(flags);
        let out = env.ray(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(err.contains(name), "{flags:?}: error must name {name}: {err}");
        assert!(env.live_processes().is_empty(), "{flags:?} left processes behind");
    }
}

#[test]
fn occupied_port_is_refused_naming_the_flag() {
    let env = RayEnv::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let out = env.ray(&["start", "--head", "--port", &port, "--node-ip-address", "127.0.0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--port") && err.contains("in use"), "{err}");
    assert!(env.live_processes().is_empty());
}

#[test]
fn second_head_on_a_running_port_is_refused_naming_the_cluster() {
    let env = RayEnv::new();
    let addr = env.start_head(&["--num-cpus", "1"]);
    let running = env.live_processes().len();
    let port = addr.rsplit_once(':').unwrap().1;
    let session = std::fs::read_link(env.root().join("session_latest")).unwrap();
    let out = env.ray(&["start", "--head", "--port", port, "--node-ip-address", "127.0.0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(session.to_str().unwrap()), "must name the running session: {err}");
    assert_eq!(env.live_processes().len(), running, "the running cluster must be untouched");
}

#[test]
fn worker_flags_that_only_a_head_takes_are_refused() {
    let env = RayEnv::new();
    let out = env.ray(&["start"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--address"));
    let out = env.ray(&["start", "--address", "127.0.0.1:1", "--port", "7000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}

#[test]
fn status_without_a_cluster_says_so() {
    let env = RayEnv::new();
    env.ray_ok(&["get-auth-token", "--generate"]);
    let out = env.ray(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Could not find any running Ray instance"));
}
