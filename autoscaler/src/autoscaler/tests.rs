//! Whole rounds in memory: a fake cluster, a fake provider and memory storage
//! (with injected failures), on a paused tokio clock, so minutes of autoscaling
//! run in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use ray_common::{FixedPoint, ResourceSet};
use ray_providers::{ErrorClass, ProviderError};

use super::Autoscaler;
use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::instance::InstanceStatus;
use crate::testing::{FailingStorage, FakeCluster, FakeProvider, count, step, steps};

/// Wall time when the tests' clocks start.
const T0: u64 = 1_700_000_000_000;

const CONFIG: &str = r#"
cluster_name: test
max_workers: 10
idle_timeout_minutes: 1
provider: {type: fake_multinode}
available_node_types:
  head:
    resources: {CPU: 0}
    node_config: {}
  small:
    resources: {CPU: 1}
    node_config: {}
    max_workers: 10
head_node_type: head
"#;

struct Rig {
    cluster: Arc<FakeCluster>,
    provider: Arc<FakeProvider>,
    storage: Arc<FailingStorage>,
    config: ClusterConfig,
}

impl Rig {
    fn new(yaml: &str) -> Self {
        let cluster = FakeCluster::new();
        let provider = FakeProvider::new(cluster.clone());
        let config = ClusterConfig::parse("test.yaml", yaml).expect("valid test config");
        Self { cluster, provider, storage: Arc::new(FailingStorage::default()), config }
    }

    /// An autoscaler over this rig's cluster, provider and storage, with the table loaded.
    async fn autoscaler(&self) -> Autoscaler {
        let mut a = Autoscaler::new(self.config.clone(), self.cluster.clone(), self.provider.clone(), self.storage.clone())
            .with_clock(Clock::starting_at(T0));
        a.load().await.expect("load the table");
        a
    }

    fn small() -> ResourceSet {
        [("CPU".to_string(), FixedPoint::from_int(1))].into_iter().collect()
    }
}


