//! Test harness: runs the installed `ray` executable against throw-away folders
//! (`RAY_TMPDIR`, `HOME`), so every test has its own cluster, token and session
//! files, and nothing leaks into the machine's `/tmp/ray` or `~/.ray`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use ray_common::session::ProcessRecord;

pub mod gcp;
pub mod moto;
pub mod ssh;
pub use ssh::{SSH_USER, SshHosts};

/// Variables of the outer environment a test must not inherit.
const ISOLATED_VARS: &[&str] = &[
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_AUTH_MODE",
    "RAY_USE_TLS",
    "RAY_TLS_SERVER_CERT",
    "RAY_TLS_SERVER_KEY",
    "RAY_TLS_CA_CERT",
    "RAY_ADDRESS",
    "RAY_BACKEND_LOG_LEVEL",
];

/// The `ray` executable under test: `$RAY_BIN`, else the one `pip install .` put in
/// the repository's `.venv` (the README's test command installs it first).
pub fn ray_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RAY_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let p = root.join(".venv/bin/ray");
    assert!(
        p.exists(),
        "the installed `ray` executable is missing at {}: run the README's test command (it runs `pip install .` \
         first) or set RAY_BIN",
        p.display()
    );
    p
}

/// Polls `f` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// One isolated machine-like environment: its own temp root and home folder.
pub struct RayEnv {
    tmp: tempfile::TempDir,
    home: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Default for RayEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl RayEnv {
    /// Fresh folders and fast health checks (200 ms period, 3 failures).
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new().prefix("raytest").tempdir().expect("tempdir");
        let home = tempfile::Builder::new().prefix("rayhome").tempdir().expect("tempdir");
        let vars = vec![
            ("RAY_health_check_initial_delay_ms".to_string(), "200".to_string()),
            ("RAY_health_check_period_ms".to_string(), "200".to_string()),
            ("RAY_health_check_timeout_ms".to_string(), "1000".to_string()),
            ("RAY_health_check_failure_threshold".to_string(), "3".to_string()),
            // The autoscaler's /metrics on a free port (Ray's default, 44217, is one per machine).
            ("AUTOSCALER_METRIC_PORT".to_string(), "0".to_string()),
        ];
        Self { tmp, home, vars }
    }

    /// Adds or replaces an environment variable for every command.
    pub fn set(&mut self, k: &str, v: &str) {
        self.vars.retain(|(key, _)| key != k);
        self.vars.push((k.to_string(), v.to_string()));
    }

    /// Removes a variable set with [`Self::set`].
    pub fn unset(&mut self, k: &str) {
        self.vars.retain(|(key, _)| key != k);
    }

    /// `RAY_TMPDIR` of this environment.
    pub fn tmpdir(&self) -> &Path {
        self.tmp.path()
    }

    /// `HOME` of this environment.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The temp root (`$RAY_TMPDIR/ray`).
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("ray")
    }

    /// `ray ARGS` as a command with this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ray_bin());
        c.args(args);
        for v in ISOLATED_VARS {
            c.env_remove(v);
        }
        c.env("HOME", self.home.path()).env("RAY_TMPDIR", self.tmp.path());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs `ray ARGS` to completion.
    pub fn ray(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cannot run the ray executable")
    }

    /// Runs `ray ARGS`, asserting success; returns stdout.
    pub fn ray_ok(&self, args: &[&str]) -> String {
        let out = self.ray(args);
        assert!(
            out.status.success(),
            "`ray {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a head on loopback with a free port; returns the GCS address.
    pub fn start_head(&self, extra: &[&str]) -> String {
        // No Ray Client server unless a test asks for one (`extra` wins: the last value counts).
        let mut args = vec!["start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--ray-client-server-port", "0"];
        args.extend_from_slice(extra);
        self.ray_ok(&args);
        self.gcs_address()
    }

    /// Joins a node to the recorded cluster.
    pub fn start_worker(&self, extra: &[&str]) {
        let addr = self.gcs_address();
        let mut args = vec!["start", "--address", addr.as_str(), "--node-ip-address", "127.0.0.1"];
        args.extend_from_slice(extra);
        self.ray_ok(&args);
    }

    /// The head address `ray start` recorded.
    pub fn gcs_address(&self) -> String {
        ray_common::session::read_current_cluster(&self.root()).expect("no ray_current_cluster recorded")
    }

    /// `ray status` output.
    pub fn status(&self) -> String {
        self.ray_ok(&["status"])
    }

    /// The processes `ray start` recorded.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        ray_common::session::list_processes(&self.root())
    }

    /// Recorded processes that are still running.
    pub fn live_processes(&self) -> Vec<ProcessRecord> {
        self.processes().into_iter().filter(|p| ray_common::process::is_same_process_alive(p.pid, p.start_ticks)).collect()
    }

    /// The newest session's log folder.
    pub fn logs_dir(&self) -> PathBuf {
        self.root().join("session_latest").join("logs")
    }

    /// Every log file's text, concatenated.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.logs_dir()) {
            for e in rd.flatten() {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        s
    }

    /// The cluster token this environment's head created.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.home.path().join(".ray/auth_token")).expect("no token file").trim().to_string()
    }
}

