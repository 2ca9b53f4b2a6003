//! Security on by default: the cluster token on every entry point, secrets kept out
//! of logs and command lines, optional mutual TLS, and clear refusals of bad settings.

use std::time::Duration;

use ray_proto::rpc::internal_kv_gcs_service_client::InternalKvGcsServiceClient;
use ray_proto::rpc::node_info_gcs_service_client::NodeInfoGcsServiceClient;
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::{
    DrainRayletRequest, GetAllNodeInfoRequest, GetNodeStatsRequest, KvGetRequest, KvPutRequest, NodeInfo,
    NodeState, RegisterNodeRequest,
};
use ray_tests::*;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn plain_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("tcp connect")
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {t}")).unwrap());
    }
    r
}

fn raylet_addresses(env: &RayEnv, token: &str) -> Vec<String> {
    rt().block_on(async {
        let mut c = NodeInfoGcsServiceClient::new(plain_channel(&env.gcs_address()).await);
        let nodes = c.get_all_node_info(with_token(GetAllNodeInfoRequest { state_filter: None }, Some(token))).await.unwrap();
        nodes.into_inner().nodes.iter().map(|n| format!("{}:{}", n.node_manager_address, n.node_manager_port)).collect()
    })
}

#[test]
fn calls_without_the_right_token_are_refused_and_change_nothing() {
    let env = RayEnv::new();
    let gcs = env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "1"]);
    let token = env.token();
    let raylets = raylet_addresses(&env, &token);
    assert_eq!(raylets.len(), 2);
    rt().block_on(async {
        for bad in [None, Some("not-the-token"), Some("")] {
            let ch = plain_channel(&gcs).await;
            let mut nodes = NodeInfoGcsServiceClient::new(ch.clone());
            let fake = NodeInfo {
                node_id: ray_common::NodeId::random().to_string(),
                node_manager_address: "127.0.0.1".into(),
                node_manager_port: 9,
                ..Default::default()
            };
            let e = nodes.register_node(with_token(RegisterNodeRequest { node: Some(fake) }, bad)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
            assert!(e.message().contains("RAY_AUTH_TOKEN"), "the refusal says where tokens come from: {}", e.message());
            let e = nodes.get_all_node_info(with_token(GetAllNodeInfoRequest { state_filter: None }, bad)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            let mut kv = InternalKvGcsServiceClient::new(ch);
            let put = KvPutRequest { namespace: "t".into(), key: b"k".to_vec(), value: b"v".to_vec(), overwrite: true };
            assert_eq!(kv.put(with_token(put, bad)).await.unwrap_err().code(), tonic::Code::Unauthenticated);
            for r in &raylets {
                let mut nm = NodeManagerServiceClient::new(plain_channel(r).await);
                let drain = DrainRayletRequest { reason: 2, reason_message: "evil".into(), deadline_timestamp_ms: 0 };
                assert_eq!(nm.drain_raylet(with_token(drain, bad)).await.unwrap_err().code(), tonic::Code::Unauthenticated);
            }
        }
        // With the right token: nothing changed.
        let ch = plain_channel(&gcs).await;
        let nodes = NodeInfoGcsServiceClient::new(ch.clone())
            .get_all_node_info(with_token(GetAllNodeInfoRequest { state_filter: None }, Some(&token)))
            .await
            .unwrap()
            .into_inner()
            .nodes;
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.state == NodeState::Alive as i32));
        let v = InternalKvGcsServiceClient::new(ch)
            .get(with_token(KvGetRequest { namespace: "t".into(), key: b"k".to_vec() }, Some(&token)))
            .await
            .unwrap()
            .into_inner()
            .value;
        assert_eq!(v, None);
        for r in &raylets {
            let stats = NodeManagerServiceClient::new(plain_channel(r).await)
                .get_node_stats(with_token(GetNodeStatsRequest {}, Some(&token)))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(stats.state, NodeState::Alive as i32, "a refused drain must not drain");
        }
    });
    // ray status, with the token from ~/.ray/auth_token, works.
    assert_eq!(status_node_count(&env.status()), 2);
}

#[test]
fn node_with_the_wrong_token_cannot_join() {
    let mut env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    let before = env.live_processes().len();
    env.set("RAY_AUTH_TOKEN", "0123456789abcdef-wrong");
    let addr = env.gcs_address();
    let out = env.ray(&["start", "--address", &addr, "--node-ip-address", "127.0.0.1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
    assert!(!err.contains("0123456789abcdef-wrong"), "the error must not echo the token: {err}");
    assert_eq!(env.live_processes().len(), before, "no raylet may be left behind");
    env.unset("RAY_AUTH_TOKEN");
    assert_eq!(status_node_count(&env.status()), 1);
}

#[test]
fn the_token_never_shows_in_logs_status_or_process_listings() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "1"]);
    // Produce some refused calls and log lines.
    let _ = env.ray(&["status"]);
    let token = env.token();
    assert_eq!(token.len(), 64);
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().expect("ps");
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&token), "token visible in ps");
    for p in env.live_processes() {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&token), "token on {}'s command line", p.name);
    }
    let logs = env.all_logs();
    assert!(!logs.is_empty());
    assert!(!logs.contains(&token), "token written to a log");
    assert!(!env.status().contains(&token));
}

