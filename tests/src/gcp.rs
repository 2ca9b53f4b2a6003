//! The local Compute Engine server (`tests/gcp_emulator/server.py`: Compute v1,
//! IAM service accounts, Resource Manager IAM policy and an OAuth token
//! endpoint) on loopback, standing in for Google Cloud, which has no emulator of
//! its own. Clients reach it through `authorized_user` credentials whose
//! `token_uri` is the server's, exactly as application default credentials
//! would reach Google.
//!
//! ```no_run
//! let gcp = ray_tests::gcp::Gcp::start(&[]);
//! gcp.set_faults(serde_json::json!([{"method": "instances.insert", "status": 403, "reason": "rateLimitExceeded", "times": 2}]));
//! ```

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The project the server holds.
pub const PROJECT: &str = "ray-test-project";
/// The refresh token the server accepts.
pub const REFRESH_TOKEN: &str = "emulator-refresh-token";

/// A running server; stopped when dropped.
pub struct Gcp {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Gcp {
    /// Starts a fresh project (default network, no firewall rules, no service
    /// accounts but Compute's default one); `args` go to the server
    /// (`--subnet us-west1=127.0.5.0/24`, `--no-default-network`, ...).
    pub fn start(args: &[&str]) -> Self {
        let port = crate::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("gcp-emulator.log")).expect("log");
        let python = crate::ray_bin().parent().map(|d| d.join("python")).expect("venv");
        assert!(python.exists(), "{} is missing: the test command makes the venv (scripts/test.sh)", python.display());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gcp_emulator/server.py");
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the GCP emulator starts");
        let up = crate::wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        if !up {
            let _ = child.kill();
            panic!("the GCP emulator did not listen on 127.0.0.1:{port} within 30 s");
        }
        Self { child, endpoint: format!("http://127.0.0.1:{port}"), port, dir }
    }

    /// An `authorized_user` credentials file (application default credentials'
    /// format) whose token exchange goes to this server; `refresh_token` other
    /// than [`REFRESH_TOKEN`] is refused there.
    pub fn credentials_file(&self, refresh_token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("adc-{}.json", refresh_token.len()));
        let body = serde_json::json!({
            "type": "authorized_user", "client_id": "emulator-client", "client_secret": "emulator-secret",
            "refresh_token": refresh_token, "token_uri": format!("{}/token", self.endpoint),
        });
        std::fs::write(&p, body.to_string()).expect("credentials file");
        p
    }

    /// The environment of a process that should reach this server through
    /// application default credentials (and never a metadata server).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GOOGLE_APPLICATION_CREDENTIALS".into(), self.credentials_file(REFRESH_TOKEN).display().to_string()),
            ("GCE_METADATA_HOST".into(), "127.0.0.1:9".into()),
            ("RAY_GCP_ENDPOINT_URL".into(), self.endpoint.clone()),
        ]
    }

    fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("emulator");
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{data}", data.len()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{method} {path}: {head}\n{body}");
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// Everything the server holds (instances with `zoneName`, firewalls,
    /// networks, projectMetadata, serviceAccounts, policy, accountPolicies).
    pub fn state(&self) -> serde_json::Value {
        self.request("GET", "/_emulator/state", None)
    }

    /// One line per API call so far: `<method> <path> <query> -> <status>`.
    pub fn log(&self) -> Vec<String> {
        self.request("GET", "/_emulator/log", None).as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// API calls of `method` (`instances.insert`, ...) so far.
    pub fn calls(&self, method: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| l.starts_with(&format!("{method} "))).collect()
    }

    /// Errors to answer with: `[{"method", "status", "reason", "message", "times", "zone"}]`.
    pub fn set_faults(&self, rules: serde_json::Value) {
        self.request("POST", "/_emulator/faults", Some(&rules));
    }

    /// Zones and machine types without capacity: `[{"zone", "machineType"}]` (`*` for any).
    pub fn set_stockouts(&self, rules: serde_json::Value) {
        self.request("POST", "/_emulator/stockouts", Some(&rules));
    }

    /// vCPU quotas per region: `{"us-west1": 4}`.
    pub fn set_quota(&self, quota: serde_json::Value) {
        self.request("POST", "/_emulator/quota", Some(&quota));
    }

    /// Invalidates every access token handed out.
    pub fn revoke_tokens(&self) {
        self.request("POST", "/_emulator/revoke", None);
    }
}

impl Drop for Gcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
