use super::super::*;
use super::*;
use crate::scheduler::test_support::{GIB, priced as ty, priced_input as input, rs};

fn left_of(p: &Planner, i: &Input) -> Vec<Left> {
    i.demands.iter().map(|d| (p.space.vec(&d.shape), d.count, d.shape.clone(), LaunchReason::Demand)).collect()
}

fn capped(p: &Planner) -> u64 {
    p.decision.capped.iter().map(|d| d.count).sum()
}

#[test]
fn complementary_shapes_share_nodes_of_the_cheap_type() {
    // A CPU-heavy and a memory-heavy shape: one of each fills a "both" node
    // exactly, the cheapest way; alone, each would rather take its own type.
    let mut i = input(vec![
        ty("both", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 1000, 1.0),
        ty("cpu", &[("CPU", 4.0), ("memory", 4.0 * GIB)], 1000, 0.7),
        ty("mem", &[("CPU", 1.0), ("memory", 16.0 * GIB)], 1000, 0.7),
    ]);
    i.demands.push(Demand { shape: rs(&[("CPU", 3.0), ("memory", 2.0 * GIB)]), count: 40 });
    i.demands.push(Demand { shape: rs(&[("CPU", 1.0), ("memory", 14.0 * GIB)]), count: 40 });
    let p = Planner::new(&i);
    let q = plan(&p, &left_of(&p, &i), &[], &mut decision_budget()).expect("tried");
    assert_eq!(capped(&q), 0);
    assert_eq!(q.decision.launch_by_type(), BTreeMap::from([("both".to_string(), 40)]), "{:?}", q.decision.launch);
    // decide keeps the cheapest of its plans, which is this one.
    assert_eq!(decide(&i).launch_by_type(), BTreeMap::from([("both".to_string(), 40)]));
}

#[test]
fn the_most_shapes_it_takes_are_planned_within_the_work_budget() {
    // 32 shapes (4 CPU sizes x 8 memory sizes), a few bundles each: the work
    // budget runs out before the LP rounds everything, and the rest goes
    // shape by shape; every bundle is still placed.
    let mut i = input(vec![
        ty("m4", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 1000, 0.192),
        ty("m16", &[("CPU", 16.0), ("memory", 64.0 * GIB)], 1000, 0.768),
        ty("r4", &[("CPU", 4.0), ("memory", 32.0 * GIB)], 1000, 0.252),
    ]);
    for cpu in [0.5, 1.0, 2.0, 4.0] {
        for mem in [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0] {
            i.demands.push(Demand { shape: rs(&[("CPU", cpu), ("memory", mem * GIB)]), count: 3 });
        }
    }
    let p = Planner::new(&i);
    let left = left_of(&p, &i);
    assert_eq!(left.len(), MAX_SHAPES);
    let q = plan(&p, &left, &[], &mut decision_budget()).expect("tried");
    assert_eq!(capped(&q), 0, "{:?}", q.decision.capped);
    let d = decide(&i);
    assert!(d.capped.is_empty());
    let c = bound::costing(&i, &d);
    assert!(c.plan_per_hour <= c.lower_bound_per_hour.unwrap() * 1.10, "{c:?}");
    // One shape more and it is not tried.
    let mut more = left.clone();
    more.push((p.space.vec(&rs(&[("CPU", 3.0)])), 1, rs(&[("CPU", 3.0)]), LaunchReason::Demand));
    assert!(plan(&p, &more, &[], &mut decision_budget()).is_none());
}

#[test]
fn a_lone_spread_group_gets_the_cheapest_node_per_bundle_and_many_share_the_cheapest_per_slot() {
    let types = || {
        vec![
            ty("m5.xlarge", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 1000, 0.192),
            ty("c5.2xlarge", &[("CPU", 8.0), ("memory", 16.0 * GIB)], 1000, 0.34),
        ]
    };
    let group = |k: usize| Gang { bundles: vec![rs(&[("CPU", 2.0)]); k], strategy: PlacementStrategy::StrictSpread };
    let mut i = input(types());
    i.gangs.push(group(3));
    assert_eq!(decide(&i).launch_by_type(), BTreeMap::from([("m5.xlarge".to_string(), 3)]));
    // 40 groups of 3: four bundles of different groups share each 8-CPU node.
    let mut i = input(types());
    i.gangs = (0..40).map(|_| group(3)).collect();
    let d = decide(&i);
    assert!(d.capped.is_empty());
    assert_eq!(d.launch_by_type(), BTreeMap::from([("c5.2xlarge".to_string(), 30)]), "{:?}", d.launch);
}

