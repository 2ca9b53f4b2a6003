//! The actor service: owners register their actors and report each step
//! (ALIVE at an address, RESTARTING, DEAD with a cause); callers look actors up
//! by id or name; `ray.kill` stops an actor's worker; state tools list them.

use std::time::Duration;

use ray_proto::rpc::actor_info_gcs_service_server::ActorInfoGcsService;
use ray_proto::rpc::core_worker_service_client::CoreWorkerServiceClient;
use ray_proto::rpc::*;
use tonic::{Request, Response, Status};

use crate::actors::ActorError;
use crate::services::GcsService;

fn to_status(e: ActorError) -> Status {
    match e {
        ActorError::NameTaken { .. } | ActorError::Exists(_) => Status::already_exists(e.to_string()),
        ActorError::Invalid(_) => Status::invalid_argument(e.to_string()),
    }
}

impl GcsService {
    /// Asks the worker at `addr` to exit (best effort: it may be gone already).
    async fn stop_worker(&self, addr: &str) {
        if addr.is_empty() {
            return;
        }
        let Ok(ch) = self.gcs.security().connect_lazy(addr, Duration::from_secs(2)) else { return };
        let mut client = CoreWorkerServiceClient::new(ch);
        let call = client.exit(ExitRequest {});
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap_or(Err(Status::deadline_exceeded("timed out"))) {
            tracing::debug!(worker = %addr, error = %e.message(), "the actor's worker did not take the exit request");
        }
    }

    /// The job ended: its attached actors die with it, and their workers stop.
    pub(crate) async fn end_actors_of_job(&self, job_id: &str) {
        let addrs: Vec<String> = {
            let mut st = self.gcs.state();
            st.actors_mut().job_finished(job_id).into_iter().map(|(_, addr)| addr).collect()
        };
        // Each stop on its own, beyond the caller's deadline.
        for a in addrs {
            let me = self.clone();
            tokio::spawn(async move { me.stop_worker(&a).await });
        }
    }
}

#[tonic::async_trait]
impl ray_proto::rpc::task_info_gcs_service_server::TaskInfoGcsService for GcsService {
    async fn add_task_events(&self, req: Request<AddTaskEventsRequest>) -> Result<Response<AddTaskEventsReply>, Status> {
        self.gcs.state().tasks_mut().add(req.into_inner().events);
        Ok(Response::new(AddTaskEventsReply {}))
    }

    async fn get_task_events(&self, req: Request<GetTaskEventsRequest>) -> Result<Response<GetTaskEventsReply>, Status> {
        let r = req.into_inner();
        let (events, num_dropped) = self.gcs.state().tasks().list(&r.job_id, r.limit as usize);
        Ok(Response::new(GetTaskEventsReply { events, num_dropped }))
    }
}

#[tonic::async_trait]
impl ActorInfoGcsService for GcsService {
    async fn register_actor(&self, req: Request<RegisterActorRequest>) -> Result<Response<RegisterActorReply>, Status> {
        let r = req.into_inner();
        let a = r.actor.ok_or_else(|| Status::invalid_argument("invalid actor: missing"))?;
        let (id, class, name) = (a.actor_id.clone(), a.class_name.clone(), a.name.clone());
        let existing = self.gcs.state().actors_mut().register(a, r.get_if_exists).map_err(to_status)?;
        if existing.is_none() {
            tracing::info!(actor = %id, class = %class, name = %name, "actor registered");
        }
        self.gcs.persist().await;
        Ok(Response::new(RegisterActorReply { existing }))
    }

    async fn update_actor(&self, req: Request<UpdateActorRequest>) -> Result<Response<UpdateActorReply>, Status> {
        let u = req.into_inner().actor.ok_or_else(|| Status::invalid_argument("invalid actor: missing"))?;
        let (state, no_restart) = self
            .gcs
            .state()
            .actors_mut()
            .update(&u)
            .ok_or_else(|| Status::not_found(format!("actor {} is not registered", ray_common::ids::truncate(&u.actor_id, 64))))?;
        tracing::info!(actor = %u.actor_id, state = %state, cause = %u.death_cause, "actor state");
        self.gcs.persist().await;
        Ok(Response::new(UpdateActorReply { state, no_restart }))
    }

    async fn get_actor_info(&self, req: Request<GetActorInfoRequest>) -> Result<Response<GetActorInfoReply>, Status> {
        let r = req.into_inner();
        let st = self.gcs.state();
        let a = if r.actor_id.is_empty() { st.actors().named(&r.name, &r.namespace) } else { st.actors().get(&r.actor_id) };
        Ok(Response::new(GetActorInfoReply { actor: a.cloned() }))
    }

    async fn get_all_actor_info(&self, req: Request<GetAllActorInfoRequest>) -> Result<Response<GetAllActorInfoReply>, Status> {
        let r = req.into_inner();
        Ok(Response::new(GetAllActorInfoReply { actors: self.gcs.state().actors().all(&r.job_id, r.alive_only) }))
    }

    async fn report_worker_death(&self, req: Request<ReportWorkerDeathRequest>) -> Result<Response<ReportWorkerDeathReply>, Status> {
        let worker = req.into_inner().worker_id;
        let ended = {
            let mut st = self.gcs.state();
            let dead_jobs = st.dead_jobs();
            st.actors_mut().worker_died(&worker, &dead_jobs)
        };
        for id in &ended {
            tracing::info!(actor = %id, worker = %worker, "actor died with a worker");
        }
        self.gcs.persist().await;
        Ok(Response::new(ReportWorkerDeathReply { actors_ended: ended.len() as u32 }))
    }

    async fn kill_actor(&self, req: Request<KillActorRequest>) -> Result<Response<KillActorReply>, Status> {
        let r = req.into_inner();
        let addr = {
            let mut st = self.gcs.state();
            let Some(a) = st.actors().get(&r.actor_id) else {
                return Err(Status::not_found(format!("actor {} is not registered", ray_common::ids::truncate(&r.actor_id, 64))));
            };
            let addr = a.address.clone();
            if r.no_restart {
                let cause: String = r.cause.chars().take(4096).collect();
                st.actors_mut().forbid_restart(&r.actor_id, &cause);
            }
            addr
        };
        tracing::info!(actor = %r.actor_id, no_restart = r.no_restart, "ray.kill");
        self.stop_worker(&addr).await;
        self.gcs.persist().await;
        Ok(Response::new(KillActorReply {}))
    }
}
