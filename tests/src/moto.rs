//! A real moto server (PyPI `moto[server]`, installed by the test command) on
//! loopback, standing in for EC2 and IAM, and the fault-injecting proxy
//! (`tests/fault_proxy.py`) that answers with the errors moto cannot produce.
//!
//! ```no_run
//! let moto = ray_tests::moto::Moto::start();
//! let proxy = moto.proxy(); // rules in proxy.rules, one line per request in proxy.log
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    port: u16,
    dir: tempfile::TempDir,
}

fn venv_bin(name: &str) -> PathBuf {
    let ray = crate::ray_bin();
    let p = ray.parent().map(|d| d.join(name)).unwrap_or_else(|| PathBuf::from(name));
    assert!(p.exists(), "{} is missing: the test command installs moto[server] into the venv (scripts/test.sh)", p.display());
    p
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let up = crate::wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    if !up {
        let _ = child.kill();
        panic!("{what} did not listen on 127.0.0.1:{port} within 60 s");
    }
}

impl Moto {
    /// Starts a fresh server (empty account, moto's default VPC and images).
    pub fn start() -> Self {
        let port = crate::free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
        wait_port(port, "moto_server", &mut child);
        Self { child, endpoint: format!("http://127.0.0.1:{port}"), port, dir }
    }

    /// The environment that points an AWS SDK at this server with dummy
    /// credentials (and no instance metadata service to wait for).
    pub fn env(&self) -> Vec<(String, String)> {
        env_for(&self.endpoint)
    }

    /// A fault-injecting proxy in front of this server.
    pub fn proxy(&self) -> FaultProxy {
        let port = crate::free_port();
        let rules = self.dir.path().join(format!("rules-{port}.json"));
        let log = self.dir.path().join(format!("requests-{port}.log"));
        std::fs::write(&rules, "[]").expect("rules");
        std::fs::write(&log, "").expect("log");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fault_proxy.py");
        let mut child = Command::new(venv_bin("python"))
            .arg(&script)
            .args([port.to_string(), format!("127.0.0.1:{}", self.port), rules.display().to_string(), log.display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("the fault proxy starts");
        wait_port(port, "the fault proxy", &mut child);
        FaultProxy { child, endpoint: format!("http://127.0.0.1:{port}"), rules, log }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SDK environment for `endpoint`.
pub fn env_for(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-west-2"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The proxy; stopped when dropped.
pub struct FaultProxy {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    rules: PathBuf,
    log: PathBuf,
}

impl FaultProxy {
    /// Replaces the rules (a JSON list; see `tests/fault_proxy.py`).
    pub fn set_rules(&self, rules: serde_json::Value) {
        std::fs::write(&self.rules, rules.to_string()).expect("rules");
    }

    /// One line per request so far.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