#[test]
fn disabled_mode_works_and_warns() {
    let mut env = RayEnv::new();
    env.set("RAY_AUTH_MODE", "disabled");
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication is OFF"));
    assert!(!env.home().join(".ray/auth_token").exists(), "disabled mode creates no token");
    assert!(env.all_logs().contains("authentication is OFF"), "every daemon warns in its log");
    assert_eq!(status_node_count(&env.status()), 1);
    let gcs = env.gcs_address();
    rt().block_on(async {
        let n = NodeInfoGcsServiceClient::new(plain_channel(&gcs).await)
            .get_all_node_info(GetAllNodeInfoRequest { state_filter: None })
            .await
            .expect("no token needed when disabled");
        assert_eq!(n.into_inner().nodes.len(), 1);
    });
}

#[test]
fn bad_token_settings_are_refused_naming_the_variable_and_path() {
    let mut env = RayEnv::new();
    let dir = env.tmpdir().to_path_buf();
    let empty = dir.join("empty_token");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.join("missing_token");
    let a_dir = dir.join("a_folder");
    std::fs::create_dir(&a_dir).unwrap();
    for (path, words) in [(&missing, "does not exist"), (&empty, "empty"), (&a_dir, "cannot read")] {
        env.set("RAY_AUTH_TOKEN_PATH", path.to_str().unwrap());
        let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path:?} accepted");
        assert!(err.contains("RAY_AUTH_TOKEN_PATH") || words == "cannot read", "{err}");
        assert!(err.contains(path.to_str().unwrap()) && err.contains(words), "{err}");
        assert!(env.live_processes().is_empty());
        assert!(!env.home().join(".ray/auth_token").exists(), "never falls back to creating a default token");
    }
    env.unset("RAY_AUTH_TOKEN_PATH");
    env.set("RAY_AUTH_MODE", "sometimes");
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("RAY_AUTH_MODE") && err.contains("token, disabled"), "{err}");
}

#[test]
fn get_auth_token_prints_or_generates() {
    let env = RayEnv::new();
    let out = env.ray(&["get-auth-token"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--generate"));
    let token = env.ray_ok(&["get-auth-token", "--generate"]);
    assert_eq!(token.len(), 64);
    assert_eq!(token, env.token());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.home().join(".ray/auth_token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(env.ray_ok(&["get-auth-token", "--generate"]), token, "an existing token is kept");
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    other_ca: std::path::PathBuf,
}

fn make_pki() -> Pki {
    use rcgen::{CertificateParams, IsCa, BasicConstraints, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.pem"), ca.pem()).unwrap();
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(p("other_ca.pem"), other.pem()).unwrap();
    Pki { ca: p("ca.pem"), cert: p("cert.pem"), key: p("key.pem"), other_ca: p("other_ca.pem"), _dir: dir }
}

#[test]
fn tls_cluster_serves_clients_with_the_ca_and_refuses_others() {
    let pki = make_pki();
    let mut env = RayEnv::new();
    env.set("RAY_USE_TLS", "1");
    env.set("RAY_TLS_SERVER_CERT", pki.cert.to_str().unwrap());
    env.set("RAY_TLS_SERVER_KEY", pki.key.to_str().unwrap());
    env.set("RAY_TLS_CA_CERT", pki.ca.to_str().unwrap());
    let gcs = env.start_head(&["--num-cpus", "1"]);
    env.start_worker(&["--num-cpus", "1"]);
    assert_eq!(status_node_count(&env.status()), 2, "clients with the CA work");

    // A plaintext client fails cleanly.
    let token = env.token();
    rt().block_on(async {
        let r = async {
            let ch = Channel::from_shared(format!("http://{gcs}")).unwrap().connect().await?;
            NodeInfoGcsServiceClient::new(ch)
                .get_all_node_info(with_token(GetAllNodeInfoRequest { state_filter: None }, Some(&token)))
                .await
                .map_err(Into::into)
                .map(|_| ())
        };
        let r: Result<(), Box<dyn std::error::Error>> = tokio::time::timeout(Duration::from_secs(5), r).await.unwrap();
        assert!(r.is_err(), "a plaintext call must fail");
    });
    // A client that trusts another CA fails, and so does `ray status` with it.
    env.set("RAY_TLS_CA_CERT", pki.other_ca.to_str().unwrap());
    let out = env.ray(&["status"]);
    assert!(!out.status.success(), "a client without the cluster's CA must fail");
    // TLS off on the client: fails too.
    env.set("RAY_USE_TLS", "0");
    assert!(!env.ray(&["status"]).status.success());
    // The daemons stayed up.
    env.set("RAY_USE_TLS", "1");
    env.set("RAY_TLS_CA_CERT", pki.ca.to_str().unwrap());
    assert_eq!(status_node_count(&env.status()), 2);
}

#[test]
fn tls_variables_pointing_at_bad_files_are_named() {
    let pki = make_pki();
    let mut env = RayEnv::new();
    env.set("RAY_USE_TLS", "1");
    env.set("RAY_TLS_SERVER_CERT", pki.cert.to_str().unwrap());
    env.set("RAY_TLS_SERVER_KEY", pki.key.to_str().unwrap());
    env.set("RAY_TLS_CA_CERT", "/nonexistent/ca.pem");
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("RAY_TLS_CA_CERT") && err.contains("/nonexistent/ca.pem"), "{err}");
    let garbage = env.tmpdir().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate").unwrap();
    env.set("RAY_TLS_CA_CERT", pki.ca.to_str().unwrap());
    env.set("RAY_TLS_SERVER_CERT", garbage.to_str().unwrap());
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("RAY_TLS_SERVER_CERT") && err.contains("not a valid PEM"), "{err}");
    env.set("RAY_TLS_SERVER_CERT", pki.cert.to_str().unwrap());
    env.unset("RAY_TLS_SERVER_KEY");
    let out = env.ray(&["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RAY_TLS_SERVER_KEY is not set"));
    assert!(env.live_processes().is_empty());
}