#[test]
fn spread_groups_and_memory_heavy_tasks_are_planned_together() {
    // 2-CPU group bundles fill the CPUs that memory-heavy tasks leave on
    // m8 nodes; planned apart, the groups would take nodes of their own.
    let mut i = input(vec![
        ty("c8", &[("CPU", 8.0), ("memory", 16.0 * GIB)], 1000, 0.34),
        ty("m8", &[("CPU", 8.0), ("memory", 64.0 * GIB)], 1000, 0.40),
    ]);
    i.gangs = (0..10).map(|_| Gang { bundles: vec![rs(&[("CPU", 2.0)]); 2], strategy: PlacementStrategy::StrictSpread }).collect();
    i.demands.push(Demand { shape: rs(&[("CPU", 1.0), ("memory", 16.0 * GIB)]), count: 40 });
    let d = decide(&i);
    assert!(d.capped.is_empty());
    // 40 tasks need 10 m8 nodes for their memory; their 40 spare CPUs hold the 20 bundles.
    assert_eq!(d.launch_by_type(), BTreeMap::from([("m8".to_string(), 10)]), "{:?}", d.launch);
}

#[test]
fn a_node_that_holds_a_huge_number_of_bundles_is_planned_without_trying_each_count() {
    // 10^10 bundles of 0.0001 of a resource a node has 10^6 of: one node holds
    // them all. The knapsack must not try each count one by one.
    let mut i = input(vec![ty("tokens", &[("CPU", 8.0), ("tokens", 1e6)], 10, 1.0)]);
    i.demands.push(Demand { shape: rs(&[("tokens", 0.0001)]), count: 10_000_000_000 });
    let d = decide(&i);
    assert!(d.capped.is_empty(), "{d:?}");
    assert_eq!(d.launch_by_type(), BTreeMap::from([("tokens".to_string(), 1)]));
    let c = bound::costing(&i, &d);
    assert_eq!(c.lower_bound_per_hour, Some(1.0), "{c:?}");
}

#[test]
fn a_spread_group_shares_nodes_only_with_other_groups() {
    // Two groups of four 2-CPU bundles: a node can hold one bundle of each
    // group, so an 8-CPU node would be half empty; eight 2-CPU nodes are cheaper.
    let mut i = input(vec![ty("small", &[("CPU", 2.0)], 100, 0.10), ty("big", &[("CPU", 8.0)], 100, 0.34)]);
    i.gangs = (0..2).map(|_| Gang { bundles: vec![rs(&[("CPU", 2.0)]); 4], strategy: PlacementStrategy::StrictSpread }).collect();
    let d = decide(&i);
    assert!(d.capped.is_empty());
    assert_eq!(d.launch_by_type(), BTreeMap::from([("small".to_string(), 8)]), "{:?}", d.launch);
}

#[test]
fn nodes_planned_for_placement_groups_with_tasks_are_not_held_back() {
    // As in the joint plan test, with upscaling_speed 1: the nodes that hold
    // the groups' bundles are launched for the groups, so none is held back.
    let mut i = input(vec![
        ty("c8", &[("CPU", 8.0), ("memory", 16.0 * GIB)], 1000, 0.34),
        ty("m8", &[("CPU", 8.0), ("memory", 64.0 * GIB)], 1000, 0.40),
    ]);
    i.upscaling_speed = 1.0;
    i.gangs = (0..10).map(|_| Gang { bundles: vec![rs(&[("CPU", 2.0)]); 2], strategy: PlacementStrategy::StrictSpread }).collect();
    i.demands.push(Demand { shape: rs(&[("CPU", 1.0), ("memory", 16.0 * GIB)]), count: 40 });
    let d = decide(&i);
    assert_eq!(d.launch.get(&("m8".to_string(), LaunchReason::PlacementGroup)), Some(&10), "{:?}", d.launch);
    assert!(d.held_back.is_empty(), "{:?}", d.held_back);
}

#[test]
fn single_bundle_placement_groups_are_planned_like_tasks_of_their_shape() {
    // 40 one-bundle PACK groups of a shape count as one shape for the plans
    // (not 40), so they get the same nodes as 40 tasks of it.
    let types = || {
        vec![
            ty("both", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 1000, 1.0),
            ty("cpu", &[("CPU", 4.0), ("memory", 4.0 * GIB)], 1000, 0.7),
            ty("mem", &[("CPU", 1.0), ("memory", 16.0 * GIB)], 1000, 0.7),
        ]
    };
    let cpu_heavy = rs(&[("CPU", 3.0), ("memory", 2.0 * GIB)]);
    let mem_heavy = rs(&[("CPU", 1.0), ("memory", 14.0 * GIB)]);
    let mut tasks = input(types());
    tasks.demands.push(Demand { shape: cpu_heavy.clone(), count: 40 });
    tasks.demands.push(Demand { shape: mem_heavy.clone(), count: 40 });
    let mut groups = input(types());
    groups.gangs = (0..40).map(|_| Gang { bundles: vec![cpu_heavy.clone()], strategy: PlacementStrategy::Pack }).collect();
    groups.gangs.extend((0..40).map(|_| Gang { bundles: vec![mem_heavy.clone()], strategy: PlacementStrategy::Pack }));
    assert_eq!(decide(&groups).launch_by_type(), decide(&tasks).launch_by_type());
    assert_eq!(decide(&groups).launch_by_type(), BTreeMap::from([("both".to_string(), 40)]));
}
