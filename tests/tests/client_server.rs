//! `ray start --head` runs the Ray Client server (`python -m
//! ray.util.client.server`, with the Python next to the `ray` executable) on
//! `--ray-client-server-port`, and `ray stop` stops it. What Ray Client does
//! over that port is tested from Python (python/tests/test_ray_client.py).

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use ray_tests::*;

/// The first message the server sends: one chunk (u32 length, flags byte) of JSON.
fn read_hello(port: u16) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("chunk header");
    assert_eq!(head[4], 0, "a single chunk");
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    assert!(len < 4096, "{len}");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("hello");
    serde_json::from_slice(&body).expect("JSON hello")
}

#[test]
fn ray_start_runs_the_ray_client_server_and_ray_stop_stops_it() {
    let env = RayEnv::new();
    let port = free_port();
    let flag = format!("--ray-client-server-port={port}");
    let out = env.ray_ok(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", &flag]);
    assert!(out.contains(&format!("ray.init(\"ray://127.0.0.1:{port}\")")), "{out}");
    let server = env.live_processes().into_iter().find(|p| p.name == "ray_client_server").expect("a ray_client_server process");
    let cmdline = ray_common::process::cmdline(server.pid).unwrap_or_default().join(" ");
    assert!(cmdline.contains("ray.util.client.server") && cmdline.contains(&format!("--port={port}")), "{cmdline}");
    assert!(!cmdline.contains(&env.token()), "the token stays off the command line");

    assert!(wait_until(Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok()), "{}", env.all_logs());
    let hello = read_hello(port);
    assert_eq!(hello["server"], "ray-client", "{hello}");
    assert_eq!(hello["auth"], "token", "{hello}");
    assert!(!hello.to_string().contains(&env.token()));

    let running = env.live_processes().len();
    let out = env.ray_ok(&["stop"]);
    assert!(out.contains(&format!("Stopped all {running} Ray processes.")), "{out}");
    assert!(!ray_common::process::is_same_process_alive(server.pid, server.start_ticks), "the server survived ray stop");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens any more");
}

#[test]
fn a_taken_port_is_a_warning_and_the_head_starts_without_it() {
    let env = RayEnv::new();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let flag = format!("--ray-client-server-port={port}");
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", &flag]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Ray Client server was not started") && err.contains(&port.to_string()), "{err}");
    let names: Vec<String> = env.live_processes().into_iter().map(|p| p.name).collect();
    assert!(!names.contains(&"ray_client_server".to_string()), "{names:?}");
    for running in ["gcs_server", "raylet", "dashboard"] {
        assert!(names.contains(&running.to_string()), "the head runs without it: {names:?}");
    }
}
