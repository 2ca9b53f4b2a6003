//! Who this core worker is (its ids, address, clients of its GCS and raylet,
//! tunables) and the cache of connections to the other processes it talks to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{self, Channel, Security};
use ray_common::{JobId, NodeId, WorkerId};
use ray_proto::rpc::NotifyWorkerBlockedRequest;
use ray_proto::rpc::core_worker_service_client::CoreWorkerServiceClient;
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use tokio::sync::mpsc;

use crate::ids::IdGen;

/// A client of a raylet's node manager.
pub type RayletClient = NodeManagerServiceClient<Channel>;
/// A client of another core worker (an owner, or a leased worker).
pub type WorkerClient = CoreWorkerServiceClient<Channel>;

/// Driver or worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A user's script.
    Driver,
    /// A process the raylet started to run tasks.
    Worker,
}

/// The fixed facts of one core worker, shared by its parts.
pub(crate) struct Context {
    pub mode: Mode,
    pub rt: tokio::runtime::Handle,
    pub worker_id: WorkerId,
    pub job_id: JobId,
    pub node_id: NodeId,
    /// Where this core worker's server listens.
    pub address: String,
    pub security: Security,
    pub gcs: GcsClient,
    /// The local raylet.
    pub raylet: RayletClient,
    /// Its address (told to owners whose objects this node copies).
    pub raylet_address: String,
    pub ids: IdGen,
    pub peers: Peers,
    /// Tasks a short-task shape may queue on one worker.
    pub max_inflight: usize,
    /// How long an idle lease is kept before it is returned.
    pub lease_linger: Duration,
    /// Lines printed by this driver's tasks, on their way to the console.
    pub log_tx: mpsc::UnboundedSender<String>,
    /// In a worker: where lines printed by the tasks it submitted go instead
    /// (up its own task's stream, synchronously, so they reach the driver
    /// before the result of the task that waited for them).
    pub line_sink: std::sync::OnceLock<Box<dyn Fn(String) + Send + Sync>>,
    /// States of the tasks this worker owns, on their way to the GCS.
    pub task_events: crate::task_events::TaskEvents,
}

impl Context {
    /// A line printed by a task this process submitted.
    pub fn emit_line(&self, line: String) {
        match self.line_sink.get() {
            Some(sink) => sink(line),
            None => {
                let _ = self.log_tx.send(line);
            }
        }
    }

    /// Tells the raylet a worker is blocked in `get`/`wait` (it lends its CPU) or
    /// running again. Drivers hold no lease and say nothing.
    pub async fn notify_blocked(&self, blocked: bool) {
        if self.mode == Mode::Worker {
            let req = NotifyWorkerBlockedRequest { worker_id: self.worker_id.to_string(), blocked };
            let _ = self.raylet.clone().notify_worker_blocked(req).await;
        }
    }
}

/// Connections to other processes of the cluster, cached by address, and the
/// raylets of other nodes that hold this worker's objects.
pub(crate) struct Peers {
    security: Security,
    channels: Mutex<HashMap<String, Channel>>,
    raylets: Mutex<HashMap<NodeId, RayletClient>>,
}

impl Peers {
    pub fn new(security: Security) -> Self {
        Self { security, channels: Mutex::new(HashMap::new()), raylets: Mutex::new(HashMap::new()) }
    }

    /// A channel to `addr`, opened on first use.
    pub async fn channel(&self, addr: &str) -> Result<Channel, String> {
        let cached = self.channels.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let c = self.security.connect(addr, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A client of the core worker at `addr`.
    pub async fn worker(&self, addr: &str) -> Result<WorkerClient, String> {
        Ok(CoreWorkerServiceClient::new(self.channel(addr).await?).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES))
    }

    /// A client of the raylet at `addr`.
    pub async fn raylet_at(&self, addr: &str) -> Result<RayletClient, String> {
        Ok(NodeManagerServiceClient::new(self.channel(addr).await?).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES))
    }

    /// Remembers the raylet of `node` (it granted us a lease: our large returns
    /// may be stored there).
    pub fn remember_raylet(&self, node: NodeId, client: RayletClient) {
        self.raylets.lock().unwrap_or_else(|p| p.into_inner()).insert(node, client);
    }

    /// The raylet of `node`, if one granted us a lease.
    pub fn raylet_of(&self, node: &NodeId) -> Option<RayletClient> {
        self.raylets.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }
}
