//! Head-node benchmark (not a test): prints
//!   1. wall time of `ray start --head` until the GCS answers, and until the command returns;
//!   2. summed RSS of the idle head's processes;
//!   3. GCS CPU use while 2,000 simulated raylets each report once a second (and are
//!      health-checked), with token auth on and with it off;
//!   4. GCS restart: kill -9 of the GCS under that load, until the restarted GCS
//!      (started again by its supervisor, tables read back from the redb file)
//!      answers, and until every simulated raylet has reported to it again.
//!
//! Run: `cargo bench -p ray-tests --bench head` (after `pip install .`; uses `.venv/bin/ray`
//! or `$RAY_BIN`). Set `BENCH_NODES` / `BENCH_SECONDS` to change the load.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ray_common::gcs_client::GcsClient;
use ray_common::rpc::Security;
use ray_proto::rpc::{NodeInfo, RegisterNodeRequest, ResourceReport};
use ray_tests::*;
use tokio_stream::wrappers::IntervalStream;
use tokio_stream::StreamExt;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn security_for(env: &RayEnv, auth: bool) -> Security {
    let token = (auth).then(|| env.token());
    // Build a Security the same way clients do, from explicit values.
    // SAFETY: the benchmark is single-threaded while it sets these.
    unsafe {
        match &token {
            Some(t) => {
                std::env::set_var("RAY_AUTH_TOKEN", t);
                std::env::remove_var("RAY_AUTH_MODE");
            }
            None => {
                std::env::remove_var("RAY_AUTH_TOKEN");
                std::env::set_var("RAY_AUTH_MODE", "disabled");
            }
        }
    }
    Security::from_env().expect("security")
}

fn start_time() {
    let mut to_gcs = Vec::new();
    let mut to_return = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for _ in 0..7 {
        let env = RayEnv::new();
        env.ray_ok(&["get-auth-token", "--generate"]);
        let security = security_for(&env, true);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        let mut child = env
            .command(&["start", "--head", "--port", &port.to_string(), "--node-ip-address", "127.0.0.1", "--num-cpus", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let answered = rt.block_on(async {
            loop {
                if GcsClient::connect(&addr, &security, Duration::from_millis(200)).await.is_ok() {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        });
        child.wait().unwrap();
        to_return.push(t0.elapsed());
        to_gcs.push(answered);
    }
    println!("ray start --head, until the GCS answers:   median {:>7.1} ms (7 runs)", median(to_gcs).as_secs_f64() * 1e3);
    println!("ray start --head, until the command returns (GCS + raylet registered): median {:>7.1} ms", median(to_return).as_secs_f64() * 1e3);
}

fn idle_rss() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    let mut total = 0;
    for p in env.live_processes() {
        let rss = ray_common::process::rss_bytes(p.pid).unwrap_or(0);
        println!("  {:<12} pid {:>7}  RSS {:>6.1} MB", p.name, p.pid, rss as f64 / 1e6);
        total += rss;
    }
    println!("idle head, summed RSS: {:.1} MB", total as f64 / 1e6);
}

async fn simulate_raylets(gcs: &str, security: &Security, nodes: usize, secs: u64, gcs_pid: u32) -> f64 {
    // One health server answers for every simulated node.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_port = listener.local_addr().unwrap().port();
    let server = security.server_builder().unwrap().add_service(health);
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));

    let mut tasks = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(nodes + 1));
    for i in 0..nodes {
        let gcs = gcs.to_string();
        let security = security.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            // Each simulated raylet has its own connection, as real ones do.
            let client = GcsClient::lazy(&gcs, &security, Duration::from_secs(30)).unwrap();
            let node_id = ray_common::NodeId::random().to_string();
            let total: std::collections::HashMap<String, f64> = [("CPU".to_string(), 8.0), ("memory".to_string(), 32e9)].into();
            let info = NodeInfo {
                node_id: node_id.clone(),
                node_manager_address: "127.0.0.1".into(),
                node_manager_port: u32::from(health_port),
                resources_total: total.clone(),
                ..Default::default()
            };
            // Real raylets retry a failed registration; so do these.
            let mut tries = 0;
            while let Err(e) = client.nodes.clone().register_node(RegisterNodeRequest { node: Some(info.clone()) }).await {
                tries += 1;
                assert!(tries < 20, "registration keeps failing: {e}");
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            ready.wait().await;
            // Spread the first report over the first second.
            tokio::time::sleep(Duration::from_millis((i as u64 * 997) % 1000)).await;
            let mut seq = 0u64;
            let reports = IntervalStream::new(tokio::time::interval(Duration::from_secs(1))).map(move |_| {
                seq += 1;
                let busy = (seq % 10 == 0) as u8 as f64;
                ResourceReport {
                    node_id: node_id.clone(),
                    resources_total: total.clone(),
                    resources_available: [("CPU".to_string(), 8.0 - busy), ("memory".to_string(), 32e9)].into(),
                    seq,
                    idle_duration_ms: if busy > 0.0 { 0 } else { seq * 1000 },
                    ..Default::default()
                }
            });
            let _ = client.resources.clone().report_resources(reports).await;
        }));
    }
    ready.wait().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks0 = ray_common::process::cpu_ticks(gcs_pid).unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks = ray_common::process::cpu_ticks(gcs_pid).unwrap() - ticks0;
    let wall = t0.elapsed().as_secs_f64();
    for t in tasks {
        t.abort();
    }
    ticks as f64 / ray_common::process::clock_ticks_per_second() as f64 / wall * 100.0
}

