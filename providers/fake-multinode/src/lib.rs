//! `fake_multinode`: every "instance" is a raylet started as a local process,
//! joined to the head. The embedded default for demos and tests.
//!
//! State lives in `<session>/fake_multinode_<cluster>.json`, written before a
//! process is started and updated after, so an autoscaler killed at any moment and
//! started again finds its processes (by pid and start time, or by the
//! `--instance-id` on a raylet's command line) and reaps the ones that died.
//!
//! Testing knobs in the `provider` section: `launch_error: {class, message}` makes
//! every launch fail with that classified error; `launch_delay_s` delays each
//! instance of a launch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ray_common::process;
use ray_common::NodeId;
use ray_common::raylet_command::RayletCommand;
use ray_common::session::{self, ProcessRecord, Session};
use serde::{Deserialize, Serialize};

use ray_providers::*;

/// A process-backed instance, as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    cloud_id: String,
    node_type: String,
    tags: BTreeMap<String, String>,
    node_id: String,
    pid: Option<u32>,
    start_ticks: Option<u64>,
    created_ms: u64,
    terminating: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    entries: Vec<Entry>,
}

/// The provider.
pub struct FakeMultiNodeProvider {
    ctx: ProviderContext,
    state_path: PathBuf,
    lock: tokio::sync::Mutex<()>,
    launch_error: Option<ProviderError>,
    launch_delay: Duration,
    node_ip: std::net::IpAddr,
}

/// Entries without a process for longer than this after creation are dead.
const ORPHAN_GRACE_MS: u64 = 10_000;

