//! Whole rounds for a provider whose machines the launcher sets Ray up on (as
//! over SSH): INSTALLING runs the node updater, a failed set-up is reported and
//! backed off, a restart finishes an interrupted set-up, and a changed config
//! replaces or updates the workers.

use std::sync::Arc;
use std::time::Duration;

use ray_common::{FixedPoint, ResourceSet};

use super::Autoscaler;
use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::instance::InstanceStatus;
use crate::testing::{FailingStorage, FakeCluster, FakeProvider, FakeSetup, count, steps};

const CONFIG: &str = r#"
cluster_name: test
max_workers: 4
idle_timeout_minutes: 5
provider: {type: fake_multinode}
available_node_types:
  head:
    resources: {CPU: 0}
    node_config: {}
  small:
    resources: {CPU: 1}
    node_config: {}
    max_workers: 4
head_node_type: head
"#;

struct Rig {
    cluster: Arc<FakeCluster>,
    provider: Arc<FakeProvider>,
    setup: Arc<FakeSetup>,
    storage: Arc<FailingStorage>,
    config: ClusterConfig,
}

fn one_cpu() -> ResourceSet {
    [("CPU".to_string(), FixedPoint::from_int(1))].into_iter().collect()
}

impl Rig {
    fn new() -> Self {
        let cluster = FakeCluster::new();
        let provider = FakeProvider::needing_setup(cluster.clone());
        let setup = FakeSetup::new(provider.clone(), cluster.clone(), one_cpu());
        let config = ClusterConfig::parse("test.yaml", CONFIG).expect("valid test config");
        Self { cluster, provider, setup, storage: Arc::new(FailingStorage::default()), config }
    }

    async fn autoscaler(&self) -> Autoscaler {
        let mut a = Autoscaler::new(self.config.clone(), self.cluster.clone(), self.provider.clone(), self.storage.clone())
            .with_clock(Clock::starting_at(1_700_000_000_000))
            .with_setup(self.setup.clone());
        a.load().await.expect("load the table");
        a
    }
}


