//! The placement group service: create, remove, look up, list, and wait until
//! a group is reserved. Reservation itself runs in `pg_scheduler.rs`.

use std::collections::HashMap;
use std::time::Duration;

use ray_proto::rpc::placement_group_info_gcs_service_server::PlacementGroupInfoGcsService;
use ray_proto::rpc::*;
use tonic::{Request, Response, Status};

use crate::placement_groups::{CREATED, REMOVED};
use crate::services::GcsService;

#[tonic::async_trait]
impl PlacementGroupInfoGcsService for GcsService {
    async fn create_placement_group(
        &self,
        req: Request<CreatePlacementGroupRequest>,
    ) -> Result<Response<CreatePlacementGroupReply>, Status> {
        let g = req.into_inner().group.ok_or_else(|| Status::invalid_argument("missing group"))?;
        let (id, strategy, n) = (g.placement_group_id.clone(), g.strategy.clone(), g.bundles.len());
        let now = ray_common::time::now_ms();
        self.gcs.change(|st| match st.placement_groups_mut().create(g, now) {
            Ok(()) => (Ok(()), Some(st.placement_groups_changed())),
            Err(e) => (Err(e), None),
        })
        .map_err(Status::invalid_argument)?;
        tracing::info!(group = %id, %strategy, bundles = n, "placement group created; reserving its bundles");
        self.gcs.placement_wake.notify_one();
        self.gcs.persist().await;
        Ok(Response::new(CreatePlacementGroupReply {}))
    }

    async fn remove_placement_group(
        &self,
        req: Request<RemovePlacementGroupRequest>,
    ) -> Result<Response<RemovePlacementGroupReply>, Status> {
        let id = req.into_inner().placement_group_id;
        let nodes = self
            .gcs
            .change(|st| {
                let nodes = st.placement_groups_mut().remove(&id);
                let change = nodes.is_some().then(|| st.placement_groups_changed());
                (nodes, change)
            })
            .ok_or_else(|| Status::not_found(format!("placement group {} does not exist", ray_common::ids::truncate(&id, 64))))?;
        tracing::info!(group = %id, "placement group removed");
        let nodes: Vec<(String, Vec<u32>)> = nodes.into_iter().map(|n| (n, Vec::new())).collect();
        let mut conns = HashMap::new();
        crate::pg_scheduler::cancel_on(&self.gcs, &mut conns, &id, &nodes).await;
        self.gcs.placement_wake.notify_one();
        self.gcs.persist().await;
        Ok(Response::new(RemovePlacementGroupReply {}))
    }

    async fn get_placement_group(&self, req: Request<GetPlacementGroupRequest>) -> Result<Response<GetPlacementGroupReply>, Status> {
        let r = req.into_inner();
        let st = self.gcs.state();
        let pgs = st.placement_groups();
        let g = if r.placement_group_id.is_empty() { pgs.named(&r.name, &r.namespace) } else { pgs.get(&r.placement_group_id) };
        Ok(Response::new(GetPlacementGroupReply { group: g.cloned() }))
    }

    async fn get_all_placement_group(
        &self,
        _req: Request<GetAllPlacementGroupRequest>,
    ) -> Result<Response<GetAllPlacementGroupReply>, Status> {
        Ok(Response::new(GetAllPlacementGroupReply { groups: self.gcs.state().placement_groups().all() }))
    }

    async fn wait_placement_group_until_ready(
        &self,
        req: Request<WaitPlacementGroupUntilReadyRequest>,
    ) -> Result<Response<WaitPlacementGroupUntilReadyReply>, Status> {
        let r = req.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(r.timeout_ms.min(3_600_000));
        let mut events = self.gcs.subscribe();
        loop {
            let state = self.gcs.state().placement_groups().get(&r.placement_group_id).map(|g| g.state.clone());
            let Some(state) = state else {
                return Err(Status::not_found(format!("placement group {} does not exist", ray_common::ids::truncate(&r.placement_group_id, 64))));
            };
            if state == CREATED || state == REMOVED || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(WaitPlacementGroupUntilReadyReply { ready: state == CREATED, state }));
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}
