//! A connection to the cluster's GCS, for `ray.init(address=...)`,
//! `request_resources`, placement groups and cluster introspection.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use ray_common::ResourceSet;
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{Security, explain_status};
use ray_proto::rpc::autoscaler::{
    ClusterResourceConstraint, GetClusterStatusRequest, RequestClusterResourceConstraintRequest, ResourceRequest,
    ResourceRequestByCount,
};
use pyo3::types::PyDict;
use ray_proto::rpc::{
    CreatePlacementGroupRequest, GetAllNodeInfoRequest, GetAllPlacementGroupRequest, GetPlacementGroupRequest, PlacementGroupInfo,
    RemovePlacementGroupRequest, ResourceMap, WaitPlacementGroupUntilReadyRequest,
};

/// `ray._raylet.temp_root()`: the folder holding sessions (`$RAY_TMPDIR/ray` or `/tmp/ray`).
#[pyfunction]
pub fn temp_root() -> String {
    ray_common::session::temp_root(None).display().to_string()
}

/// An authenticated connection to a GCS.
#[pyclass(module = "ray._raylet")]
pub struct GcsConnection {
    gcs: GcsClient,
    address: String,
    session_name: String,
}

fn call_err(addr: &str, s: tonic::Status) -> PyErr {
    PyConnectionError::new_err(explain_status(addr, &s))
}

#[pymethods]
impl GcsConnection {
    /// Connects to `address` (HOST:PORT), checking the GCS answers and accepts our token.
    #[new]
    #[pyo3(signature = (address, timeout_s = 10.0))]
    fn new(py: Python<'_>, address: &str, timeout_s: f64) -> PyResult<Self> {
        let security = Security::from_env().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let rt = crate::runtime::get()?;
        let addr = address.to_string();
        let timeout = Duration::from_secs_f64(timeout_s.max(0.1));
        let (gcs, info) = py
            .detach(|| rt.block_on(GcsClient::connect(&addr, &security, timeout)))
            .map_err(|e| PyConnectionError::new_err(format!("cannot connect to the Ray cluster at {addr}: {e}")))?;
        Ok(Self { gcs, address: addr, session_name: info.session_name })
    }

    /// The GCS address.
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// The cluster's session name.
    #[getter]
    fn session_name(&self) -> String {
        self.session_name.clone()
    }

    /// Replaces the request_resources constraint with these bundles (an empty list clears it).
    fn request_resources(&self, py: Python<'_>, bundles: Vec<HashMap<String, f64>>) -> PyResult<()> {
        let mut counts: BTreeMap<ResourceSet, u64> = BTreeMap::new();
        for b in &bundles {
            let set = ResourceSet::from_f64_map(b).map_err(|e| PyValueError::new_err(format!("invalid bundle {b:?}: {e}")))?;
            if !set.is_empty() {
                *counts.entry(set).or_default() += 1;
            }
        }
        let constraint = ClusterResourceConstraint {
            resource_requests: counts
                .into_iter()
                .map(|(s, count)| ResourceRequestByCount { request: Some(ResourceRequest { resources_bundle: s.to_f64_map() }), count })
                .collect(),
        };
        let mut client = self.gcs.autoscaler.clone();
        let rt = crate::runtime::get()?;
        let req = RequestClusterResourceConstraintRequest { cluster_resource_constraint: Some(constraint) };
        py.detach(|| rt.block_on(client.request_cluster_resource_constraint(req)))
            .map_err(|s| call_err(&self.address, s))?;
        Ok(())
    }

    /// `ray status` text.
    #[pyo3(signature = (verbose = false))]
    fn status(&self, py: Python<'_>, verbose: bool) -> PyResult<String> {
        let mut client = self.gcs.autoscaler.clone();
        let rt = crate::runtime::get()?;
        let reply = py
            .detach(|| rt.block_on(client.get_cluster_status(GetClusterStatusRequest {})))
            .map_err(|s| call_err(&self.address, s))?
            .into_inner();
        Ok(ray_status::format_status(&reply, chrono::Local::now(), verbose))
    }

    /// Free resources of every live node.
    fn resource_usage(&self, py: Python<'_>) -> PyResult<Vec<HashMap<String, f64>>> {
        let mut client = self.gcs.resources.clone();
        let rt = crate::runtime::get()?;
        let reply = py
            .detach(|| rt.block_on(client.get_all_resource_usage(ray_proto::rpc::GetAllResourceUsageRequest {})))
            .map_err(|s| call_err(&self.address, s))?
            .into_inner();
        Ok(reply.nodes.into_iter().map(|n| n.resources_available).collect())
    }

