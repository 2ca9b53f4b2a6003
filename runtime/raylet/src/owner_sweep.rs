//! Stored objects outlive their owner only briefly. A task's return is stored on
//! the node that ran it but belongs to the task's caller, which may run on
//! another node; the raylet there cannot see that process exit. So every few
//! seconds this raylet asks each owner of its stored objects about one of them:
//! an owner that cannot be reached twice in a row is gone, and its objects are
//! deleted (an owner that answers "freed" gets that object deleted too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ray_proto::rpc::GetObjectStatusRequest;
use ray_proto::rpc::core_worker_service_client::CoreWorkerServiceClient;
use ray_common::rpc::Channel;

use crate::Raylet;

/// How often owners are asked.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long one owner gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Consecutive failed checks after which an owner is taken as gone.
const MISSES_TO_DIE: u32 = 2;
/// The owner's status for an object it freed or never knew.
const STATUS_FREED: u32 = 3;

enum Answer {
    Alive,
    Freed,
    Unreachable,
}

pub async fn owner_sweep_loop(r: Arc<Raylet>) {
    let mut misses: HashMap<String, u32> = HashMap::new();
    let mut channels: HashMap<String, Channel> = HashMap::new();
    loop {
        tokio::select! {
            _ = r.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let owners = r.state.lock().store_owners();
        misses.retain(|o, _| owners.contains_key(o));
        channels.retain(|o, _| owners.contains_key(o));
        for (owner, sample) in owners {
            match ask(&r, &mut channels, &owner, &sample).await {
                Answer::Alive => {
                    misses.remove(&owner);
                }
                Answer::Freed => {
                    misses.remove(&owner);
                    r.state.lock().delete_objects(std::slice::from_ref(&sample));
                    tracing::debug!(%owner, "an owner had freed a stored object; deleted here");
                }
                Answer::Unreachable => {
                    let n = misses.entry(owner.clone()).or_insert(0);
                    *n += 1;
                    if *n >= MISSES_TO_DIE {
                        misses.remove(&owner);
                        channels.remove(&owner);
                        let deleted = r.state.lock().owner_died(&owner);
                        tracing::info!(%owner, deleted, "the owner of stored objects is gone; its objects were deleted");
                    }
                }
            }
        }
    }
}

async fn ask(r: &Arc<Raylet>, channels: &mut HashMap<String, Channel>, owner: &str, sample: &[u8]) -> Answer {
    let channel = match channels.get(owner) {
        Some(c) => c.clone(),
        None => match tokio::time::timeout(ASK_TIMEOUT, r.transfers.security().connect(owner, ASK_TIMEOUT)).await {
            Ok(Ok(c)) => {
                channels.insert(owner.to_string(), c.clone());
                c
            }
            _ => return Answer::Unreachable,
        },
    };
    let req = GetObjectStatusRequest { object_id: sample.to_vec(), timeout_ms: 0, lost_node_id: String::new() };
    match tokio::time::timeout(ASK_TIMEOUT, CoreWorkerServiceClient::new(channel).get_object_status(req)).await {
        Ok(Ok(reply)) if reply.get_ref().status == STATUS_FREED => Answer::Freed,
        Ok(Ok(_)) => Answer::Alive,
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
            channels.remove(owner);
            Answer::Unreachable
        }
        // Refused for another reason (e.g. a token mismatch): not proof it is gone.
        Ok(Err(_)) => Answer::Alive,
        Err(_) => Answer::Unreachable,
    }
}
