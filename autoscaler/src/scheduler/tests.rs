use super::*;
use proptest::prelude::*;
use ray_common::FixedPoint;

use super::test_support::worker;

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    pairs.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_f64(*v))).collect()
}

fn ty(name: &str, res: &[(&str, f64)], min: u32, max: u32) -> NodeTypeSpec {
    NodeTypeSpec { name: name.into(), resources: rs(res), min_workers: min, max_workers: max, is_head: false, price: None, priority: 0 }
}

fn head() -> NodeTypeSpec {
    NodeTypeSpec { is_head: true, ..ty("head", &[], 0, 0) }
}

fn head_node() -> NodeView {
    NodeView {
        id: "head".into(),
        node_type: "head".into(),
        total: rs(&[]),
        available: rs(&[]),
        pending: false,
        is_head: true,
        unmanaged: false,
        draining: false,
        idle_ms: 1,
    }
}

fn demand(pairs: &[(&str, f64)], count: u64) -> Demand {
    Demand { shape: rs(pairs), count }
}

fn base(types: Vec<NodeTypeSpec>, max_workers: u32) -> Input {
    let idle = types.iter().map(|t| (t.name.clone(), 60_000)).collect();
    Input { types, max_workers, upscaling_speed: 1.0, nodes: vec![head_node()], idle_timeout_ms: idle, ..Default::default() }
}

fn launched(d: &Decision, t: &str) -> u32 {
    d.launch_by_type().get(t).copied().unwrap_or(0)
}

#[test]
fn scales_up_to_fit_request_resources() {
    let mut i = base(vec![head(), ty("cpu2", &[("CPU", 2.0)], 0, 10)], 10);
    i.constraints = vec![demand(&[("CPU", 1.0)], 8)];
    let d = decide(&i);
    assert_eq!(launched(&d, "cpu2"), 4);
    assert!(d.launch.contains_key(&("cpu2".to_string(), LaunchReason::Constraint)));
    // Already satisfied by existing nodes (even busy ones): nothing more.
    let t = ty("cpu2", &[("CPU", 2.0)], 0, 10);
    for k in 0..4 {
        let mut n = worker(&format!("w{k}"), &t, 0);
        n.available = rs(&[]);
        i.nodes.push(n);
    }
    assert!(decide(&i).launch.is_empty());
}

#[test]
fn gpu_demand_picks_the_gpu_type_and_cpu_demand_avoids_it() {
    let types = vec![head(), ty("cpu", &[("CPU", 2.0)], 0, 10), ty("gpu", &[("CPU", 8.0), ("GPU", 1.0)], 0, 10)];
    let mut i = base(types.clone(), 20);
    i.demands = vec![demand(&[("GPU", 1.0)], 2)];
    let d = decide(&i);
    assert_eq!((launched(&d, "gpu"), launched(&d, "cpu")), (2, 0));
    let mut i = base(types, 20);
    i.demands = vec![demand(&[("CPU", 1.0)], 8)];
    let d = decide(&i);
    assert_eq!((launched(&d, "cpu"), launched(&d, "gpu")), (4, 0));
}

#[test]
fn gpu_type_is_used_for_cpu_work_only_when_nothing_else_fits() {
    let types = vec![head(), ty("small", &[("CPU", 2.0)], 0, 10), ty("gpu", &[("CPU", 8.0), ("GPU", 1.0)], 0, 10)];
    let mut i = base(types, 20);
    i.demands = vec![demand(&[("CPU", 6.0)], 1)];
    let d = decide(&i);
    assert_eq!(launched(&d, "gpu"), 1);
}

#[test]
fn cheapest_per_bundle_wins() {
    let types = vec![head(), ty("small", &[("CPU", 2.0)], 0, 100), ty("big", &[("CPU", 16.0)], 0, 100)];
    let mut i = base(types.clone(), 100);
    i.upscaling_speed = 100.0;
    i.demands = vec![demand(&[("CPU", 1.0)], 32)];
    let d = decide(&i);
    assert_eq!((launched(&d, "big"), launched(&d, "small")), (2, 0));
    let mut i = base(types, 100);
    i.demands = vec![demand(&[("CPU", 1.0)], 1)];
    let d = decide(&i);
    assert_eq!((launched(&d, "small"), launched(&d, "big")), (1, 0), "one CPU of work does not buy a 16-CPU node");
}

