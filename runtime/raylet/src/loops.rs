//! The raylet's background tasks. Each one feeds the node state through its
//! methods and does whatever may block (awaiting the GCS, reading `/proc`)
//! outside its lock.
//!
//! - [`pool_loop`]: worker processes started, failed or exited; idle workers
//!   retired; jobs whose driver exited ended.
//! - [`cluster_view_loop`]: the other nodes' free resources, for spillback.
//! - [`report_loop`]: the resource report stream to the GCS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ray_common::ResourceSet;
use ray_proto::rpc::ResourceReport;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::leases::RemoteNode;
use crate::spawner::PoolEvent;
use crate::{ExitReason, Raylet};

/// Follows worker processes (started, exited), retires idle workers, and ends
/// jobs whose driver exited.
pub async fn pool_loop(r: Arc<Raylet>, mut events: mpsc::UnboundedReceiver<PoolEvent>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(PoolEvent::Started { worker_id, pid }) => {
                    if r.state.lock().worker_started(&worker_id, pid) {
                        tracing::debug!(worker_id = %worker_id, pid, "worker process started");
                    } else {
                        tracing::debug!(worker_id = %worker_id, pid, "a worker of an ended job started; stopped it");
                    }
                }
                Some(PoolEvent::SpawnFailed { worker_id, error }) => {
                    tracing::error!(worker_id = %worker_id, "{error}");
                    r.state.lock().worker_spawn_failed(&worker_id);
                }
                Some(PoolEvent::Exited { pid, status }) => {
                    let gone = r.state.lock().worker_exited(pid);
                    if let Some(w) = &gone {
                        // Actors it owned (or ran, for a detached one whose owner is
                        // gone) end with it; the GCS decides.
                        let req = ray_proto::rpc::ReportWorkerDeathRequest { worker_id: w.id.clone() };
                        let mut actors = r.gcs.actors.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), actors.report_worker_death(req)).await;
                        });
                    }
                    match gone {
                        Some(w) if w.leased => tracing::warn!(worker_id = %w.id, pid, %status, "a worker exited while leased"),
                        Some(w) => tracing::debug!(worker_id = %w.id, pid, %status, "worker exited"),
                        None => {}
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                // Spill files of objects freed with their owner.
                let garbage = r.state.lock().take_spill_garbage();
                crate::spill::remove_files(garbage);
                let stopped = r.state.lock().stop_idle_workers();
                for (id, pid) in stopped {
                    tracing::debug!(worker_id = %id, pid, "stopping an idle worker");
                }
                // Read /proc without the lock; the state re-checks that the job
                // still has that driver.
                let drivers = r.state.lock().local_drivers();
                for (job, pid) in drivers {
                    if process_exists(pid) {
                        continue;
                    }
                    if r.state.lock().driver_exited(&job, pid) {
                        tracing::info!(job_id = %job, "the driver exited; stopping the job's workers and freeing its objects");
                        // The GCS ends the job's actors (a driver that exits without
                        // ray.shutdown() never says so itself).
                        let req = ray_proto::rpc::MarkJobFinishedRequest { job_id: job.clone() };
                        let mut jobs = r.gcs.jobs.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), jobs.mark_job_finished(req)).await;
                        });
                    }
                }
            }
            _ = r.shutdown.cancelled() => {
                r.state.lock().shut_down();
                return;
            }
        }
    }
}

