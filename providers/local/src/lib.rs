//! The `local` provider: machines the user already has. `provider.head_ip` and
//! `provider.worker_ips` name them; "launching" a worker takes a free address from
//! the list (Ray is then set up on it over SSH by the launcher's updater), and
//! "terminating" one stops Ray there over SSH and frees the address.
//!
//! Which address is in use, and its tags, live in a small state file
//! (`<temp root>/cluster-<name>.state`, JSON keyed by address, as Ray's local
//! provider keeps `/tmp/cluster-<name>.state`), under a file lock, so a restarted
//! launcher or autoscaler knows what it had.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ray_launcher::runner::{CommandRunner, RunOptions, SshAuth, SshRunner};
use ray_providers::*;
use serde::{Deserialize, Serialize};

/// One address and what it is used for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Machine {
    tags: BTreeMap<String, String>,
    /// `running` (in use) or `terminated` (free).
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_ip: Option<String>,
}

const RUNNING: &str = "running";
/// Being given back: Ray is being stopped there; not free yet.
const STOPPING: &str = "stopping";
const TERMINATED: &str = "terminated";

/// Longest wait for another process's hold on the state file.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The provider.
pub struct LocalProvider {
    cluster_name: String,
    head_ip: String,
    worker_ips: Vec<String>,
    external_head_ip: Option<String>,
    state_path: PathBuf,
    lock_path: PathBuf,
    auth: SshAuth,
    mutex: tokio::sync::Mutex<()>,
}

fn invalid(msg: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorClass::InvalidConfig, msg)
}

fn io_err(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorClass::Other, format!("{what}: {e}"))
}