#[test]
fn a_price_changes_which_type_is_chosen() {
    // By capacity alone one 16-CPU node is cheaper per bundle than eight 2-CPU
    // nodes (the test above); prices say the small type is the bargain.
    let priced = |small: f64, big: f64| {
        let mut s = ty("small", &[("CPU", 2.0)], 0, 100);
        s.price = Some(small);
        let mut b = ty("big", &[("CPU", 16.0)], 0, 100);
        b.price = Some(big);
        let mut i = base(vec![head(), s, b], 100);
        i.upscaling_speed = 100.0;
        i.demands = vec![demand(&[("CPU", 1.0)], 16)];
        decide(&i)
    };
    let d = priced(0.10, 2.00);
    assert_eq!((launched(&d, "small"), launched(&d, "big")), (8, 0), "0.05/CPU beats 0.125/CPU");
    let d = priced(0.10, 0.50);
    assert_eq!((launched(&d, "small"), launched(&d, "big")), (0, 1), "0.031/CPU beats 0.05/CPU");
    // Same shape, different prices (spot vs on-demand): the cheaper one.
    let mut spot = ty("spot", &[("CPU", 4.0)], 0, 10);
    spot.price = Some(0.3);
    let mut ondemand = ty("ondemand", &[("CPU", 4.0)], 0, 10);
    ondemand.price = Some(1.0);
    let mut i = base(vec![head(), ondemand, spot], 10);
    i.demands = vec![demand(&[("CPU", 1.0)], 4)];
    let d = decide(&i);
    assert_eq!((launched(&d, "spot"), launched(&d, "ondemand")), (1, 0));
}

#[test]
fn max_workers_caps_per_type_and_globally() {
    let mut i = base(vec![head(), ty("cpu", &[("CPU", 1.0)], 0, 3)], 10);
    i.constraints = vec![demand(&[("CPU", 1.0)], 50)];
    let d = decide(&i);
    assert_eq!(launched(&d, "cpu"), 3);
    let mut i = base(vec![head(), ty("a", &[("CPU", 1.0)], 0, 10), ty("b", &[("CPU", 1.0)], 0, 10)], 4);
    i.constraints = vec![demand(&[("CPU", 1.0)], 50)];
    let d = decide(&i);
    assert_eq!(launched(&d, "a") + launched(&d, "b"), 4);
    assert!(!d.infeasible_constraint.is_empty(), "the unmet part of the constraint is reported");
}

#[test]
fn upscaling_speed_paces_demand_but_not_min_workers_or_constraints() {
    let mut i = base(vec![head(), ty("cpu", &[("CPU", 1.0)], 0, 100)], 100);
    i.demands = vec![demand(&[("CPU", 1.0)], 20)];
    let d = decide(&i);
    assert_eq!(launched(&d, "cpu"), 5, "at most 5 in flight from zero");
    assert_eq!(d.held_back["cpu"], 15);
    let mut i = base(vec![head(), ty("cpu", &[("CPU", 1.0)], 12, 100)], 100);
    i.constraints = vec![demand(&[("CPU", 1.0)], 20)];
    let d = decide(&i);
    assert_eq!(launched(&d, "cpu"), 20);
}

#[test]
fn infeasible_shapes_are_reported_not_launched() {
    let mut i = base(vec![head(), ty("cpu", &[("CPU", 4.0)], 0, 10)], 10);
    i.demands = vec![demand(&[("GPU", 1.0)], 3), demand(&[("CPU", 8.0)], 1)];
    let d = decide(&i);
    assert!(d.launch.is_empty());
    assert_eq!(d.infeasible.len(), 2);
}

#[test]
fn strict_spread_needs_distinct_nodes() {
    let mut i = base(vec![head(), ty("cpu2", &[("CPU", 2.0)], 0, 10)], 10);
    i.gangs = vec![Gang { bundles: vec![rs(&[("CPU", 2.0)]), rs(&[("CPU", 2.0)])], strategy: PlacementStrategy::StrictSpread }];
    assert_eq!(launched(&decide(&i), "cpu2"), 2);
    i.gangs = vec![Gang { bundles: vec![rs(&[("CPU", 1.0)]); 3], strategy: PlacementStrategy::StrictSpread }];
    assert_eq!(launched(&decide(&i), "cpu2"), 3, "three 1-CPU bundles still need three nodes");
    i.gangs = vec![Gang { bundles: vec![rs(&[("CPU", 1.0)]); 2], strategy: PlacementStrategy::StrictPack }];
    assert_eq!(launched(&decide(&i), "cpu2"), 1);
}

