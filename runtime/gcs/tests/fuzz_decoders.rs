//! Decoder fuzzing: arbitrary bytes decoded as every message a peer can send, and
//! whatever decodes fed to the GCS's state handlers. Nothing may panic.

use prost::Message;
use proptest::prelude::*;
use ray_gcs::state::ClusterState;
use ray_proto::rpc::autoscaler::*;
use ray_proto::rpc::*;

fn decode_all(bytes: &[u8]) {
    let _ = RegisterNodeRequest::decode(bytes);
    let _ = UnregisterNodeRequest::decode(bytes);
    let _ = GetAllNodeInfoRequest::decode(bytes);
    let _ = ResourceReport::decode(bytes);
    let _ = KvPutRequest::decode(bytes);
    let _ = KvDelRequest::decode(bytes);
    let _ = KvKeysRequest::decode(bytes);
    let _ = SubscribeRequest::decode(bytes);
    let _ = ReportAutoscalingStateRequest::decode(bytes);
    let _ = RequestClusterResourceConstraintRequest::decode(bytes);
    let _ = DrainNodeRequest::decode(bytes);
    let _ = DrainRayletRequest::decode(bytes);
    let _ = ShutdownRayletRequest::decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn decoded_peer_messages_never_panic_the_state(bytes in proptest::collection::vec(any::<u8>(), 0..512), seq in any::<u64>()) {
        let mut st = ClusterState::new("s".into());
        if let Ok(r) = RegisterNodeRequest::decode(bytes.as_slice())
            && let Some(n) = r.node
        {
            let _ = st.register(n);
        }
        if let Ok(mut r) = ResourceReport::decode(bytes.as_slice()) {
            r.seq = seq;
            let _ = st.apply_report(r);
        }
        if let Ok(r) = RequestClusterResourceConstraintRequest::decode(bytes.as_slice()) {
            let _ = st.set_constraint(r.cluster_resource_constraint.unwrap_or_default());
        }
        if let Ok(r) = ReportAutoscalingStateRequest::decode(bytes.as_slice())
            && let Some(s) = r.autoscaling_state
        {
            let _ = st.set_autoscaling_state(s);
        }
        let _ = st.cluster_resource_state();
        let _ = st.resource_usage();
    }

    /// Well-formed registrations with hostile field values.
    #[test]
    fn hostile_registrations_are_refused_or_stored_without_panic(
        addr in ".{0,300}",
        port in any::<u32>(),
        cpu in any::<f64>(),
        name in ".{0,40}",
    ) {
        let mut st = ClusterState::new("s".into());
        let node = NodeInfo {
            node_id: ray_common::NodeId::random().to_string(),
            node_manager_address: addr,
            node_manager_port: port,
            resources_total: [(name, cpu)].into(),
            ..Default::default()
        };
        let _ = st.register(node.clone());
        let report = ResourceReport {
            node_id: node.node_id.clone(),
            resources_available: node.resources_total.clone(),
            demand: vec![ResourceDemand { shape: node.resources_total.clone(), backlog_size: u64::MAX, num_infeasible_requests_queued: u64::MAX, ..Default::default() }],
            seq: 1,
            ..Default::default()
        };
        let _ = st.apply_report(report.clone());
        let _ = st.apply_report(report);
        let _ = st.cluster_resource_state();
    }
}