/// Holds an exclusive `flock` on the lock file while alive.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Takes the lock without blocking the runtime's threads: polls until
    /// [`LOCK_WAIT`], then fails naming the file (a stopped process holds it).
    async fn take(path: &std::path::Path) -> Result<Self, ProviderError> {
        use std::os::fd::AsRawFd as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| io_err(&format!("cannot open {}", path.display()), e))?;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor this struct owns; released when it closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(&format!("cannot lock {}", path.display()), e));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io_err(
                    &format!("cannot lock {}", path.display()),
                    format!("another process has held it for {} s", LOCK_WAIT.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl LocalProvider {
    /// Reads `provider.head_ip`, `provider.worker_ips` (and `external_head_ip`);
    /// the state file goes under `ctx.temp_root`.
    pub fn new(cfg: &serde_json::Value, ctx: ProviderContext) -> Result<Self, ProviderError> {
        let head_ip = cfg
            .get("head_ip")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("provider.head_ip: expected the address of the head machine"))?
            .to_string();
        let worker_ips: Vec<String> = match cfg.get("worker_ips") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| invalid(format!("provider.worker_ips[{i}]: expected an address"))))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("provider.worker_ips: expected a list of addresses")),
        };
        if worker_ips.contains(&head_ip) {
            return Err(invalid(format!("provider.worker_ips: {head_ip} is also the head_ip")));
        }
        let name: String = ctx.cluster_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let _ = std::fs::create_dir_all(&ctx.temp_root);
        Ok(Self {
            cluster_name: ctx.cluster_name.clone(),
            head_ip,
            worker_ips,
            external_head_ip: cfg.get("external_head_ip").and_then(|v| v.as_str()).map(str::to_string),
            state_path: ctx.temp_root.join(format!("cluster-{name}.state")),
            lock_path: ctx.temp_root.join(format!("cluster-{name}.lock")),
            auth: SshAuth::from_config(&ctx.auth),
            mutex: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the state, reconciled with the config: every configured address has
    /// an entry (free unless the file says otherwise); a free address no longer
    /// in the config is dropped, but a machine in use stays until it is given
    /// back (Ray still runs there); a head at another address is forgotten.
    fn load(&self) -> Result<BTreeMap<String, Machine>, ProviderError> {
        let mut m: BTreeMap<String, Machine> = match std::fs::read(&self.state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io_err(&format!("unreadable state file {}", self.state_path.display()), e))?,
            Err(_) => BTreeMap::new(),
        };
        let is_head =
            |x: &Machine| x.tags.get(TAG_NODE_KIND).map(String::as_str) == Some(NODE_KIND_HEAD);
        if m.get(&self.head_ip).is_some_and(|h| !is_head(h)) {
            // Was a worker, now the head: its old record goes.
            m.remove(&self.head_ip);
        }
        let free = |kind: &str| Machine {
            tags: [(TAG_NODE_KIND.to_string(), kind.to_string())].into(),
            state: TERMINATED.into(),
            external_ip: None,
        };
        m.retain(|ip, x| {
            let keep = *ip == self.head_ip || (!is_head(x) && (self.worker_ips.contains(ip) || x.state != TERMINATED));
            if !keep && x.state != TERMINATED {
                tracing::info!(ip = %ip, "forgetting the head at an address the config no longer names");
            }
            keep
        });
        for ip in &self.worker_ips {
            m.entry(ip.clone()).or_insert_with(|| free(NODE_KIND_WORKER));
        }
        let head = m.entry(self.head_ip.clone()).or_insert_with(|| free(NODE_KIND_HEAD));
        head.external_ip = self.external_head_ip.clone();
        Ok(m)
    }

    fn save(&self, m: &BTreeMap<String, Machine>) -> Result<(), ProviderError> {
        let body = serde_json::to_vec_pretty(m).map_err(|e| io_err("state", e))?;
        let tmp = self.state_path.with_extension("tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &self.state_path))
            .map_err(|e| io_err(&format!("cannot write {}", self.state_path.display()), e))
    }

    /// Runs `f` on the state under both locks and saves what it leaves.
    async fn with_state<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Machine>) -> Result<R, ProviderError>) -> Result<R, ProviderError> {
        let _g = self.mutex.lock().await;
        let _file = FileLock::take(&self.lock_path).await?;
        let mut m = self.load()?;
        let r = f(&mut m)?;
        self.save(&m)?;
        Ok(r)
    }

    fn instance(ip: &str, m: &Machine) -> CloudInstance {
        CloudInstance {
            cloud_id: ip.to_string(),
            node_type: m.tags.get(TAG_USER_NODE_TYPE).cloned().unwrap_or_default(),
            state: if m.state == STOPPING {
                CloudState::Terminating
            } else {
                CloudState::Running
            },
            tags: m.tags.clone(),
            internal_ip: Some(ip.to_string()),
            external_ip: Some(m.external_ip.clone().unwrap_or_else(|| ip.to_string())),
        }
    }

    /// Stops Ray on a machine that is given back (best effort: an unreachable
    /// machine is freed anyway, with a warning).
    async fn stop_ray(&self, ip: &str) {
        let runner = SshRunner::new(self.auth.clone(), ip, &self.cluster_name);
        match runner.run("ray stop", &RunOptions::captured(Duration::from_secs(60))).await {
            Ok(_) => tracing::info!(ip, "stopped Ray on the machine"),
            Err(e) => tracing::warn!(ip, error = %e, "could not stop Ray on the machine; freeing its address anyway"),
        }
    }
}