#[test]
fn min_workers_are_launched_and_kept_when_idle() {
    let t = ty("cpu", &[("CPU", 1.0)], 2, 5);
    let mut i = base(vec![head(), t.clone()], 5);
    let d = decide(&i);
    assert_eq!(d.launch.get(&("cpu".to_string(), LaunchReason::MinWorkers)), Some(&2));
    i.nodes.extend([worker("a", &t, 10_000_000), worker("b", &t, 10_000_000), worker("c", &t, 10_000_000)]);
    let d = decide(&i);
    assert_eq!(d.terminate.len(), 1, "only the worker above min_workers goes: {d:?}");
    assert_eq!(d.terminate[0].1, TerminateReason::Idle);
}

#[test]
fn idle_workers_go_after_the_timeout_unless_needed() {
    let t = ty("cpu", &[("CPU", 1.0)], 0, 5);
    let mut i = base(vec![head(), t.clone()], 5);
    i.nodes.extend([worker("young", &t, 59_000), worker("old", &t, 61_000)]);
    let d = decide(&i);
    assert_eq!(d.terminate, vec![("old".to_string(), TerminateReason::Idle)]);
    i.constraints = vec![demand(&[("CPU", 1.0)], 2)];
    assert!(decide(&i).terminate.is_empty(), "the constraint protects idle nodes");
    i.constraints.clear();
    i.demands = vec![demand(&[("CPU", 1.0)], 2)];
    assert!(decide(&i).terminate.is_empty(), "pending demand protects idle nodes that can take it");
}

#[test]
fn existing_free_capacity_absorbs_demand() {
    let t = ty("cpu4", &[("CPU", 4.0)], 0, 5);
    let mut i = base(vec![head(), t.clone()], 5);
    i.nodes.push(worker("w", &t, 0));
    i.demands = vec![demand(&[("CPU", 1.0)], 4)];
    assert!(decide(&i).launch.is_empty());
    i.demands = vec![demand(&[("CPU", 1.0)], 5)];
    assert_eq!(launched(&decide(&i), "cpu4"), 1);
}

#[test]
fn unmanaged_nodes_lend_capacity_but_are_never_retired() {
    let t = ty("cpu", &[("CPU", 1.0)], 0, 5);
    let mut i = base(vec![head(), t.clone()], 5);
    let mut n = worker("manual", &t, 10_000_000);
    n.unmanaged = true;
    n.node_type = String::new();
    i.nodes.push(n);
    i.demands = vec![demand(&[("CPU", 1.0)], 1)];
    let d = decide(&i);
    assert!(d.launch.is_empty() && d.terminate.is_empty(), "{d:?}");
}

#[test]
fn pending_nodes_count_toward_caps_and_capacity() {
    let t = ty("cpu", &[("CPU", 1.0)], 0, 2);
    let mut i = base(vec![head(), t.clone()], 5);
    let mut p = worker("p", &t, 0);
    p.pending = true;
    i.nodes.push(p);
    i.demands = vec![demand(&[("CPU", 1.0)], 3)];
    let d = decide(&i);
    assert_eq!(launched(&d, "cpu"), 1, "one pending + one new = type max 2");
    assert_eq!(d.capped.iter().map(|c| c.count).sum::<u64>(), 1);
}

fn arb_types() -> impl Strategy<Value = Vec<NodeTypeSpec>> {
    proptest::collection::vec((1u32..8, 0u32..2, 0u32..3, 1u32..6), 1..4).prop_map(|v| {
        let mut types = vec![head()];
        for (i, (cpu, gpu, min, max)) in v.into_iter().enumerate() {
            let mut res = vec![("CPU", f64::from(cpu))];
            if gpu > 0 {
                res.push(("GPU", f64::from(gpu)));
            }
            types.push(ty(&format!("t{i}"), &res, min.min(max), max));
        }
        types
    })
}