impl Drop for RayEnv {
    fn drop(&mut self) {
        let _ = self.command(&["stop", "--force"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl RayEnv {
    /// The `python` of the repository's `.venv` (where `pip install .` put `ray`).
    pub fn python(&self) -> PathBuf {
        let p = ray_bin().parent().expect("bin dir").join("python");
        assert!(p.exists(), "no python next to {}: run the README's test command", ray_bin().display());
        p
    }

    /// Runs Python code with this environment; asserts success; returns stdout.
    pub fn python_ok(&self, code: &str) -> String {
        let mut c = Command::new(self.python());
        c.args(["-c", code]);
        for v in ISOLATED_VARS {
            c.env_remove(v);
        }
        c.env("HOME", self.home.path()).env("RAY_TMPDIR", self.tmp.path());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        let out = c.output().expect("cannot run python");
        assert!(
            out.status.success(),
            "python failed ({}):\n{code}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a file in this environment's temp folder; returns its path.
    pub fn write_file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, body).expect("write file");
        p
    }

    /// Token and TLS settings for talking to this environment's cluster.
    pub fn security(&self) -> ray_common::rpc::Security {
        let token = ray_common::auth::ClusterToken::from_secret(&self.token()).expect("token");
        ray_common::rpc::Security { auth: ray_common::auth::AuthConfig { token: Some(token) }, tls: None }
    }

    /// The node table, from the GCS.
    pub fn node_table(&self) -> Vec<ray_proto::rpc::NodeInfo> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let addr = self.gcs_address();
        let sec = self.security();
        rt.block_on(async move {
            let (gcs, _) = ray_common::gcs_client::GcsClient::connect(&addr, &sec, Duration::from_secs(5)).await.expect("GCS");
            gcs.nodes
                .clone()
                .get_all_node_info(ray_proto::rpc::GetAllNodeInfoRequest { state_filter: None })
                .await
                .expect("node table")
                .into_inner()
                .nodes
        })
    }

    /// Live nodes of a node type (as the autoscaler launched them).
    pub fn alive_of_type(&self, node_type: &str) -> Vec<ray_proto::rpc::NodeInfo> {
        self.node_table()
            .into_iter()
            .filter(|n| n.node_type_name == node_type && n.state != ray_proto::rpc::NodeState::Dead as i32)
            .collect()
    }
}

/// The node id a raylet process was started with (from its command line).
pub fn raylet_node_id(pid: u32) -> Option<String> {
    let args = ray_common::process::cmdline(pid)?;
    ray_common::process::flag_value(&args, "--node-id").map(str::to_string)
}

/// Counts the nodes listed in `ray status`'s Active and Idle sections.
pub fn status_node_count(status: &str) -> usize {
    let mut count = 0;
    let mut in_section = false;
    for line in status.lines() {
        match line {
            "Active:" | "Idle:" => in_section = true,
            "Pending:" => in_section = false,
            l if in_section && !l.trim_start().starts_with('(') => {
                count += l.split_whitespace().next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0)
            }
            _ => {}
        }
    }
    count
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