#[async_trait]
impl NodeProvider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
        let kind = req.tags.get(TAG_NODE_KIND).cloned().unwrap_or_else(|| NODE_KIND_WORKER.to_string());
        self.with_state(|m| {
            let mut out = Vec::new();
            let mut ids: Vec<Option<&String>> = req.instance_ids.iter().map(Some).collect();
            if ids.is_empty() {
                ids.push(None); // a request without ids (the head from `ray up`) takes one machine
            }
            for id in ids {
                // Idempotent: a retried request finds the machine it already took.
                if let Some(id) = id
                    && let Some((ip, mach)) = m.iter().find(|(_, x)| x.state == RUNNING && x.tags.get(TAG_INSTANCE_ID) == Some(id))
                {
                    out.push(Self::instance(ip, mach));
                    continue;
                }
                let free = m.iter_mut().find(|(_, x)| x.state == TERMINATED && x.tags.get(TAG_NODE_KIND) == Some(&kind));
                let Some((ip, mach)) = free else { break };
                let mut tags = req.tags.clone();
                tags.insert(TAG_NODE_KIND.into(), kind.clone());
                tags.insert(TAG_USER_NODE_TYPE.into(), req.node_type.clone());
                tags.insert(TAG_LAUNCH_REQUEST.into(), req.request_id.clone());
                if let Some(id) = id {
                    tags.insert(TAG_INSTANCE_ID.into(), id.clone());
                }
                mach.tags = tags;
                mach.state = RUNNING.into();
                tracing::info!(ip = %ip, node_type = %req.node_type, kind = %kind, "took a machine");
                out.push(Self::instance(ip, mach));
            }
            if out.is_empty() {
                let total = m.values().filter(|x| x.tags.get(TAG_NODE_KIND) == Some(&kind)).count();
                let what = if kind == NODE_KIND_HEAD { "head_ip".to_string() } else { format!("worker_ips ({total} configured)") };
                return Err(ProviderError::new(ErrorClass::Capacity, format!("no free machine in provider.{what}: every one is in use")));
            }
            Ok(out)
        })
        .await
    }

    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError> {
        // Marked as being given back first (under the lock), so nobody takes the
        // address while Ray is being stopped there; freed once it is.
        let known: Vec<String> = self
            .with_state(|m| {
                let mut known = Vec::new();
                for ip in cloud_ids {
                    if let Some(x) = m.get_mut(ip)
                        && x.state != TERMINATED
                    {
                        x.state = STOPPING.into();
                        known.push(ip.clone());
                    }
                }
                Ok(known)
            })
            .await?;
        futures::future::join_all(known.iter().map(|ip| self.stop_ray(ip))).await;
        self.with_state(|m| {
            for ip in &known {
                if let Some(x) = m.get_mut(ip)
                    && x.state == STOPPING
                {
                    let kind = x
                        .tags
                        .get(TAG_NODE_KIND)
                        .cloned()
                        .unwrap_or_else(|| NODE_KIND_WORKER.to_string());
                    x.tags = [(TAG_NODE_KIND.to_string(), kind)].into();
                    x.state = TERMINATED.into();
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError> {
        self.with_state(|m| {
            Ok(m.iter()
                .filter(|(_, x)| x.state != TERMINATED)
                .map(|(ip, x)| Self::instance(ip, x))
                .collect())
        })
        .await
    }

    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        self.with_state(|m| {
            if let Some(x) = m.get_mut(cloud_id) {
                x.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dir: &std::path::Path, workers: &[&str]) -> LocalProvider {
        let cfg = serde_json::json!({"type": "local", "head_ip": "10.0.0.1", "worker_ips": workers});
        let ctx = ProviderContext {
            cluster_name: "c".into(),
            gcs_address: String::new(),
            temp_root: dir.to_path_buf(),
            session_name: String::new(),
            ray_executable: "ray".into(),
            node_env: Vec::new(),
            auth: serde_json::json!({"ssh_user": "nobody"}),
            boot_commands: Default::default(),
        };
        LocalProvider::new(&cfg, ctx).unwrap()
    }

    fn request(ids: &[&str]) -> CreateRequest {
        CreateRequest {
            request_id: "r1".into(),
            node_type: "local.cluster.node".into(),
            instance_ids: ids.iter().map(|s| s.to_string()).collect(),
            node_config: serde_json::json!({}),
            resources: Default::default(),
            labels: Default::default(),
            tags: [(TAG_NODE_KIND.to_string(), NODE_KIND_WORKER.to_string())].into(),
        }
    }

    #[tokio::test]
    async fn workers_take_free_addresses_idempotently_and_run_out_with_a_capacity_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path(), &["10.0.0.2", "10.0.0.3"]);
        let a = p.create(&request(&["i1"])).await.unwrap();
        assert_eq!(a[0].cloud_id, "10.0.0.2");
        let again = p.create(&request(&["i1"])).await.unwrap();
        assert_eq!(again[0].cloud_id, "10.0.0.2", "a retried request finds its machine");
        let b = p.create(&request(&["i2", "i3"])).await.unwrap();
        assert_eq!(b.len(), 1, "only one address was left");
        let e = p.create(&request(&["i4"])).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Capacity);
        assert!(e.message.contains("worker_ips (2 configured)"), "{e}");
        // Another provider over the same state file (a restart) sees the same.
        let q = provider(dir.path(), &["10.0.0.2", "10.0.0.3"]);
        let listed: Vec<String> = q.list().await.unwrap().into_iter().map(|c| c.cloud_id).collect();
        assert_eq!(listed, ["10.0.0.2", "10.0.0.3"]);
        q.set_tags("10.0.0.3", &[(TAG_NODE_STATUS.to_string(), "up-to-date".to_string())].into()).await.unwrap();
        assert_eq!(p.list().await.unwrap()[1].tags.get(TAG_NODE_STATUS).map(String::as_str), Some("up-to-date"));
    }

    #[tokio::test]
    async fn a_terminated_address_is_free_again_even_when_ray_cannot_be_stopped_there() {
        let dir = tempfile::tempdir().unwrap();
        // No sshd answers as "nobody" on 127.0.0.1: `ray stop` cannot run there.
        let p = provider(dir.path(), &["127.0.0.1"]);
        p.create(&request(&["i1"])).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), p.terminate(&["127.0.0.1".to_string()])).await.expect("gives up on ssh").unwrap();
        assert!(p.list().await.unwrap().is_empty());
        assert_eq!(p.create(&request(&["i2"])).await.unwrap()[0].cloud_id, "127.0.0.1");
    }

    #[tokio::test]
    async fn a_machine_in_use_is_not_forgotten_when_the_config_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path(), &["10.0.0.2", "10.0.0.3"]);
        p.create(&request(&["i1"])).await.unwrap();
        let q = provider(dir.path(), &["10.0.0.3"]);
        let listed: Vec<String> = q
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.cloud_id)
            .collect();
        assert_eq!(
            listed,
            ["10.0.0.2"],
            "Ray still runs there: ray down must still find it"
        );
        let e = q.create(&request(&["i2", "i3"])).await.unwrap();
        assert_eq!(
            e.iter().map(|c| c.cloud_id.as_str()).collect::<Vec<_>>(),
            ["10.0.0.3"],
            "only configured addresses are taken"
        );
    }

    #[tokio::test]
    async fn a_machine_being_given_back_is_listed_as_terminating_and_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path(), &["10.0.0.2"]);
        p.create(&request(&["i1"])).await.unwrap();
        // As if a terminate had marked it and not finished (a crash while stopping Ray).
        p.with_state(|m| {
            m.get_mut("10.0.0.2").unwrap().state = STOPPING.into();
            Ok(())
        })
        .await
        .unwrap();
        let listed = p.list().await.unwrap();
        assert_eq!(listed[0].state, CloudState::Terminating);
        assert_eq!(
            p.create(&request(&["i2"])).await.unwrap_err().class,
            ErrorClass::Capacity,
            "not free yet"
        );
    }

    #[test]
    fn a_worker_that_is_also_the_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.1"]});
        let ctx = ProviderContext {
            cluster_name: "c".into(),
            gcs_address: String::new(),
            temp_root: dir.path().to_path_buf(),
            session_name: String::new(),
            ray_executable: "ray".into(),
            node_env: Vec::new(),
            auth: serde_json::Value::Null,
            boot_commands: Default::default(),
        };
        let e = LocalProvider::new(&cfg, ctx).err().unwrap();
        assert!(e.message.contains("also the head_ip"), "{e}");
    }
}