proptest! {
    #[test]
    fn never_exceeds_max_workers(
        types in arb_types(),
        max_workers in 0u32..12,
        demands in proptest::collection::vec((1u32..6, 0u32..2, 1u64..40), 0..4),
        constraint in 0u64..30,
    ) {
        let mut i = base(types.clone(), max_workers);
        i.upscaling_speed = 50.0;
        i.demands = demands.iter().map(|(c, g, n)| {
            let mut s = vec![("CPU", f64::from(*c))];
            if *g > 0 { s.push(("GPU", 1.0)); }
            demand(&s, *n)
        }).collect();
        i.constraints = vec![demand(&[("CPU", 1.0)], constraint)];
        let d = decide(&i);
        let by_type = d.launch_by_type();
        let total: u32 = by_type.values().sum();
        prop_assert!(total <= max_workers, "{total} > {max_workers}");
        for t in &types {
            prop_assert!(by_type.get(&t.name).copied().unwrap_or(0) <= t.max_workers);
        }
    }

    #[test]
    fn what_it_claims_to_fit_fits(
        types in arb_types(),
        demands in proptest::collection::vec((1u32..6, 0u32..2, 1u64..30), 1..4),
    ) {
        let mut i = base(types.clone(), 1000);
        i.upscaling_speed = 1000.0;
        for t in i.types.iter_mut() { t.max_workers = 1000; t.min_workers = 0; }
        i.demands = demands.iter().map(|(c, g, n)| {
            let mut s = vec![("CPU", f64::from(*c))];
            if *g > 0 { s.push(("GPU", 1.0)); }
            demand(&s, *n)
        }).collect();
        let d = decide(&i);
        // Capacity bought must cover, per resource, every demand not reported as
        // infeasible or capped (a necessary condition of a correct packing).
        let mut bought = ResourceSet::new();
        for (t, n) in d.launch_by_type() {
            let ty = i.types.iter().find(|x| x.name == t).unwrap();
            for _ in 0..n { bought.add(&ty.resources); }
        }
        let mut needed = ResourceSet::new();
        for dm in &i.demands {
            let left: u64 = d.infeasible.iter().chain(d.capped.iter()).filter(|x| x.shape == dm.shape).map(|x| x.count).sum();
            for _ in 0..dm.count.saturating_sub(left) { needed.add(&dm.shape); }
        }
        prop_assert!(needed.is_subset_of(&bought), "needed {needed} but bought {bought}");
        prop_assert!(d.capped.is_empty(), "nothing is capped with generous maxima: {:?}", d.capped);
        // No GPU node unless some demand asks for a GPU (or only GPU types fit).
        let wants_gpu = i.demands.iter().any(|x| x.shape.has_gpu());
        let cpu_only_fits = i.demands.iter().all(|x| i.types.iter().any(|t| !t.resources.has_gpu() && !t.is_head && x.shape.is_subset_of(&t.resources)));
        if !wants_gpu && cpu_only_fits {
            for (t, _) in d.launch_by_type() {
                let ty = i.types.iter().find(|x| x.name == t).unwrap();
                prop_assert!(!ty.resources.has_gpu(), "launched GPU type {t} for CPU-only demand");
            }
        }
    }
}

/// The baseline: bundle by bundle, largest first, into the first open node
/// with room (in the order they were opened), else onto a new node of the type
/// with the lowest price per slot for it. `None` when some bundle finds no
/// type with room.
fn first_fit_decreasing_cost(i: &Input) -> Option<f64> {
    let space = Space::new(i);
    let costs = bound::type_costs(i);
    let types: Vec<(usize, Vector)> =
        i.types.iter().enumerate().filter(|(_, t)| !t.is_head).map(|(k, t)| (k, space.vec(&t.resources))).collect();
    let mut bundles: Vec<Vector> = i.demands.iter().flat_map(|d| std::iter::repeat_n(space.vec(&d.shape), d.count as usize)).collect();
    // Largest first, equal keys by the shape (any fixed order would do).
    bundles.sort_by(|a, b| (order_key(b), b).cmp(&(order_key(a), a)));
    let mut open: Vec<Vector> = Vec::new();
    let mut per_type = vec![0u32; i.types.len()];
    let mut cost = 0.0;
    for b in bundles {
        if let Some(n) = open.iter_mut().find(|n| fits(n, &b) > 0) {
            sub_times(n, &b, 1);
            continue;
        }
        let (k, v) = types
            .iter()
            .filter(|(k, v)| per_type[*k] < i.types[*k].max_workers && fits(v, &b) > 0)
            .min_by(|(a, va), (c, vc)| (costs[*a] / fits(va, &b) as f64).total_cmp(&(costs[*c] / fits(vc, &b) as f64)))?;
        per_type[*k] += 1;
        cost += costs[*k];
        let mut n = v.clone();
        sub_times(&mut n, &b, 1);
        open.push(n);
    }
    Some(cost)
}