    /// Every node: (node_id, alive, address, port, resources, labels, node_type, is_head).
    #[allow(clippy::type_complexity)]
    fn nodes(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(String, bool, String, u32, HashMap<String, f64>, HashMap<String, String>, String, bool)>> {
        let mut client = self.gcs.nodes.clone();
        let rt = crate::runtime::get()?;
        let reply = py
            .detach(|| rt.block_on(client.get_all_node_info(GetAllNodeInfoRequest { state_filter: None })))
            .map_err(|s| call_err(&self.address, s))?
            .into_inner();
        Ok(reply
            .nodes
            .into_iter()
            .map(|n| {
                let alive = n.state != ray_proto::rpc::NodeState::Dead as i32;
                (
                    n.node_id,
                    alive,
                    n.node_manager_address,
                    n.node_manager_port,
                    n.resources_total,
                    n.labels,
                    n.node_type_name,
                    n.is_head_node,
                )
            })
            .collect())
    }

    /// Creates a placement group (reserved in the background).
    #[allow(clippy::too_many_arguments)]
    fn create_placement_group(
        &self,
        py: Python<'_>,
        id: String,
        name: String,
        strategy: String,
        bundles: Vec<HashMap<String, f64>>,
        job_id: String,
        detached: bool,
        namespace: String,
    ) -> PyResult<()> {
        let group = PlacementGroupInfo {
            placement_group_id: id,
            name,
            strategy,
            bundles: bundles.into_iter().map(|amounts| ResourceMap { amounts }).collect(),
            creator_job_id: job_id,
            detached,
            namespace,
            ..Default::default()
        };
        let mut client = self.gcs.placement_groups.clone();
        let rt = crate::runtime::get()?;
        py.detach(|| rt.block_on(client.create_placement_group(CreatePlacementGroupRequest { group: Some(group) })))
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => PyValueError::new_err(s.message().to_string()),
                _ => call_err(&self.address, s),
            })?;
        Ok(())
    }

    /// Removes a placement group (its bundles are given back, workers in it stopped).
    fn remove_placement_group(&self, py: Python<'_>, id: String) -> PyResult<()> {
        let mut client = self.gcs.placement_groups.clone();
        let rt = crate::runtime::get()?;
        py.detach(|| rt.block_on(client.remove_placement_group(RemovePlacementGroupRequest { placement_group_id: id })))
            .map_err(|s| call_err(&self.address, s))?;
        Ok(())
    }

    /// One placement group by id (or by name when `id` is empty), as a dict; None if unknown.
    #[pyo3(signature = (id, name = String::new(), namespace = String::new()))]
    fn get_placement_group<'py>(&self, py: Python<'py>, id: String, name: String, namespace: String) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut client = self.gcs.placement_groups.clone();
        let rt = crate::runtime::get()?;
        let reply = py
            .detach(|| rt.block_on(client.get_placement_group(GetPlacementGroupRequest { placement_group_id: id, name, namespace })))
            .map_err(|s| call_err(&self.address, s))?
            .into_inner();
        reply.group.map(|g| pg_dict(py, g)).transpose()
    }

    /// Every placement group, as dicts.
    fn placement_groups<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut client = self.gcs.placement_groups.clone();
        let rt = crate::runtime::get()?;
        let reply = py
            .detach(|| rt.block_on(client.get_all_placement_group(GetAllPlacementGroupRequest {})))
            .map_err(|s| call_err(&self.address, s))?
            .into_inner();
        reply.groups.into_iter().map(|g| pg_dict(py, g)).collect()
    }

    /// Waits up to `timeout_s` for a group to be reserved; True when it is.
    fn wait_placement_group(&self, py: Python<'_>, id: String, timeout_s: f64) -> PyResult<bool> {
        let mut client = self.gcs.placement_groups.clone();
        let rt = crate::runtime::get()?;
        let timeout_ms = (timeout_s.max(0.0) * 1000.0) as u64;
        let reply = py
            .detach(|| rt.block_on(client.wait_placement_group_until_ready(WaitPlacementGroupUntilReadyRequest { placement_group_id: id, timeout_ms })))
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => PyValueError::new_err(s.message().to_string()),
                _ => call_err(&self.address, s),
            })?
            .into_inner();
        Ok(reply.ready)
    }
}

/// A placement group as Ray's `placement_group_table()` shows one.
fn pg_dict(py: Python<'_>, g: PlacementGroupInfo) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("placement_group_id", &g.placement_group_id)?;
    d.set_item("name", &g.name)?;
    let bundles = PyDict::new(py);
    let to_node = PyDict::new(py);
    for (i, b) in g.bundles.iter().enumerate() {
        bundles.set_item(i, b.amounts.clone())?;
        if let Some(n) = g.bundle_node_ids.get(i).filter(|n| !n.is_empty()) {
            to_node.set_item(i, n)?;
        }
    }
    d.set_item("bundles", bundles)?;
    d.set_item("bundles_to_node_id", to_node)?;
    d.set_item("strategy", &g.strategy)?;
    d.set_item("state", &g.state)?;
    let stats = PyDict::new(py);
    stats.set_item("scheduling_state", if g.scheduling_state.is_empty() { g.state.clone() } else { g.scheduling_state.clone() })?;
    d.set_item("stats", stats)?;
    d.set_item("detached", g.detached)?;
    d.set_item("creator_job_id", &g.creator_job_id)?;
    Ok(d)
}