fn launched_ids(p: &FakeProvider) -> Vec<String> {
    p.create_calls().iter().flat_map(|c| c.instance_ids.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn request_resources_launches_once_and_the_nodes_run() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 4);
    step(&mut a).await;
    let calls = r.provider.create_calls();
    assert_eq!(calls.len(), 1, "one launch request");
    assert_eq!(calls[0].instance_ids.len(), 4);
    steps(&mut a, 5).await;
    assert_eq!(r.provider.create_calls().len(), 1, "not one more launch");
    assert_eq!(r.cluster.alive_of_type("small"), 4);
    assert_eq!(count(&a, InstanceStatus::Running), 4);
    // Every record in storage matches the table, and the history has tokio-clock times.
    assert_eq!(r.storage.records().await.len(), 4);
    for i in a.instances().values() {
        let first = i.history.first().map(|h| h.at_ms).unwrap_or(0);
        assert!(first >= T0 && i.status_since_ms() >= first + 1_000 && i.status_since_ms() < T0 + 60_000, "{i:?}");
        assert_eq!(i.history.first().map(|h| h.details.as_str()), Some("queued for request_resources"));
    }
    let report = r.cluster.last_report().expect("a report");
    assert!(report.pending_instance_requests.is_empty() && report.pending_instances.is_empty(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn task_demand_scales_up_and_stops_when_it_fits() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.cluster.set_demand(&[("CPU", 1.0)], 3);
    step(&mut a).await;
    assert_eq!(launched_ids(&r.provider).len(), 3);
    assert!(a.instances().values().all(|i| i.history[0].details == "queued for pending tasks/actors"));
    steps(&mut a, 4).await;
    assert_eq!(r.cluster.alive_of_type("small"), 3);
    assert_eq!(r.provider.create_calls().len(), 1, "the demand fits on the new nodes");
}

#[tokio::test(start_paused = true)]
async fn installing_until_the_raylet_registers_and_given_up_after_the_timeout() {
    let r = Rig::new(CONFIG);
    r.cluster.register_manually();
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    step(&mut a).await;
    assert_eq!(count(&a, InstanceStatus::Allocated), 1, "the provider accepted it");
    step(&mut a).await;
    assert_eq!(count(&a, InstanceStatus::Installing), 1, "listed as running, raylet not registered");
    step(&mut a).await;
    let report = r.cluster.last_report().expect("a report");
    assert_eq!(report.pending_instances.len(), 1);
    assert_eq!(report.pending_instances[0].details, "INSTALLING");
    let cloud = r.provider.instances()[0].cloud_id.clone();
    r.cluster.register(&cloud, "small", &Rig::small());
    step(&mut a).await;
    assert_eq!(count(&a, InstanceStatus::Running), 1);

    // A second node whose raylet never registers is given up after the timeout.
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    steps(&mut a, 3).await;
    assert_eq!(count(&a, InstanceStatus::Installing), 1);
    let stuck = a.instances().values().find(|i| i.status() == InstanceStatus::Installing).cloned().expect("stuck");
    tokio::time::advance(Duration::from_secs(100)).await;
    step(&mut a).await;
    assert!(a.instances().contains_key(&stuck.id), "not before the timeout");
    tokio::time::advance(Duration::from_secs(30)).await;
    steps(&mut a, 2).await;
    assert!(!a.instances().contains_key(&stuck.id), "terminated after the timeout");
    let cid = stuck.cloud_id.expect("cloud id");
    assert!(r.cluster.events().contains(&format!("terminate {cid}")), "{:?}", r.cluster.events());
    assert_eq!(r.provider.create_calls().len(), 3, "a replacement was launched");
}

#[tokio::test(start_paused = true)]
async fn idle_nodes_are_drained_then_terminated_keeping_min_workers() {
    let r = Rig::new(&CONFIG.replace("    max_workers: 10\n", "    max_workers: 10\n    min_workers: 1\n"));
    let mut a = r.autoscaler().await;
    step(&mut a).await;
    assert_eq!(launched_ids(&r.provider).len(), 1, "min_workers");
    r.cluster.request_resources(&[("CPU", 1.0)], 3);
    steps(&mut a, 4).await;
    assert_eq!((r.cluster.alive_of_type("small"), count(&a, InstanceStatus::Running)), (3, 3));
    r.cluster.request_resources(&[], 0);
    steps(&mut a, 10).await;
    assert_eq!(count(&a, InstanceStatus::Running), 3, "not idle long enough yet");
    tokio::time::advance(Duration::from_secs(60)).await;
    steps(&mut a, 3).await;
    assert_eq!(r.cluster.alive_of_type("small"), 1, "min_workers stay");
    assert_eq!(a.instances().len(), 1);
    assert_eq!(count(&a, InstanceStatus::Running), 1);
    let events = r.cluster.events();
    let drains: Vec<&String> = events.iter().filter(|e| e.starts_with("drain ")).collect();
    assert_eq!(drains.len(), 2, "{events:?}");
    for d in drains {
        assert!(d.ends_with("DRAIN_NODE_REASON_IDLE_TERMINATION"), "{d}");
        let cloud = d.split(' ').nth(1).unwrap_or_default();
        let at = |e: String| events.iter().position(|x| *x == e);
        let (drained, terminated) = (at(format!("drain {cloud} DRAIN_NODE_REASON_IDLE_TERMINATION")), at(format!("terminate {cloud}")));
        assert!(drained.is_some() && terminated.is_some() && drained < terminated, "drain first: {events:?}");
    }
    steps(&mut a, 5).await;
    assert_eq!(launched_ids(&r.provider).len(), 3, "nothing relaunched");
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_cannot_be_recorded_is_not_sent() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    steps(&mut a, 3).await;
    r.cluster.request_resources(&[], 0);
    r.storage.fail_writes_of(Some(InstanceStatus::Draining));
    tokio::time::advance(Duration::from_secs(61)).await;
    steps(&mut a, 3).await;
    assert!(!r.cluster.events().iter().any(|e| e.starts_with("drain")), "{:?}", r.cluster.events());
    assert_eq!(count(&a, InstanceStatus::Running), 1);
    r.storage.fail_writes_of(None);
    steps(&mut a, 3).await;
    assert!(r.cluster.events().iter().any(|e| e.starts_with("drain")));
    assert!(a.instances().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_busy_node_refuses_the_drain_and_stays_running() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.cluster.request_resources(&[("CPU", 1.0)], 1);
    steps(&mut a, 3).await;
    r.cluster.request_resources(&[], 0);
    tokio::time::advance(Duration::from_secs(61)).await;
    // Busy between the decision and the drain: the round decides, then the node
    // takes work before the drain arrives.
    a.round().await.expect("round");
    assert_eq!(count(&a, InstanceStatus::Draining), 1, "recorded before it is asked");
    let cloud = r.provider.instances()[0].cloud_id.clone();
    r.cluster.set_busy(&cloud, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.apply_outcomes().await;
    assert_eq!(count(&a, InstanceStatus::Running), 1, "back to running after the refusal");
    steps(&mut a, 3).await;
    assert_eq!(r.cluster.alive_of_type("small"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_launch_backs_off_is_reported_and_is_retried_after() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.provider.fail_next_launch(ProviderError::new(ErrorClass::Capacity, "no capacity for small instances"));
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    step(&mut a).await;
    assert_eq!(r.provider.create_calls().len(), 1);
    assert!(a.instances().is_empty(), "failed instances leave the table");
    assert!(r.storage.records().await.is_empty(), "and storage");
    let failed_at = tokio::time::Instant::now();
    step(&mut a).await;
    let report = r.cluster.last_report().expect("a report");
    let f = report.failed_instance_requests.first().expect("the failure is reported");
    assert_eq!((f.ray_node_type_name.as_str(), f.count), ("small", 2));
    assert!(f.reason.contains("no capacity for small instances") && f.reason.contains("paused for 5 s"), "{}", f.reason);
    assert!(f.start_ts_ms >= T0 && f.failed_ts_ms >= f.start_ts_ms);
    while failed_at.elapsed() < Duration::from_millis(4_500) {
        step(&mut a).await;
    }
    assert_eq!(r.provider.create_calls().len(), 1, "no retry before the back-off ends");
    steps(&mut a, 4).await;
    assert_eq!(r.provider.create_calls().len(), 2, "retried once after it");
    assert_eq!(r.cluster.alive_of_type("small"), 2);
    assert_eq!(r.cluster.last_report().expect("report").failed_instance_requests.len(), 1, "still shown as recent");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_autoscaler_adopts_and_finishes_without_launching_twice() {
    let r = Rig::new(CONFIG);
    {
        let mut old = r.autoscaler().await;
        r.cluster.request_resources(&[("CPU", 1.0)], 4);
        // The provider creates 2 of the 4, and the autoscaler dies during the call.
        r.provider.hang_next_launch_after(2);
        step(&mut old).await;
        assert_eq!(count(&old, InstanceStatus::Requested), 4);
    }
    // And one instance was created whose record was never written; one is of a
    // type the config no longer has.
    r.provider.add_unrecorded("small", "unrecorded1", &Rig::small());
    let stray = r.provider.add_unrecorded("retired_type", "unrecorded2", &Rig::small());
    assert_eq!(r.storage.records().await.len(), 4);
    assert_eq!(r.provider.created().len(), 4);

    let mut a = r.autoscaler().await;
    assert_eq!(count(&a, InstanceStatus::Requested), 4, "resumed with the table");
    steps(&mut a, 5).await;
    let calls = r.provider.create_calls();
    assert_eq!(calls.len(), 2, "one re-issue: {calls:?}");
    assert_eq!(calls[1].request_id, calls[0].request_id, "under the same launch request id");
    assert_eq!(calls[1].instance_ids.len(), 2, "for the two that were missing");
    let mut created = r.provider.created();
    created.sort();
    let n = created.len();
    created.dedup();
    assert_eq!(created.len(), n, "no instance created twice");
    assert_eq!(count(&a, InstanceStatus::Running), 5, "4 requested + 1 adopted");
    assert!(a.instances().contains_key("unrecorded1"));
    assert!(r.cluster.events().contains(&format!("terminate {stray}")), "the stray is terminated");
    assert_eq!(r.cluster.alive_of_type("small"), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_persist_launches_nothing_until_it_is_recorded() {
    let r = Rig::new(CONFIG);
    let mut a = r.autoscaler().await;
    r.storage.fail_writes_of(Some(InstanceStatus::Requested));
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    step(&mut a).await;
    assert!(r.provider.create_calls().is_empty(), "the provider is never asked for a launch that was not recorded");
    steps(&mut a, 3).await;
    assert!(r.provider.create_calls().is_empty(), "nor in the next rounds while storage fails");
    assert_eq!(count(&a, InstanceStatus::Queued), 2, "still wanted, so not decided again");
    assert!(r.storage.records().await.iter().all(|i| i.status() == InstanceStatus::Queued));

    r.storage.fail_writes_of(None);
    step(&mut a).await;
    let calls = r.provider.create_calls();
    assert_eq!(calls.len(), 1, "launched once the request is recorded");
    assert_eq!(calls[0].instance_ids.len(), 2);
    steps(&mut a, 4).await;
    assert_eq!(r.provider.create_calls().len(), 1, "exactly once");
    assert_eq!((r.cluster.alive_of_type("small"), count(&a, InstanceStatus::Running)), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_vanished_instance_is_replaced_to_keep_min_workers() {
    let r = Rig::new(&CONFIG.replace("    max_workers: 10\n", "    max_workers: 10\n    min_workers: 2\n"));
    let mut a = r.autoscaler().await;
    steps(&mut a, 3).await;
    assert_eq!(count(&a, InstanceStatus::Running), 2);
    let victim = r.provider.instances()[0].cloud_id.clone();
    // The raylet dies: the instance is terminated, and replaced.
    r.cluster.kill(&victim, "the raylet process exited");
    steps(&mut a, 4).await;
    assert!(r.cluster.events().contains(&format!("terminate {victim}")));
    assert_eq!(count(&a, InstanceStatus::Running), 2);
    assert_eq!(launched_ids(&r.provider).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn prices_from_the_config_reach_the_scheduler() {
    // By capacity alone one 4-CPU node is a little cheaper per bundle than four
    // 1-CPU nodes (a per-node overhead); the prices say the 1-CPU type is a bargain.
    let yaml = CONFIG.replace("head_node_type: head\n", "  big:\n    resources: {CPU: 4}\n    node_config: {}\nhead_node_type: head\n");
    let r = Rig::new(&yaml);
    let mut a = r.autoscaler().await;
    r.cluster.set_demand(&[("CPU", 1.0)], 4);
    step(&mut a).await;
    let calls = r.provider.create_calls();
    assert_eq!((calls[0].node_type.as_str(), calls[0].instance_ids.len()), ("big", 1), "no prices: capacity decides");

    let priced = yaml
        .replace("    max_workers: 10\n", "    max_workers: 10\n    price: 0.1\n")
        .replace("    resources: {CPU: 4}\n", "    resources: {CPU: 4}\n    price: 1.0\n");
    let r = Rig::new(&priced);
    assert_eq!(r.config.node_type("big").and_then(|t| t.price), Some(1.0));
    let mut a = r.autoscaler().await;
    r.cluster.set_demand(&[("CPU", 1.0)], 4);
    step(&mut a).await;
    let calls = r.provider.create_calls();
    assert_eq!((calls[0].node_type.as_str(), calls[0].instance_ids.len()), ("small", 4), "0.1 per CPU beats 0.25: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn run_loads_the_table_scales_and_stops_on_shutdown() {
    let r = Rig::new(CONFIG);
    let a = Autoscaler::new(r.config.clone(), r.cluster.clone(), r.provider.clone(), r.storage.clone())
        .with_clock(Clock::starting_at(T0))
        .with_tick(Duration::from_millis(500));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(a.run(shutdown.clone()));
    r.cluster.request_resources(&[("CPU", 1.0)], 3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(r.cluster.alive_of_type("small"), 3);
    assert_eq!(r.provider.create_calls().len(), 1);
    let stored = r.storage.records().await;
    assert!(stored.len() == 3 && stored.iter().all(|i| i.status() == InstanceStatus::Running), "{stored:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
}

#[tokio::test(start_paused = true)]
async fn a_drain_recorded_before_a_restart_is_asked_again() {
    let r = Rig::new(CONFIG);
    {
        let mut old = r.autoscaler().await;
        r.cluster.request_resources(&[("CPU", 1.0)], 1);
        steps(&mut old, 3).await;
        r.cluster.request_resources(&[], 0);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Recorded as DRAINING, and the autoscaler dies before the drain is sent.
        old.round().await.expect("round");
        assert_eq!(count(&old, InstanceStatus::Draining), 1);
    }
    assert!(!r.cluster.events().iter().any(|e| e.starts_with("drain")));
    let mut a = r.autoscaler().await;
    steps(&mut a, 3).await;
    let events = r.cluster.events();
    assert!(events.iter().any(|e| e.starts_with("drain ") && e.ends_with("DRAIN_NODE_REASON_IDLE_TERMINATION")), "{events:?}");
    assert!(a.instances().is_empty() && r.cluster.alive_of_type("small") == 0, "drained, then terminated");
}

#[tokio::test(start_paused = true)]
async fn a_new_config_takes_effect_from_the_next_round() {
    let r = Rig::new(CONFIG);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut a = r.autoscaler().await.with_config_updates(rx);
    r.cluster.request_resources(&[("CPU", 1.0)], 2);
    steps(&mut a, 3).await;
    assert_eq!(r.cluster.alive_of_type("small"), 2);
    // The file now allows 3 workers, and wants 1 kept; the demand asks for 6.
    let edited = CONFIG
        .replace("max_workers: 10\nidle", "max_workers: 3\nidle")
        .replace(
            "    max_workers: 10\n",
            "    max_workers: 10\n    min_workers: 1\n",
        );
    let config = ClusterConfig::parse("test.yaml", &edited).expect("valid");
    tx.send(super::Reconfigure {
        config,
        setup: None,
    })
    .expect("send");
    r.cluster.request_resources(&[("CPU", 1.0)], 6);
    steps(&mut a, 4).await;
    assert_eq!(
        r.cluster.alive_of_type("small"),
        3,
        "the new max_workers caps it"
    );
    r.cluster.request_resources(&[], 0);
    tokio::time::advance(Duration::from_secs(61)).await;
    steps(&mut a, 4).await;
    assert_eq!(
        r.cluster.alive_of_type("small"),
        1,
        "and its min_workers is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_type_without_capacity_backs_off_and_the_demand_goes_to_another_type() {
    // The cheap 1-CPU type is preferred; when its launch finds no capacity, the
    // same demand is placed on the 4-CPU type in the next round.
    let yaml = CONFIG
        .replace("head_node_type: head\n", "  big:\n    resources: {CPU: 4}\n    node_config: {}\n    price: 1.0\nhead_node_type: head\n")
        .replace("    max_workers: 10\n", "    max_workers: 10\n    price: 0.1\n");
    let r = Rig::new(&yaml);
    let mut a = r.autoscaler().await;
    r.provider.fail_next_launch(ProviderError::new(ErrorClass::Capacity, "InsufficientInstanceCapacity in every subnet"));
    r.cluster.set_demand(&[("CPU", 1.0)], 4);
    step(&mut a).await;
    assert_eq!(r.provider.create_calls()[0].node_type, "small");
    steps(&mut a, 3).await;
    let calls = r.provider.create_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[1].node_type.as_str(), calls[1].instance_ids.len()), ("big", 1), "the other type that fits takes the demand");
    assert_eq!(r.cluster.alive_of_type("big"), 1);
    let f = &r.cluster.last_report().expect("report").failed_instance_requests[0];
    assert!(f.ray_node_type_name == "small" && f.reason.contains("paused for 5 s"), "{f:?}");
}

#[tokio::test(start_paused = true)]
async fn a_raylet_that_registers_before_its_instance_is_allocated_is_counted_once() {
    // The provider lists a new instance and its raylet reaches the GCS before the
    // launch's outcome is applied: the round that marks it ALLOCATED also sees its
    // Ray node. It must count once against max_workers, not once as a Ray node and
    // once as an instance on its way (which retired an idle node as over the cap).
    let r = Rig::new(&CONFIG.replace("    max_workers: 10\n", "    max_workers: 2\n"));
    r.cluster.register_manually();
    let mut a = r.autoscaler().await;
    r.cluster.set_demand(&[("CPU", 1.0)], 1);
    step(&mut a).await;
    let first = r.provider.instances()[0].cloud_id.clone();
    r.cluster.register(&first, "small", &Rig::small());
    steps(&mut a, 2).await;
    assert_eq!(count(&a, InstanceStatus::Running), 1);
    r.cluster.set_busy(&first, true);
    r.cluster.set_demand(&[("CPU", 1.0)], 1);
    a.round().await.expect("round");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&a, InstanceStatus::Requested), 1, "the second launch's outcome is not applied yet");
    let second = r.provider.instances().into_iter().map(|i| i.cloud_id).find(|c| *c != first).expect("second");
    r.cluster.register(&second, "small", &Rig::small());
    r.cluster.set_busy(&first, false);
    tokio::time::advance(Duration::from_secs(5)).await;
    a.round().await.expect("round");
    a.apply_outcomes().await;
    steps(&mut a, 2).await;
    assert!(!r.cluster.events().iter().any(|e| e.starts_with("drain") || e.starts_with("terminate")), "{:?}", r.cluster.events());
    assert_eq!(count(&a, InstanceStatus::Running), 2);
}