fn gcs_cpu(auth: bool, nodes: usize, secs: u64) {
    let mut env = RayEnv::new();
    // Ray's default health-check settings, not the fast test ones.
    for k in ["RAY_health_check_initial_delay_ms", "RAY_health_check_period_ms", "RAY_health_check_timeout_ms", "RAY_health_check_failure_threshold"] {
        env.unset(k);
    }
    if !auth {
        env.set("RAY_AUTH_MODE", "disabled");
    }
    let gcs = env.start_head(&["--num-cpus", "1"]);
    let gcs_pid = env.live_processes().into_iter().find(|p| p.name == "gcs_server").unwrap().pid;
    let security = security_for(&env, auth);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cpu = rt.block_on(simulate_raylets(&gcs, &security, nodes, secs, gcs_pid));
    let rss = ray_common::process::rss_bytes(gcs_pid).unwrap_or(0);
    println!(
        "GCS with {nodes} simulated raylets reporting every second, auth {}: {cpu:.1}% of one core ({secs} s window), GCS RSS {:.1} MB",
        if auth { "on " } else { "off" },
        rss as f64 / 1e6
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// One simulated raylet that keeps reporting across GCS restarts: each new
/// stream starts with a report at once, as a real raylet's does.
async fn reconnecting_raylet(client: GcsClient, node_id: String) {
    let total: std::collections::HashMap<String, f64> = [("CPU".to_string(), 8.0)].into();
    let mut seq = 0u64;
    loop {
        let (node, total2) = (node_id.clone(), total.clone());
        let first = seq;
        let reports = tokio_stream::iter(0..1)
            .chain(IntervalStream::new(tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1))).map(|_| 0))
            .map({
                let mut i = 0u64;
                move |_| {
                    i += 1;
                    ResourceReport {
                        node_id: node.clone(),
                        resources_total: total2.clone(),
                        resources_available: total2.clone(),
                        seq: first + i,
                        idle_duration_ms: 1000,
                        ..Default::default()
                    }
                }
            });
        let _ = client.resources.clone().report_resources(reports).await;
        seq += 1_000_000;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gcs_restart(nodes: usize) {
    let mut env = RayEnv::new();
    // Ray's default health-check settings: the test ones (1 s timeouts) mark
    // thousands of simulated raylets behind one health server dead.
    for k in ["RAY_health_check_initial_delay_ms", "RAY_health_check_period_ms", "RAY_health_check_timeout_ms", "RAY_health_check_failure_threshold"] {
        env.unset(k);
    }
    let gcs = env.start_head(&["--num-cpus", "1"]);
    let gcs_pid = env.live_processes().into_iter().find(|p| p.name == "gcs_server").unwrap().pid;
    let security = security_for(&env, true);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health_port = listener.local_addr().unwrap().port();
        tokio::spawn(security.server_builder().unwrap().add_service(health).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        let mut tasks = Vec::new();
        for _ in 0..nodes {
            let client = GcsClient::lazy(&gcs, &security, Duration::from_secs(30)).unwrap();
            let node_id = ray_common::NodeId::random().to_string();
            let info = NodeInfo {
                node_id: node_id.clone(),
                node_manager_address: "127.0.0.1".into(),
                node_manager_port: u32::from(health_port),
                resources_total: [("CPU".to_string(), 8.0)].into(),
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                let mut tries = 0;
                while client.nodes.clone().register_node(RegisterNodeRequest { node: Some(info.clone()) }).await.is_err() {
                    tries += 1;
                    assert!(tries < 20, "registration keeps failing");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                reconnecting_raylet(client, node_id).await;
            }));
        }
        let probe = GcsClient::lazy(&gcs, &security, Duration::from_secs(30)).unwrap();
        let reporting = |usage: Vec<ray_proto::rpc::NodeResources>| usage.iter().filter(|n| n.idle_duration_ms == 1000).count();
        let registering = Instant::now();
        loop {
            let usage = probe.resources.clone().get_all_resource_usage(ray_proto::rpc::GetAllResourceUsageRequest {}).await.unwrap().into_inner().nodes;
            if reporting(usage) >= nodes {
                break;
            }
            assert!(registering.elapsed() < Duration::from_secs(120), "the {nodes} simulated raylets did not all register and report");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = Instant::now();
        assert!(ray_common::process::signal(gcs_pid, libc::SIGKILL));
        let mut answered = None;
        loop {
            let call = tokio::time::timeout(
                Duration::from_millis(500),
                probe.resources.clone().get_all_resource_usage(ray_proto::rpc::GetAllResourceUsageRequest {}),
            )
            .await;
            if let Ok(Ok(r)) = call {
                answered.get_or_insert(t0.elapsed());
                let usage = r.into_inner().nodes;
                if usage.len() >= nodes && reporting(usage) >= nodes {
                    break;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "the raylets did not all report to the restarted GCS");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all = t0.elapsed();
        let new_pid = env.live_processes().into_iter().find(|p| p.name == "gcs_server").map(|p| p.pid);
        println!(
            "GCS restart with {nodes} simulated raylets: kill -9 to the restarted GCS answering {:.0} ms (its {nodes} nodes restored, alive); \
             to every raylet reporting to it again {:.0} ms (pid {gcs_pid} -> {new_pid:?})",
            answered.unwrap_or_default().as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
        for t in tasks {
            t.abort();
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    let nodes = std::env::var("BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let secs = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    println!("ray executable: {}", ray_bin().display());
    if std::env::var("BENCH_ONLY").as_deref() == Ok("gcs_restart") {
        gcs_restart(nodes);
        return;
    }
    start_time();
    idle_rss();
    gcs_cpu(true, nodes, secs);
    gcs_cpu(false, nodes, secs);
    gcs_restart(nodes);
}