#[tokio::test(start_paused = true)]
async fn launched_machines_are_set_up_then_run() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    r.setup.take(Duration::from_secs(30));
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    steps(&mut a, 3).await;
    assert_eq!(count(&a, InstanceStatus::Installing), 2, "being set up");
    assert_eq!(r.cluster.alive_of_type("small"), 0, "no raylet before the set-up finished");
    let pending = r.cluster.last_report().expect("report").pending_instances;
    assert!(pending.iter().all(|p| p.details == "setting-up"), "the updater's step shows in ray status: {pending:?}");
    steps(&mut a, 30).await;
    assert_eq!(count(&a, InstanceStatus::Running), 2);
    assert_eq!(r.setup.calls().len(), 2, "one set-up per machine");
    for c in r.provider.create_calls() {
        assert_eq!(c.tags.get(ray_providers::TAG_LAUNCH_CONFIG).map(String::as_str), Some("launch-1"), "created with the launch hash");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_set_up_is_reported_the_machine_given_back_and_retried_after_back_off() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    r.setup.fail_next(1);
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    steps(&mut a, 3).await;
    let report = r.cluster.last_report().expect("report");
    let f = report.failed_instance_requests.first().expect("the failure is reported");
    assert_eq!(f.kind, "UpdateFailed");
    assert!(f.reason.contains("Connection refused"), "{}", f.reason);
    assert!(r.cluster.events().iter().any(|e| e.starts_with("terminate ")), "the machine is given back: {:?}", r.cluster.events());
    assert_eq!(r.setup.calls().len(), 1, "not retried during the back-off");
    steps(&mut a, 10).await;
    assert_eq!(count(&a, InstanceStatus::Running), 1, "retried after the back-off, and it worked");
    assert_eq!(r.setup.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_a_set_up_sets_the_machine_up_again() {
    let r = Rig::new();
    {
        let mut old = r.autoscaler().await;
        r.setup.hang(true);
        r.cluster.request_resources(&[("CPU", 1.0)], 1);
        steps(&mut old, 3).await;
        assert_eq!(count(&old, InstanceStatus::Installing), 1);
    }
    r.setup.hang(false);
    let mut a = r.autoscaler().await;
    steps(&mut a, 3).await;
    assert_eq!(count(&a, InstanceStatus::Running), 1);
    assert_eq!(r.provider.create_calls().len(), 1, "nothing launched twice");
    assert_eq!(r.setup.calls().len(), 2, "the interrupted set-up ran again");
}

#[tokio::test(start_paused = true)]
async fn a_changed_config_updates_or_replaces_the_workers() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    steps(&mut a, 4).await;
    assert_eq!(count(&a, InstanceStatus::Running), 2);
    // New setup commands: the same machines are set up again, in place.
    r.setup.set_hashes("launch-1", "runtime-2");
    steps(&mut a, 4).await;
    assert_eq!(r.setup.calls().len(), 4, "each worker updated once");
    assert_eq!(r.provider.create_calls().len(), 1, "none replaced");
    assert_eq!(count(&a, InstanceStatus::Running), 2);
    // A new node_config: the workers are replaced.
    r.setup.set_hashes("launch-2", "runtime-2");
    steps(&mut a, 8).await;
    let terminated = r.cluster.events().iter().filter(|e| e.starts_with("terminate ")).count();
    assert_eq!(terminated, 2, "both out-of-date workers go: {:?}", r.cluster.events());
    assert_eq!(count(&a, InstanceStatus::Running), 2, "and the demand brings new ones");
    assert!(r.provider.create_calls().iter().skip(1).all(|c| c.tags.get(ray_providers::TAG_LAUNCH_CONFIG).map(String::as_str) == Some("launch-2")));
}

#[tokio::test(start_paused = true)]
async fn a_worker_found_running_without_a_runtime_hash_is_set_up() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    // Ray runs on a machine the table does not know (a new head over old
    // workers), with no record of a set-up with this config.
    let cloud = r.provider.add_unrecorded("small", "lost-1", &one_cpu());
    r.cluster.register(&cloud, "small", &one_cpu());
    steps(&mut a, 4).await;
    assert_eq!(r.setup.calls(), vec![cloud.clone()], "set up once");
    let listed = r
        .provider
        .instances()
        .into_iter()
        .find(|c| c.cloud_id == cloud)
        .expect("still there");
    assert_eq!(
        listed
            .tags
            .get(ray_providers::TAG_RUNTIME_CONFIG)
            .map(String::as_str),
        Some("runtime-1")
    );
    assert_eq!(count(&a, InstanceStatus::Running), 1);
    steps(&mut a, 4).await;
    assert_eq!(
        r.setup.calls().len(),
        1,
        "and not again once it carries the hash"
    );
}

#[tokio::test(start_paused = true)]
async fn an_updated_worker_is_drained_under_its_new_node_id() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    steps(&mut a, 4).await;
    r.setup.set_hashes("launch-1", "runtime-2");
    steps(&mut a, 4).await;
    assert_eq!(
        r.setup.calls().len(),
        2,
        "updated in place; Ray restarted under a new node id"
    );
    let node_id = a
        .instances()
        .values()
        .next()
        .and_then(|i| i.node_id.clone())
        .expect("node id");
    assert!(
        node_id.ends_with("-1"),
        "the restarted raylet's id is recorded: {node_id}"
    );
    r.cluster.request_resources(&[], 0);
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    steps(&mut a, 4).await;
    let events = r.cluster.events();
    assert!(
        events.iter().any(|e| e.starts_with("drain ")),
        "the live raylet was drained: {events:?}"
    );
    assert!(a.instances().is_empty(), "then terminated");
}

#[tokio::test(start_paused = true)]
async fn terminating_a_worker_stops_its_set_up() {
    let r = Rig::new();
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    steps(&mut a, 4).await;
    // An update hangs on the node; meanwhile the worker goes idle and is retired.
    r.setup.hang(true);
    r.setup.set_hashes("launch-1", "runtime-2");
    steps(&mut a, 2).await;
    assert_eq!(r.setup.running(), 1, "the update is under way");
    r.cluster.request_resources(&[], 0);
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    steps(&mut a, 4).await;
    assert!(
        r.cluster
            .events()
            .iter()
            .any(|e| e.starts_with("terminate ")),
        "{:?}",
        r.cluster.events()
    );
    assert_eq!(r.setup.running(), 0, "its set-up was stopped with it");
    assert!(a.actuator.in_flight().setups.is_empty());
}
