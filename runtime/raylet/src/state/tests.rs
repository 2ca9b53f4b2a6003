//! The node state's invariants, driven through its methods only, with a fake
//! process control (nothing is spawned or killed for real).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use ray_common::{FixedPoint, ResourceSet};
use ray_proto::rpc::RequestWorkerLeaseReply;
use ray_proto::rpc::autoscaler::DrainNodeReason;
use tokio::sync::oneshot;

use super::*;
use crate::spawner::{ProcessControl, SpawnRequest};
use crate::worker_pool::PoolConfig;

/// Records spawn requests and kills.
#[derive(Clone, Default)]
struct FakeProcs {
    spawned: Arc<Mutex<Vec<SpawnRequest>>>,
    killed: Arc<Mutex<Vec<u32>>>,
}

impl ProcessControl for FakeProcs {
    fn spawn(&self, req: SpawnRequest) {
        self.spawned.lock().unwrap().push(req);
    }
    fn kill(&self, pid: u32) {
        if pid > 0 {
            self.killed.lock().unwrap().push(pid);
        }
    }
}

fn cpus(n: i64) -> ResourceSet {
    [("CPU".to_string(), FixedPoint::from_int(n))].into_iter().collect()
}

struct Node {
    s: NodeState,
    procs: FakeProcs,
    /// Spawn requests already brought up.
    up: usize,
    /// Worker id -> pid, for the workers brought up.
    pids: HashMap<String, u32>,
    _dir: tempfile::TempDir,
}

/// Above any real pid_max: nothing real is ever named.
const FIRST_PID: u32 = 5_000_000;