fn process_exists(pid: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// Keeps the view of the other nodes (for spillback) fresh: refetched whenever the
/// GCS announces a node or resource change (at most every 100 ms), else every 2 s.
pub async fn cluster_view_loop(r: Arc<Raylet>) {
    use ray_proto::rpc::{Channel as Ch, GetAllNodeInfoRequest, GetAllResourceUsageRequest, NodeState, SubscribeRequest};
    let wake = Arc::new(Notify::new());
    {
        let gcs = r.gcs.clone();
        let wake = wake.clone();
        let shutdown = r.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let req = SubscribeRequest { channels: vec![Ch::Nodes as i32, Ch::Resources as i32] };
                if let Ok(resp) = gcs.subscriber.clone().subscribe(req).await {
                    let mut s = resp.into_inner();
                    loop {
                        tokio::select! {
                            m = s.message() => match m {
                                Ok(Some(_)) => wake.notify_one(),
                                _ => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = r.shutdown.cancelled() => return,
        }
        let nodes = r.gcs.nodes.clone().get_all_node_info(GetAllNodeInfoRequest { state_filter: Some(NodeState::Alive as i32) }).await;
        let usage = r.gcs.resources.clone().get_all_resource_usage(GetAllResourceUsageRequest {}).await;
        if let (Ok(nodes), Ok(usage)) = (nodes, usage) {
            let addrs: HashMap<String, String> = nodes
                .into_inner()
                .nodes
                .into_iter()
                .map(|n| (n.node_id, format!("{}:{}", n.node_manager_address, n.node_manager_port)))
                .collect();
            r.transfers.set_directory(addrs.clone());
            let me = r.node_id.to_string();
            let view: Vec<RemoteNode> = usage
                .into_inner()
                .nodes
                .into_iter()
                .filter(|n| n.node_id != me)
                .filter_map(|n| {
                    Some(RemoteNode {
                        address: addrs.get(&n.node_id)?.clone(),
                        node_id: n.node_id,
                        available: ResourceSet::from_f64_map_lossy(&n.resources_available),
                        total: ResourceSet::from_f64_map_lossy(&n.resources_total),
                    })
                })
                .collect();
            r.state.lock().set_cluster_view(view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Streams reports to the GCS: on every change and at least once a period.
/// Reconnects when the stream breaks; stops the raylet when the GCS says the node
/// is dead or stays unreachable past the reconnect timeout.
pub async fn report_loop(r: Arc<Raylet>) {
    let period = Duration::from_millis(r.config.raylet_report_resources_period_ms.max(10));
    let give_up_after = Duration::from_secs(r.config.gcs_rpc_server_reconnect_timeout_s);
    let mut last_ok = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let (tx, rx) = mpsc::channel::<ResourceReport>(8);
        let mut client = r.gcs.resources.clone();
        let mut call = tokio::spawn(async move { client.report_resources(ReceiverStream::new(rx)).await });
        let outcome = loop {
            let report = r.state.lock().report();
            if tx.send(report).await.is_err() {
                break None;
            }
            tokio::select! {
                _ = r.state.changed() => {}
                _ = tokio::time::sleep(period) => {}
                res = &mut call => break Some(res),
                _ = r.shutdown.cancelled() => {
                    drop(tx);
                    call.abort();
                    return;
                }
            }
            last_ok = Instant::now();
            backoff = Duration::from_millis(100);
        };
        let res = match outcome {
            Some(res) => res,
            None => call.await,
        };
        match res {
            Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::NotFound => {
                let msg = format!("the GCS no longer accepts this node: {}", s.message());
                tracing::error!("{msg}; exiting");
                r.stop(ExitReason::Fatal(msg));
                return;
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => {
                let msg = format!("the GCS refused our cluster token: {}", s.message());
                tracing::error!("{msg}; exiting");
                r.stop(ExitReason::Fatal(msg));
                return;
            }
            Ok(Err(s)) => tracing::warn!(code = ?s.code(), error = %s.message(), "resource report stream broke; reconnecting"),
            Ok(Ok(_)) => tracing::warn!("the GCS closed the report stream; reconnecting"),
            Err(_) => {}
        }
        if last_ok.elapsed() > give_up_after {
            let msg = format!("the GCS at {} has been unreachable for {:?}", r.gcs.addr(), give_up_after);
            tracing::error!("{msg}; exiting");
            r.stop(ExitReason::Fatal(msg));
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = r.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