proptest! {
    /// Never costlier than first-fit-decreasing by price per slot on the same
    /// demand, and never over a max_workers cap.
    #[test]
    fn never_costlier_than_first_fit_decreasing(
        shapes in proptest::collection::vec((1u32..9, 0u32..3, 0u32..33, 1u64..40), 1..5),
        prices in proptest::collection::vec(0.05f64..4.0, 4),
        caps in proptest::collection::vec(1u32..40, 4),
    ) {
        check_against_first_fit_decreasing(&shapes, &prices, &caps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The same with more distinct shapes than patterns and the configuration
    /// LP take (64 and 32): first-fit-decreasing still runs.
    #[test]
    fn never_costlier_than_first_fit_decreasing_with_many_shapes(
        shapes in proptest::collection::vec((1u32..9, 0u32..3, 0u32..33, 1u64..6), 65..80),
        prices in proptest::collection::vec(0.05f64..4.0, 4),
        caps in proptest::collection::vec(200u32..400, 4),
    ) {
        check_against_first_fit_decreasing(&shapes, &prices, &caps)?;
    }
}

fn check_against_first_fit_decreasing(shapes: &[(u32, u32, u32, u64)], prices: &[f64], caps: &[u32]) -> Result<(), TestCaseError> {
    {
        let gib = (1u64 << 30) as f64;
        let types = vec![
            NodeTypeSpec { price: Some(prices[0]), ..ty("c4", &[("CPU", 4.0), ("memory", 16.0 * gib)], 0, caps[0]) },
            NodeTypeSpec { price: Some(prices[1]), ..ty("c16", &[("CPU", 16.0), ("memory", 64.0 * gib)], 0, caps[1]) },
            NodeTypeSpec { price: Some(prices[2]), ..ty("m8", &[("CPU", 8.0), ("memory", 64.0 * gib)], 0, caps[2]) },
            NodeTypeSpec { price: Some(prices[3]), ..ty("g8", &[("CPU", 8.0), ("GPU", 2.0), ("memory", 32.0 * gib)], 0, caps[3]) },
        ];
        let mut i = base(std::iter::once(head()).chain(types).collect(), 1000);
        i.upscaling_speed = 1e9;
        i.demands = shapes.iter().map(|(c, g, m, n)| {
            let mut s = vec![("CPU", f64::from(*c)), ("memory", f64::from(*m) * gib)];
            if *g > 0 { s.push(("GPU", f64::from(*g) * 0.5)); }
            demand(&s, *n)
        }).collect();
        let d = decide(&i);
        for (t, n) in d.launch_by_type() {
            let ty = i.types.iter().find(|x| x.name == t).unwrap();
            prop_assert!(n <= ty.max_workers, "{t}: {n} over its cap {}", ty.max_workers);
        }
        // Every shape fits g8 (8 CPU, 2 GPU, 32 GiB), so only a cap stops FFD.
        if let Some(ffd) = first_fit_decreasing_cost(&i) {
            prop_assert!(d.capped.is_empty() && d.infeasible.is_empty(), "FFD placed everything, decide left {:?} {:?}", d.capped, d.infeasible);
            let ours = bound::costing(&i, &d).plan_per_hour;
            prop_assert!(ours <= ffd + 1e-9, "ours {ours} > first-fit-decreasing {ffd}: {:?}", d.launch);
        }
    }
    Ok(())
}

/// Whether the bundles (each with its STRICT_SPREAD group, if any) can be put
/// on `nodes` (free capacity, type) with no two of a group on one node: a
/// backtracking search, untouched nodes of a type tried once. `None` when the
/// search gives up.
fn placeable(nodes: &[(Vector, usize)], bundles: &[(Vector, Option<usize>)]) -> Option<bool> {
    struct S<'a> {
        full: Vec<Vector>,
        types: Vec<usize>,
        avail: Vec<Vector>,
        groups: Vec<Vec<usize>>,
        bundles: &'a [(Vector, Option<usize>)],
        steps: u64,
    }
    impl S<'_> {
        fn go(&mut self, k: usize) -> Option<bool> {
            if k == self.bundles.len() {
                return Some(true);
            }
            self.steps += 1;
            if self.steps > 2_000_000 {
                return None;
            }
            let (b, g) = &self.bundles[k];
            let mut tried_empty: Vec<usize> = Vec::new();
            for n in 0..self.avail.len() {
                if fits(&self.avail[n], b) == 0 || g.is_some_and(|g| self.groups[n].contains(&g)) {
                    continue;
                }
                if self.avail[n] == self.full[n] {
                    if tried_empty.contains(&self.types[n]) {
                        continue;
                    }
                    tried_empty.push(self.types[n]);
                }
                sub_times(&mut self.avail[n], b, 1);
                self.groups[n].extend(*g);
                let r = self.go(k + 1);
                if let Some(g) = g {
                    self.groups[n].retain(|x| x != g);
                }
                for (a, x) in self.avail[n].iter_mut().zip(b) {
                    *a += x;
                }
                if r != Some(false) {
                    return r;
                }
            }
            Some(false)
        }
    }
    let mut s = S {
        full: nodes.iter().map(|n| n.0.clone()).collect(),
        types: nodes.iter().map(|n| n.1).collect(),
        avail: nodes.iter().map(|n| n.0.clone()).collect(),
        groups: vec![Vec::new(); nodes.len()],
        bundles,
        steps: 0,
    };
    s.go(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// With STRICT_SPREAD groups beside tasks (planned jointly by the
    /// configuration LP when that is cheaper), the nodes bought can really
    /// hold every bundle with each group's bundles on distinct nodes.
    #[test]
    fn plans_with_strict_spread_groups_can_be_placed(
        types in proptest::collection::vec((2u32..9, 1u32..5, 0.05f64..2.0), 1..3),
        groups in proptest::collection::vec(proptest::collection::vec((1u32..4, 0u32..3), 1..4), 1..4),
        tasks in proptest::collection::vec((1u32..4, 0u32..5, 1u64..5), 0..3),
    ) {
        let gib = (1u64 << 30) as f64;
        let mut all = vec![head(), NodeTypeSpec { price: Some(2.5), ..ty("big", &[("CPU", 8.0), ("memory", 32.0 * gib)], 0, 100) }];
        for (k, (cpu, mem, price)) in types.iter().enumerate() {
            all.push(NodeTypeSpec { price: Some(*price), ..ty(&format!("t{k}"), &[("CPU", f64::from(*cpu)), ("memory", f64::from(*mem * 4) * gib)], 0, 100) });
        }
        let mut i = base(all, 1000);
        i.upscaling_speed = 1e9;
        let shape = |c: u32, m: u32| rs(&[("CPU", f64::from(c)), ("memory", f64::from(m * 2) * gib)]);
        i.gangs = groups.iter().map(|g| Gang { bundles: g.iter().map(|(c, m)| shape(*c, *m)).collect(), strategy: PlacementStrategy::StrictSpread }).collect();
        i.demands = tasks.iter().map(|(c, m, n)| Demand { shape: shape(*c, *m), count: *n }).collect();
        let d = decide(&i);
        prop_assert!(d.capped.is_empty() && d.infeasible.is_empty() && d.infeasible_gangs.is_empty(), "{d:?}");
        let space = Space::new(&i);
        let mut nodes = Vec::new();
        for (t, n) in d.launch_by_type() {
            let k = i.types.iter().position(|x| x.name == t).unwrap();
            nodes.extend(std::iter::repeat_n((space.vec(&i.types[k].resources), k), n as usize));
        }
        let mut bundles: Vec<(Vector, Option<usize>)> = Vec::new();
        let mut order: Vec<usize> = (0..i.gangs.len()).collect();
        order.sort_by_key(|g| std::cmp::Reverse(i.gangs[*g].bundles.len()));
        for g in order {
            bundles.extend(i.gangs[g].bundles.iter().map(|b| (space.vec(b), Some(g))));
        }
        let mut rest: Vec<Vector> = i.demands.iter().flat_map(|x| std::iter::repeat_n(space.vec(&x.shape), x.count as usize)).collect();
        rest.sort_by_key(|b| std::cmp::Reverse(order_key(b)));
        bundles.extend(rest.into_iter().map(|b| (b, None)));
        let ok = placeable(&nodes, &bundles);
        prop_assert!(ok.is_some(), "the check gave up: {:?}", d.launch);
        prop_assert!(ok == Some(true), "the plan {:?} cannot hold the bundles", d.launch);
    }
}