fn node_with(total: ResourceSet, soft_limit: usize, max_idle: Duration) -> Node {
    let procs = FakeProcs::default();
    let config = PoolConfig {
        soft_limit,
        idle_kill_threshold: max_idle,
        max_idle,
        max_starting: 4,
        log_dir: std::env::temp_dir(),
        env: Vec::new(),
        worker_args: vec!["--node-id".into(), "n1".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::create(dir.path(), "t", 1 << 16).unwrap();
    let pool = WorkerPool::new(config, Box::new(procs.clone()));
    let s = NodeState::new("n1".into(), total, pool, store, vec!["python".into(), "worker.py".into()]);
    Node { s, procs, up: 0, pids: HashMap::new(), _dir: dir }
}

fn node(n: i64) -> Node {
    node_with(cpus(n), 0, Duration::from_secs(3600))
}

/// A node of `n` CPUs with a driver of job "j" holding one granted lease of `shape`.
fn leased(n: i64, shape: ResourceSet) -> (Node, RequestWorkerLeaseReply) {
    let mut node = node(n);
    node.driver("j");
    let mut a = node.request(shape, "driver");
    node.bring_up();
    let a = granted(&mut a).expect("granted once the worker is up");
    (node, a)
}

impl Node {
    fn spawned(&self) -> usize {
        self.procs.spawned.lock().unwrap().len()
    }

    fn killed(&self) -> Vec<u32> {
        self.procs.killed.lock().unwrap().clone()
    }

    /// Every worker spawned so far starts and registers (each registration
    /// re-dispatches by itself).
    fn bring_up(&mut self) {
        let reqs: Vec<SpawnRequest> = self.procs.spawned.lock().unwrap()[self.up..].to_vec();
        for req in reqs {
            self.up += 1;
            let pid = FIRST_PID + self.up as u32;
            self.pids.insert(req.worker_id.clone(), pid);
            assert!(self.s.worker_started(&req.worker_id, pid));
            assert!(self.s.register_worker(&req.worker_id, &format!("10.0.0.1:{pid}"), pid));
        }
    }

    fn driver(&mut self, job: &str) {
        self.s.register_driver(job, 4_900_000, "driver", "10.0.0.1:1", Vec::new());
    }

    fn request(&mut self, shape: ResourceSet, owner: &str) -> oneshot::Receiver<RequestWorkerLeaseReply> {
        let req = LeaseRequest { shape, job_id: "j".into(), owner: owner.into(), no_spillback: false, pinned: false, wait: false, hold: None, detached: false, runtime_env: String::new() };
        match self.s.request_lease(req) {
            LeaseAnswer::Later(rx) => rx,
            LeaseAnswer::Now(r) => panic!("refused at once: {r:?}"),
        }
    }

    fn available_cpus(&self) -> f64 {
        self.s.stats().resources_available.get("CPU").copied().unwrap_or(0.0)
    }
}

/// The grant, if one came.
fn granted(rx: &mut oneshot::Receiver<RequestWorkerLeaseReply>) -> Option<RequestWorkerLeaseReply> {
    let r = rx.try_recv().ok()?;
    assert!(r.rejection.is_empty() && r.spillback_address.is_empty(), "not a grant: {r:?}");
    Some(r)
}

#[test]
fn a_request_starts_a_worker_and_is_granted_when_it_registers() {
    let mut n = node(1);
    n.driver("j");
    assert_eq!(n.spawned(), 0, "no prestart with a soft limit of 0");
    let mut a = n.request(cpus(1), "driver");
    assert_eq!(n.spawned(), 1, "queueing dispatched: a worker is starting");
    assert!(granted(&mut a).is_none());
    let spawn = n.procs.spawned.lock().unwrap()[0].clone();
    assert!(spawn.command.iter().any(|a| a == "--node-id=n1"), "the node's worker args: {:?}", spawn.command);
    n.bring_up();
    let a = granted(&mut a).expect("registration dispatched");
    assert_eq!(n.pids.get(&a.worker_id), Some(&a.worker_pid));
    assert_eq!(n.available_cpus(), 0.0);
}

#[test]
fn a_returned_lease_grants_a_queued_request_without_any_other_call() {
    let (mut n, a) = leased(1, cpus(1));
    let mut b = n.request(cpus(1), "driver");
    assert!(granted(&mut b).is_none(), "waits for the CPU");
    assert_eq!(n.s.stats().demand.len(), 1, "reported as demand");
    n.s.take_wake();
    assert!(n.s.return_lease(&a.lease_id, false));
    assert!(n.s.take_wake().report, "the reporter hears");
    let b = granted(&mut b).expect("the return dispatched");
    assert_eq!(b.worker_id, a.worker_id, "the idle worker is reused");
    assert!(n.s.stats().demand.is_empty(), "demand refreshed");
    assert!(!n.s.return_lease(&a.lease_id, false), "a lease ends once");
}

#[test]
fn a_worker_exit_frees_its_lease_and_dispatches() {
    let (mut n, a) = leased(1, cpus(1));
    let mut b = n.request(cpus(1), "driver");
    let spawned = n.spawned();
    let gone = n.s.worker_exited(a.worker_pid).expect("a known worker");
    assert_eq!((gone.id.as_str(), gone.leased), (a.worker_id.as_str(), true));
    assert_eq!(n.spawned(), spawned + 1, "the freed CPU got a worker started for the queued request");
    n.bring_up();
    assert!(granted(&mut b).is_some());
    assert!(n.s.worker_exited(a.worker_pid).is_none(), "an exit is seen once");
}

#[test]
fn a_request_that_fits_is_not_held_up_by_one_that_does_not() {
    let mut n = node(2);
    n.driver("j");
    let mut a = n.request(cpus(1), "driver");
    n.bring_up();
    assert!(granted(&mut a).is_some());
    let mut big = n.request(cpus(2), "driver");
    let mut small = n.request(cpus(1), "driver");
    n.bring_up();
    assert!(granted(&mut small).is_some(), "no head-of-line blocking");
    assert!(granted(&mut big).is_none());
}

#[test]
fn requests_spill_to_a_node_with_room_unless_told_not_to() {
    let mut n = node(1);
    n.driver("j");
    let mut a = n.request(cpus(1), "driver");
    n.bring_up();
    assert!(granted(&mut a).is_some());
    let mut back = match n.s.request_lease(LeaseRequest {
        shape: cpus(1),
        job_id: "j".into(),
        owner: "driver".into(),
        no_spillback: true,
        pinned: false,
        wait: false,
        hold: None,
        detached: false,
        runtime_env: String::new(),
    }) {
        LeaseAnswer::Later(rx) => rx,
        LeaseAnswer::Now(r) => panic!("{r:?}"),
    };
    let back = back.try_recv().expect("a request spilled here that no longer fits is answered at once");
    assert!(back.retry && back.lease_id.is_empty(), "sent back to ask its own raylet again: {back:?}");
    let mut stay = match n.s.request_lease(LeaseRequest {
        shape: cpus(1),
        job_id: "j".into(),
        owner: "driver".into(),
        no_spillback: false,
        pinned: true,
        wait: true,
        hold: None,
        detached: false,
        runtime_env: String::new(),
    }) {
        LeaseAnswer::Later(rx) => rx,
        LeaseAnswer::Now(r) => panic!("{r:?}"),
    };
    let mut b = n.request(cpus(1), "driver");
    assert!(b.try_recv().is_err(), "no other node known yet");
    let other = RemoteNode { node_id: "n2".into(), address: "10.0.0.2:7000".into(), available: cpus(1), total: cpus(1) };
    n.s.set_cluster_view(vec![other]);
    let b = b.try_recv().expect("the new view dispatched");
    assert_eq!((b.spillback_node_id.as_str(), b.spillback_address.as_str()), ("n2", "10.0.0.2:7000"));
    assert!(stay.try_recv().is_err(), "a request pinned here by its strategy stays, though another node is free");

    let refused = n.s.request_lease(LeaseRequest {
        shape: cpus(8),
        job_id: "j".into(),
        owner: "driver".into(),
        no_spillback: true,
        pinned: false,
        wait: false,
        hold: None,
        detached: false,
        runtime_env: String::new(),
    });
    assert!(matches!(refused, LeaseAnswer::Now(ref r) if r.infeasible), "{refused:?}");
}

#[test]
fn a_blocked_worker_lends_its_cpu_and_takes_it_back() {
    let (mut n, a) = leased(1, cpus(1));
    let mut b = n.request(cpus(1), &a.worker_id);
    n.s.set_blocked(&a.worker_id, true);
    n.bring_up();
    let b = granted(&mut b).expect("the lent CPU went to the nested task");
    n.s.set_blocked(&a.worker_id, false);
    assert_eq!(n.available_cpus(), 0.0, "taken back by overdrawing");
    n.s.return_lease(&b.lease_id, false);
    assert_eq!(n.available_cpus(), 0.0, "the first release repays the debt");
    n.s.return_lease(&a.lease_id, false);
    assert_eq!(n.available_cpus(), 1.0);
}

#[test]
fn a_closed_lease_stream_kills_the_worker_and_frees_its_resources() {
    let (mut n, a) = leased(1, cpus(1));
    assert!(n.s.lease_stream_closed(&a.lease_id));
    assert_eq!(n.killed(), vec![a.worker_pid]);
    assert_eq!(n.available_cpus(), 1.0);
    assert_eq!(n.s.stats().num_workers, 0);
    let gone = n.s.worker_exited(a.worker_pid).expect("its exit still finds it (store pins)");
    assert_eq!((gone.id, gone.leased), (a.worker_id, false));
    assert!(!n.s.lease_stream_closed(&a.lease_id), "a returned lease is not ended again");
}

#[test]
fn leases_of_an_owner_that_exits_end_and_their_workers_stop() {
    let (mut n, a) = leased(2, cpus(1));
    let mut nested = n.request(cpus(1), &a.worker_id);
    n.bring_up();
    let nested = granted(&mut nested).unwrap();
    let mut queued = n.request(cpus(1), &a.worker_id);
    n.s.worker_exited(a.worker_pid).unwrap();
    assert_eq!(n.killed(), vec![nested.worker_pid], "the worker running the owner's task is stopped");
    assert!(queued.try_recv().is_err(), "the owner's queued request is dropped");
    assert_eq!(n.available_cpus(), 2.0);
}

#[test]
fn a_worker_exit_releases_its_pins_and_the_objects_it_owned() {
    let (mut n, a) = leased(1, cpus(1));
    n.s.create_object(b"mine", 100, &a.worker_id, &a.worker_address).unwrap();
    n.s.seal_object(b"mine").unwrap();
    n.s.create_object(b"half", 100, &a.worker_id, "10.0.0.1:1").unwrap();
    n.s.create_object(b"theirs", 100, "driver", "10.0.0.1:1").unwrap();
    n.s.seal_object(b"theirs").unwrap();
    assert!(n.s.get_objects(&[b"theirs".to_vec()], &a.worker_id, false).unwrap()[0].found);
    n.s.delete_objects(&[b"theirs".to_vec()]);
    assert_eq!(n.s.stats().num_objects, 3, "pinned by the reader");
    n.s.worker_exited(a.worker_pid).unwrap();
    assert_eq!(n.s.stats().num_objects, 0, "owned, half-written and pinned objects all went");
}

#[test]
fn a_driver_exit_ends_its_job_unless_the_job_has_another_driver() {
    let (mut n, a) = leased(1, cpus(1));
    let mut queued = n.request(cpus(1), "driver");
    n.s.create_object(b"x", 10, "driver", "10.0.0.1:1").unwrap();
    n.s.seal_object(b"x").unwrap();
    assert_eq!(n.s.local_drivers(), vec![("j".to_string(), 4_900_000)]);
    assert!(!n.s.driver_exited("j", 123), "another driver's pid");
    assert!(n.s.driver_exited("j", 4_900_000));
    assert_eq!(n.killed(), vec![a.worker_pid]);
    assert!(matches!(queued.try_recv(), Err(oneshot::error::TryRecvError::Closed)), "the caller hears it was dropped");
    let stats = n.s.stats();
    assert_eq!((stats.num_workers, stats.num_objects), (0, 0));
    assert_eq!(n.available_cpus(), 1.0);
    assert!(n.s.local_drivers().is_empty());
}

#[test]
fn idle_drain_is_refused_while_a_lease_exists_even_without_resources() {
    let (mut n, a) = leased(1, ResourceSet::new());
    assert!(n.s.drain(DrainNodeReason::IdleTermination, "idle".into()).is_err());
    n.s.return_lease(&a.lease_id, false);
    assert!(n.s.drain(DrainNodeReason::IdleTermination, "idle".into()).is_ok());
    assert_eq!(n.s.drain_state().map(|d| d.message), Some("idle".to_string()));
    let refused = n.s.request_lease(LeaseRequest { shape: cpus(1), job_id: "j".into(), owner: "d".into(), no_spillback: false, pinned: false, wait: false, hold: None, detached: false, runtime_env: String::new() });
    assert!(matches!(refused, LeaseAnswer::Now(ref r) if r.rejection.contains("draining")), "{refused:?}");
}

#[test]
fn a_drain_spills_what_was_queued() {
    let mut n = node(1);
    n.driver("j");
    let other = RemoteNode { node_id: "n2".into(), address: "10.0.0.2:7000".into(), available: cpus(1), total: cpus(1) };
    n.s.set_cluster_view(vec![other]);
    let mut a = n.request(cpus(1), "driver");
    assert!(a.try_recv().is_err(), "waits for a local worker");
    assert!(n.s.drain(DrainNodeReason::Preemption, "spot".into()).is_ok());
    assert_eq!(a.try_recv().unwrap().spillback_node_id, "n2");
}

#[test]
fn idle_workers_are_stopped_and_leased_ones_are_not() {
    let mut n = node_with(cpus(2), 0, Duration::ZERO);
    n.driver("j");
    let mut a = n.request(cpus(1), "driver");
    let mut b = n.request(cpus(1), "driver");
    n.bring_up();
    let a = granted(&mut a).unwrap();
    let b = granted(&mut b).unwrap();
    n.s.return_lease(&b.lease_id, false);
    let stopped = n.s.stop_idle_workers();
    assert_eq!(stopped, vec![(b.worker_id.clone(), b.worker_pid)]);
    assert_eq!(n.killed(), vec![b.worker_pid]);
    assert_eq!(n.s.stats().num_workers, 1);
    assert!(n.s.stop_idle_workers().is_empty(), "the leased one stays");
    n.s.return_lease(&a.lease_id, false);
}

#[test]
fn a_driver_prestarts_workers_once() {
    let mut n = node_with(cpus(4), 3, Duration::from_secs(3600));
    n.driver("j");
    assert_eq!(n.spawned(), 3);
    n.driver("j");
    assert_eq!(n.spawned(), 3, "the job has its workers");
    n.bring_up();
    assert_eq!(n.s.stats().num_workers, 3);
}

#[test]
fn a_worker_started_after_its_job_ended_is_killed() {
    let mut n = node_with(cpus(1), 1, Duration::from_secs(3600));
    n.driver("j");
    let id = n.procs.spawned.lock().unwrap()[0].worker_id.clone();
    assert!(n.s.driver_exited("j", 4_900_000));
    assert!(!n.s.worker_started(&id, FIRST_PID));
    assert_eq!(n.killed(), vec![FIRST_PID]);
}

#[test]
fn a_failed_spawn_is_forgotten_and_retried_by_the_next_change() {
    let mut n = node(1);
    n.driver("j");
    let mut a = n.request(cpus(1), "driver");
    let id = n.procs.spawned.lock().unwrap()[0].worker_id.clone();
    n.s.worker_spawn_failed(&id);
    assert_eq!(n.spawned(), 1, "no hot respawn loop");
    n.s.set_cluster_view(Vec::new());
    assert_eq!(n.spawned(), 2);
    n.up = 1;
    n.bring_up();
    assert!(granted(&mut a).is_some());
}

#[test]
fn after_shut_down_workers_are_gone_and_nothing_is_queued() {
    let (mut n, a) = leased(2, cpus(1));
    let mut big = n.request(cpus(2), "driver");
    n.s.shut_down();
    assert_eq!(n.killed(), vec![a.worker_pid]);
    assert!(matches!(big.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
    let spawned = n.spawned();
    let late = n.s.request_lease(LeaseRequest { shape: cpus(1), job_id: "j".into(), owner: "d".into(), no_spillback: false, pinned: false, wait: false, hold: None, detached: false, runtime_env: String::new() });
    assert!(matches!(late, LeaseAnswer::Now(_)));
    n.s.return_lease(&a.lease_id, false);
    assert_eq!(n.spawned(), spawned, "no worker is started any more");
}

#[test]
fn reports_are_numbered_and_carry_resources_demand_and_store_use() {
    let mut n = node(1);
    n.driver("j");
    let first = n.s.report();
    assert_eq!((first.seq, first.node_id.as_str()), (1, "n1"));
    assert!(first.idle_duration_ms >= 1);
    let mut a = n.request(cpus(1), "driver");
    n.bring_up();
    granted(&mut a).unwrap();
    let _queued = n.request(cpus(1), "driver");
    n.s.create_object(b"x", 100, "driver", "10.0.0.1:1").unwrap();
    let r = n.s.report();
    assert_eq!(r.seq, 2);
    assert_eq!(r.idle_duration_ms, 0);
    assert_eq!(r.resources_available.get("CPU").copied().unwrap_or(0.0), 0.0);
    assert_eq!(r.resources_total.get("CPU"), Some(&1.0));
    assert_eq!(r.demand.len(), 1);
    assert_eq!(r.demand[0].backlog_size, 1);
    assert!(r.object_store_bytes_used >= 100);
}

#[test]
fn the_guard_wakes_the_reporter_and_readers_as_the_operation_asked() {
    let n = node(1);
    let shared = SharedState::new(n.s);
    let _ = shared.lock().stats();
    assert!(shared.changed().now_or_never().is_none(), "a read wakes nobody");
    shared.lock().cancel_lease_requests("nobody", &ResourceSet::new());
    assert!(shared.changed().now_or_never().is_some(), "a change wakes the reporter");

    let reader = shared.sealed_notifier();
    shared.lock().create_object(b"x", 10, "w", "").unwrap();
    assert!(shared.changed().now_or_never().is_some(), "store use is in the report");
    let mut reader = reader;
    assert!(reader.as_mut().now_or_never().is_none(), "not sealed yet");
    let reader = shared.sealed_notifier();
    shared.lock().seal_object(b"x").unwrap();
    assert!(reader.now_or_never().is_some(), "a seal wakes waiting readers");
    let found = shared.lock().get_objects(&[b"x".to_vec(), b"y".to_vec()], "r", false);
    assert!(found.is_none(), "waits while one is missing");
    let found = shared.lock().get_objects(&[b"x".to_vec(), b"y".to_vec()], "r", true).unwrap();
    assert_eq!(found.iter().map(|o| o.found).collect::<Vec<_>>(), vec![true, false]);
}

#[test]
fn an_actor_lease_needs_its_placement_shape_holds_its_own_and_a_detached_one_outlives_the_job() {
    let mut n = node(2);
    n.driver("j");
    let actor = |detached: bool| LeaseRequest {
        shape: cpus(1),
        job_id: "j".into(),
        owner: "driver".into(),
        no_spillback: false,
        pinned: false,
        wait: true,
        hold: Some(ResourceSet::new()),
        detached,
        runtime_env: String::new(),
    };
    let mut plain = match n.s.request_lease(actor(false)) {
        LeaseAnswer::Later(rx) => rx,
        LeaseAnswer::Now(r) => panic!("{r:?}"),
    };
    let mut kept = match n.s.request_lease(actor(true)) {
        LeaseAnswer::Later(rx) => rx,
        LeaseAnswer::Now(r) => panic!("{r:?}"),
    };
    n.bring_up();
    let (plain, kept) = (granted(&mut plain).expect("placed"), granted(&mut kept).expect("placed"));
    assert_eq!(n.available_cpus(), 2.0, "a default actor holds no CPU while it runs");
    assert!(n.s.driver_exited("j", 4_900_000));
    assert_eq!(n.killed(), vec![plain.worker_pid], "only the attached actor's worker dies with its job");
    assert_eq!(n.s.stats().num_workers, 1);
    assert!(n.s.return_lease(&kept.lease_id, true), "the detached actor's lease lives on");
}

#[test]
fn an_idle_worker_that_owns_leases_is_kept() {
    let mut n = node_with(cpus(2), 0, Duration::ZERO);
    n.driver("j");
    let mut a = n.request(cpus(1), "driver");
    n.bring_up();
    let a = granted(&mut a).unwrap();
    // The worker of lease `a` creates an actor: it owns the actor's lease.
    let mut actor = n.request(cpus(1), &a.worker_id);
    n.bring_up();
    let actor = granted(&mut actor).unwrap();
    n.s.return_lease(&a.lease_id, false);
    assert!(n.s.stop_idle_workers().is_empty(), "the idle owner stays while what it owns lives");
    n.s.return_lease(&actor.lease_id, false);
    let stopped: Vec<String> = n.s.stop_idle_workers().into_iter().map(|(id, _)| id).collect();
    assert_eq!(stopped.len(), 2, "then both go: {stopped:?}");
}

#[test]
fn workers_serve_one_runtime_env_and_get_it_in_their_environment() {
    let mut n = node(2);
    n.driver("j");
    let env = r#"{"env_vars":{"A":"1"}}"#;
    let with_env = |n: &mut Node, runtime_env: &str| {
        let req = LeaseRequest {
            shape: cpus(1),
            job_id: "j".into(),
            owner: "driver".into(),
            no_spillback: false,
            pinned: false,
            wait: false,
            hold: None,
            detached: false,
            runtime_env: runtime_env.into(),
        };
        match n.s.request_lease(req) {
            LeaseAnswer::Later(rx) => rx,
            LeaseAnswer::Now(r) => panic!("refused at once: {r:?}"),
        }
    };
    let mut plain = with_env(&mut n, "");
    n.bring_up();
    let plain = granted(&mut plain).expect("a plain worker");
    n.s.return_lease(&plain.lease_id, false);
    // An idle plain worker is there, but a request for an environment gets a
    // worker of its own, started with the environment in RAY_RUNTIME_ENV.
    let mut in_env = with_env(&mut n, env);
    assert!(granted(&mut in_env).is_none(), "never the plain worker");
    let spawned = n.procs.spawned.lock().unwrap().last().cloned().unwrap();
    assert!(spawned.env.iter().any(|(k, v)| k == "RAY_RUNTIME_ENV" && v == env), "{:?}", spawned.env);
    assert!(!spawned.command.iter().any(|a| a.contains("env_vars")), "never on the command line");
    n.bring_up();
    let leased = granted(&mut in_env).expect("its own worker");
    assert_ne!(leased.worker_id, plain.worker_id);
    n.s.return_lease(&leased.lease_id, false);
    // And the environment's worker is not handed to plain requests.
    let mut again = with_env(&mut n, "");
    assert_eq!(granted(&mut again).expect("the idle plain worker").worker_id, plain.worker_id);
}