impl FakeMultiNodeProvider {
    /// Reads the provider section.
    pub fn new(cfg: &serde_json::Value, ctx: ProviderContext) -> Result<Self, ProviderError> {
        let launch_error = match cfg.get("launch_error") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let class: ErrorClass = serde_json::from_value(v.get("class").cloned().unwrap_or_default())
                    .map_err(|_| {
                        ProviderError::new(
                            ErrorClass::InvalidConfig,
                            "provider.launch_error.class: expected one of capacity, quota, throttled, auth, \
                             invalid_config, transient, other",
                        )
                    })?;
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("injected launch failure");
                Some(ProviderError::new(class, message))
            }
        };
        let launch_delay = cfg.get("launch_delay_s").and_then(|v| v.as_f64()).unwrap_or(0.0);
        if !(0.0..=3600.0).contains(&launch_delay) {
            return Err(ProviderError::new(ErrorClass::InvalidConfig, "provider.launch_delay_s: expected 0..3600"));
        }
        let node_ip = cfg.get("node_ip").and_then(|v| v.as_str()).unwrap_or("127.0.0.1");
        let node_ip = node_ip
            .parse()
            .map_err(|_| ProviderError::new(ErrorClass::InvalidConfig, format!("provider.node_ip: {node_ip:?} is not an IP address")))?;
        let state_path = ctx
            .temp_root
            .join(&ctx.session_name)
            .join(format!("fake_multinode_{}.json", sanitize(&ctx.cluster_name)));
        Ok(Self {
            ctx,
            state_path,
            lock: tokio::sync::Mutex::new(()),
            launch_error,
            launch_delay: Duration::from_secs_f64(launch_delay),
            node_ip,
        })
    }

    fn load(&self) -> StateFile {
        std::fs::read(&self.state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save(&self, st: &StateFile) -> Result<(), ProviderError> {
        let body = serde_json::to_vec_pretty(st).map_err(|e| ProviderError::new(ErrorClass::Other, e.to_string()))?;
        let tmp = self.state_path.with_extension("tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &self.state_path))
            .map_err(|e| ProviderError::new(ErrorClass::Other, format!("cannot write {:?}: {e}", self.state_path)))
    }

    fn to_instance(e: &Entry, state: CloudState) -> CloudInstance {
        CloudInstance {
            cloud_id: e.cloud_id.clone(),
            node_type: e.node_type.clone(),
            state,
            tags: e.tags.clone(),
            internal_ip: Some("127.0.0.1".into()),
            external_ip: None,
        }
    }

    /// Starts one raylet; returns its pid.
    fn spawn(&self, req: &CreateRequest, cloud_id: &str, node_id: NodeId) -> Result<u32, ProviderError> {
        let fail = |what: &str, e: std::io::Error| ProviderError::new(ErrorClass::Other, format!("{what}: {e}"));
        let sess = Session::open(&self.ctx.temp_root, &self.ctx.session_name).map_err(|e| fail("session folder", e))?;
        let (_, log) = sess.create_log("raylet", "out").map_err(|e| fail("log file", e))?;
        let mut command = RayletCommand::new(node_id, self.ctx.gcs_address.clone(), self.node_ip, sess.dir()).with_resources(&req.resources);
        command.instance_id = Some(cloud_id.to_string());
        command.node_type = Some(req.node_type.clone());
        command.labels = req.labels.clone();
        let mut cmd = process::daemon_command(&self.ctx.ray_executable, "raylet", &command.args(), &self.ctx.node_env, log)
            .map_err(|e| fail("log file", e))?;
        let child = cmd.spawn().map_err(|e| fail("cannot start a raylet", e))?;
        let pid = child.id();
        // Reap it whenever it exits, so it never lingers as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let rec = ProcessRecord {
            pid,
            start_ticks: process::start_time_ticks(pid).unwrap_or(0),
            name: "raylet".into(),
            session: self.ctx.session_name.clone(),
        };
        let _ = session::register_process(&self.ctx.temp_root, &rec);
        Ok(pid)
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Finds a raylet process started with `--instance-id <cloud_id>`.
fn find_raylet_by_instance(cloud_id: &str) -> Option<(u32, u64)> {
    let rd = std::fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(args) = process::cmdline(pid) else { continue };
        let hit = process::flag_value(&args, "--instance-id") == Some(cloud_id);
        if hit && !process::is_zombie(pid) {
            return process::start_time_ticks(pid).map(|t| (pid, t));
        }
    }
    None
}

#[async_trait]
impl NodeProvider for FakeMultiNodeProvider {
    fn name(&self) -> &str {
        "fake_multinode"
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
        if let Some(e) = &self.launch_error {
            return Err(e.clone());
        }
        let mut out = Vec::new();
        for instance_id in &req.instance_ids {
            // A slow cloud: each instance takes this long to appear.
            if !self.launch_delay.is_zero() {
                tokio::time::sleep(self.launch_delay).await;
            }
            let _g = self.lock.lock().await;
            let cloud_id = format!("fake-{instance_id}");
            let mut st = self.load();
            if let Some(e) = st.entries.iter().find(|e| e.cloud_id == cloud_id) {
                out.push(Self::to_instance(e, CloudState::Pending));
                continue;
            }
            let mut tags = req.tags.clone();
            tags.insert(TAG_LAUNCH_REQUEST.into(), req.request_id.clone());
            tags.insert(TAG_INSTANCE_ID.into(), instance_id.clone());
            let node_id = NodeId::random();
            let entry = Entry {
                cloud_id: cloud_id.clone(),
                node_type: req.node_type.clone(),
                tags,
                node_id: node_id.to_string(),
                pid: None,
                start_ticks: None,
                created_ms: ray_common::time::now_ms(),
                terminating: false,
            };
            // Record first, then start: a crash in between leaves a record that
            // `list` resolves (adopts the process or drops the record).
            st.entries.push(entry.clone());
            self.save(&st)?;
            let pid = match self.spawn(req, &cloud_id, node_id) {
                Ok(pid) => pid,
                Err(e) => {
                    st.entries.retain(|x| x.cloud_id != cloud_id);
                    self.save(&st)?;
                    return Err(e);
                }
            };
            if let Some(x) = st.entries.iter_mut().find(|x| x.cloud_id == cloud_id) {
                x.pid = Some(pid);
                x.start_ticks = process::start_time_ticks(pid);
            }
            self.save(&st)?;
            tracing::info!(cloud_id = %cloud_id, node_type = %req.node_type, pid, "started a local raylet");
            out.push(Self::to_instance(&entry, CloudState::Pending));
        }
        Ok(out)
    }

    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError> {
        let mut victims = Vec::new();
        {
            let _g = self.lock.lock().await;
            let mut st = self.load();
            for e in st.entries.iter_mut().filter(|e| cloud_ids.contains(&e.cloud_id)) {
                e.terminating = true;
                if let (Some(pid), Some(t)) = (e.pid, e.start_ticks)
                    && process::is_same_process_alive(pid, t)
                {
                    process::signal(pid, libc::SIGTERM);
                    victims.push((pid, t));
                }
            }
            self.save(&st)?;
        }
        // Give raylets a moment to unregister (without holding the lock, so launches
        // go on meanwhile), then make sure they are gone.
        for _ in 0..100 {
            if victims.iter().all(|(p, t)| !process::is_same_process_alive(*p, *t)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (pid, t) in &victims {
            if process::is_same_process_alive(*pid, *t) {
                // SAFETY: kill(2) on the raylet's process group.
                unsafe {
                    libc::kill(-(*pid as i32), libc::SIGKILL);
                }
            }
            session::unregister_process(&self.ctx.temp_root, *pid);
        }
        let _g = self.lock.lock().await;
        let mut st = self.load();
        st.entries.retain(|e| !cloud_ids.contains(&e.cloud_id));
        self.save(&st)?;
        Ok(())
    }

    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        let _g = self.lock.lock().await;
        let mut st = self.load();
        if let Some(e) = st.entries.iter_mut().find(|e| e.cloud_id == cloud_id) {
            e.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            self.save(&st)?;
        }
        Ok(())
    }

    /// Each instance is a raylet process this provider starts itself.
    fn starts_ray_itself(&self) -> bool {
        true
    }

    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError> {
        let _g = self.lock.lock().await;
        let mut st = self.load();
        let now = ray_common::time::now_ms();
        let mut changed = false;
        let mut out = Vec::new();
        st.entries.retain_mut(|e| {
            let alive = match (e.pid, e.start_ticks) {
                (Some(pid), Some(t)) => process::is_same_process_alive(pid, t),
                _ => match find_raylet_by_instance(&e.cloud_id) {
                    Some((pid, t)) => {
                        tracing::info!(cloud_id = %e.cloud_id, pid, "adopted a raylet started before a restart");
                        e.pid = Some(pid);
                        e.start_ticks = Some(t);
                        changed = true;
                        true
                    }
                    None => now.saturating_sub(e.created_ms) < ORPHAN_GRACE_MS,
                },
            };
            if !alive {
                tracing::info!(cloud_id = %e.cloud_id, node_type = %e.node_type, "reaped: its raylet process is gone");
                if let Some(pid) = e.pid {
                    session::unregister_process(&self.ctx.temp_root, pid);
                }
                changed = true;
                return false;
            }
            let state = if e.terminating {
                CloudState::Terminating
            } else if e.pid.is_some() {
                CloudState::Running
            } else {
                CloudState::Pending
            };
            out.push(Self::to_instance(e, state));
            true
        });
        if changed {
            self.save(&st)?;
        }
        Ok(out)
    }
}
