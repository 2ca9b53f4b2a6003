use super::super::*;
use super::*;
use proptest::prelude::*;
use ray_common::FixedPoint;

use crate::scheduler::test_support::{GIB, priced as ty, priced_input as input, rs, worker};

/// A fixed-seed generator (xorshift), so traces are the same in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Adds `n` bundles drawn from `shapes` to the input's demand.
fn draw(i: &mut Input, rng: &mut Rng, shapes: &[Vec<(&str, f64)>], n: u64) {
    let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
    for _ in 0..n {
        *counts.entry((rng.next() % shapes.len() as u64) as usize).or_default() += 1;
    }
    for (s, c) in counts {
        i.demands.push(Demand { shape: rs(&shapes[s]), count: c });
    }
}

fn ratio(i: &Input) -> (f64, Costing) {
    let d = decide(i);
    assert!(d.capped.is_empty() && d.infeasible.is_empty(), "{d:?}");
    let c = costing(i, &d);
    let b = c.lower_bound_per_hour.expect("a bound");
    assert!(b > 0.0 && c.plan_per_hour >= b - 1e-6, "the plan costs less than the bound: {c:?}");
    (c.plan_per_hour / b, c)
}

fn general_types() -> Vec<NodeTypeSpec> {
    vec![
        ty("m5.xlarge", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 10_000, 0.192),
        ty("m5.2xlarge", &[("CPU", 8.0), ("memory", 32.0 * GIB)], 10_000, 0.384),
        ty("r5.xlarge", &[("CPU", 4.0), ("memory", 32.0 * GIB)], 10_000, 0.252),
        ty("c5.2xlarge", &[("CPU", 8.0), ("memory", 16.0 * GIB)], 10_000, 0.34),
    ]
}

#[test]
fn one_shape_on_one_type_is_bounded_exactly() {
    // 3-CPU bundles on 8-CPU nodes: two per node, so 10 bundles need 5 nodes,
    // which the per-shape row proves (the aggregate row alone says 3.75).
    let mut i = input(vec![ty("cpu8", &[("CPU", 8.0)], 100, 1.0)]);
    i.demands.push(Demand { shape: rs(&[("CPU", 3.0)]), count: 10 });
    let (r, c) = ratio(&i);
    assert!((c.plan_per_hour - 5.0).abs() < 1e-9, "{c:?}");
    assert!((r - 1.0).abs() < 1e-9, "{c:?}");
}

#[test]
fn bundles_that_cannot_share_a_node_are_bounded_by_the_configuration_lp() {
    // 5-CPU and 4-CPU bundles on 8-CPU nodes: a node holds one 5 or two 4s,
    // never a 5 and a 4. Counting CPUs says 11.25 nodes, each shape alone says
    // 10; only the configurations ({5}, {4, 4}) prove the 15 the plan takes.
    let mut i = input(vec![ty("cpu8", &[("CPU", 8.0)], 100, 1.0)]);
    i.demands.push(Demand { shape: rs(&[("CPU", 5.0)]), count: 10 });
    i.demands.push(Demand { shape: rs(&[("CPU", 4.0)]), count: 10 });
    let (r, c) = ratio(&i);
    assert!((c.plan_per_hour - 15.0).abs() < 1e-9, "{c:?}");
    assert!((r - 1.0).abs() < 1e-9, "{c:?}");
}

#[test]
fn cpu_work_that_only_gpu_nodes_take_is_bounded_by_their_class() {
    // GPU bundles can only go to the GPU type, so their CPUs count against it.
    let mut i = input(vec![
        ty("cpu16", &[("CPU", 16.0)], 100, 0.68),
        ty("gpu4", &[("CPU", 8.0), ("GPU", 4.0)], 100, 3.06),
    ]);
    i.demands.push(Demand { shape: rs(&[("CPU", 2.0), ("GPU", 1.0)]), count: 8 });
    let (r, c) = ratio(&i);
    assert!((c.lower_bound_per_hour.unwrap() - 2.0 * 3.06).abs() < 1e-6, "{c:?}");
    assert!((r - 1.0).abs() < 1e-9, "{c:?}");
}

#[test]
fn strict_spread_groups_need_a_node_per_bundle() {
    let mut i = input(vec![ty("cpu8", &[("CPU", 8.0)], 100, 1.0)]);
    i.gangs.push(Gang { bundles: vec![rs(&[("CPU", 1.0)]); 3], strategy: PlacementStrategy::StrictSpread });
    let (r, c) = ratio(&i);
    assert!((c.lower_bound_per_hour.unwrap() - 3.0).abs() < 1e-9, "{c:?}");
    assert!((r - 1.0).abs() < 1e-9);
}

#[test]
fn capped_plans_have_no_bound_and_min_workers_are_counted_in_both() {
    let mut i = input(vec![ty("cpu8", &[("CPU", 8.0)], 2, 1.0)]);
    i.demands.push(Demand { shape: rs(&[("CPU", 8.0)]), count: 5 });
    let d = decide(&i);
    assert!(!d.capped.is_empty());
    assert_eq!(costing(&i, &d).lower_bound_per_hour, None);

    let mut i = input(vec![NodeTypeSpec { min_workers: 2, ..ty("cpu8", &[("CPU", 8.0)], 10, 1.0) }]);
    i.demands.push(Demand { shape: rs(&[("CPU", 8.0)]), count: 3 });
    let c = costing(&i, &decide(&i));
    assert!((c.plan_per_hour - 3.0).abs() < 1e-9, "{c:?}");
    assert!((c.lower_bound_per_hour.unwrap() - 3.0).abs() < 1e-9, "{c:?}");
}

#[test]
fn existing_free_capacity_lowers_the_bound() {
    let t = ty("cpu8", &[("CPU", 8.0)], 10, 1.0);
    let mut i = input(vec![t.clone()]);
    i.nodes.push(worker("w1", &t, 0));
    i.demands.push(Demand { shape: rs(&[("CPU", 4.0)]), count: 4 });
    let c = costing(&i, &decide(&i));
    assert!((c.plan_per_hour - 1.0).abs() < 1e-9, "{c:?}");
    assert!((c.lower_bound_per_hour.unwrap() - 1.0).abs() < 1e-9, "{c:?}");
}

/// The mixed traces of the issue, each with its own seed. The figures printed
/// here are the ones the note quotes
/// (`cargo test --release -p ray-autoscaler --lib mixed_traces -- --nocapture`).
/// The limits hold today's plans in place (a plan that gets worse fails): all
/// within 0.5% of the bound, against the goal of 2% on every trace.
#[test]
fn mixed_traces_stay_close_to_the_bound() {
    let cpu_mem: Vec<Vec<(&str, f64)>> = vec![
        vec![("CPU", 1.0), ("memory", 2.0 * GIB)],
        vec![("CPU", 1.0), ("memory", 4.0 * GIB)],
        vec![("CPU", 2.0), ("memory", 4.0 * GIB)],
        vec![("CPU", 1.0), ("memory", 8.0 * GIB)],
        vec![("CPU", 2.0), ("memory", 2.0 * GIB)],
    ];
    let mut report = Vec::new();
    for (name, n, seed) in [("cpu+memory, 5 ratios, 4 types", 1_000u64, 1u64), ("cpu+memory, 10,000 bundles", 10_000, 2)] {
        let mut i = input(general_types());
        draw(&mut i, &mut Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1), &cpu_mem, n);
        report.push((name, ratio(&i)));
    }
    let gpu_types = || {
        vec![
            ty("m5.2xlarge", &[("CPU", 8.0), ("memory", 32.0 * GIB)], 10_000, 0.384),
            ty("g4dn.xlarge", &[("CPU", 4.0), ("GPU", 1.0), ("memory", 16.0 * GIB)], 10_000, 0.526),
            ty("g4dn.12xlarge", &[("CPU", 48.0), ("GPU", 4.0), ("memory", 192.0 * GIB)], 10_000, 3.912),
        ]
    };
    let frac_gpu: Vec<Vec<(&str, f64)>> =
        vec![vec![("CPU", 2.0), ("GPU", 0.25)], vec![("CPU", 2.0), ("GPU", 0.5)], vec![("CPU", 1.0)], vec![("CPU", 2.0)]];
    for (name, n, seed) in [("fractional GPUs and CPU work", 1_000u64, 3u64), ("the same, 10,000 bundles", 10_000, 4)] {
        let mut i = input(gpu_types());
        draw(&mut i, &mut Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1), &frac_gpu, n);
        report.push((name, ratio(&i)));
    }
    {
        let mut i = input(general_types());
        let mut rng = Rng(0x5EED_0005);
        for _ in 0..100 {
            let k = 2 + (rng.next() % 3) as usize;
            i.gangs.push(Gang { bundles: vec![rs(&[("CPU", 2.0)]); k], strategy: PlacementStrategy::StrictSpread });
        }
        draw(&mut i, &mut rng, &cpu_mem, 600);
        report.push(("STRICT_SPREAD groups and tasks", ratio(&i)));
    }
    {
        let mut types = general_types();
        types.push(ty("tpu-host", &[("CPU", 8.0), ("memory", 32.0 * GIB), ("accelerator", 1.0)], 10_000, 1.2));
        let mut i = input(types);
        let mut rng = Rng(0x5EED_0006);
        i.demands.push(Demand { shape: rs(&[("CPU", 1.0), ("accelerator", 1.0)]), count: 100 });
        draw(&mut i, &mut rng, &cpu_mem, 900);
        report.push(("a custom resource on one node type", ratio(&i)));
    }
    {
        let sizes: Vec<Vec<(&str, f64)>> = vec![vec![("CPU", 1.0)], vec![("CPU", 2.0)], vec![("CPU", 3.0)], vec![("CPU", 5.0)]];
        let mut i = input(vec![ty("c8", &[("CPU", 8.0)], 10_000, 0.34), ty("c16", &[("CPU", 16.0)], 10_000, 0.68), ty("c4", &[("CPU", 4.0)], 10_000, 0.17)]);
        draw(&mut i, &mut Rng(0x5EED_0007), &sizes, 1_000);
        report.push(("CPU-only bundles of 4 sizes", ratio(&i)));
    }
    for (name, (r, c)) in &report {
        println!("{name}: plan / bound = {r:.4} (plan {:.3}, bound {:.3})", c.plan_per_hour, c.lower_bound_per_hour.unwrap_or(0.0));
    }
    let limits = [1.005, 1.002, 1.005, 1.002, 1.005, 1.002, 1.002];
    assert_eq!(report.len(), limits.len());
    for ((name, (r, _)), limit) in report.into_iter().zip(limits) {
        assert!(r <= limit, "{name}: the plan costs {r:.4} x the bound (limit {limit})");
    }
}

proptest! {
    /// Whatever the demand, the bound never exceeds the plan it bounds.
    #[test]
    fn the_bound_never_exceeds_the_plan(
        shapes in prop::collection::vec((1u32..8, 0u32..3, 0u32..64), 1..6),
        counts in prop::collection::vec(1u64..200, 6),
        spread in 0usize..4,
        existing in prop::collection::vec(0u32..5, 0..3),
    ) {
        let mut i = input(vec![
            ty("small", &[("CPU", 4.0), ("memory", 16.0 * GIB)], 1_000, 0.2),
            ty("big", &[("CPU", 16.0), ("memory", 64.0 * GIB)], 1_000, 0.7),
            ty("gpu", &[("CPU", 8.0), ("GPU", 2.0), ("memory", 64.0 * GIB)], 1_000, 2.0),
        ]);
        for (k, (cpu, gpu, mem)) in shapes.iter().enumerate() {
            let mut pairs = vec![("CPU", f64::from(*cpu)), ("memory", f64::from(*mem) * GIB)];
            if *gpu > 0 {
                pairs.push(("GPU", f64::from(*gpu) * 0.5));
            }
            i.demands.push(Demand { shape: rs(&pairs), count: counts[k] });
        }
        // Existing nodes with some CPUs free: capacity that costs nothing.
        for (k, free) in existing.iter().enumerate() {
            let mut w = worker(&format!("w{k}"), &i.types[1], 0);
            w.available.set("CPU", FixedPoint::from_f64(f64::from(*free)));
            i.nodes.push(w);
        }
        for _ in 0..spread {
            i.gangs.push(Gang { bundles: vec![rs(&[("CPU", 3.0)]); 3], strategy: PlacementStrategy::StrictSpread });
        }
        let d = decide(&i);
        let c = costing(&i, &d);
        if let Some(b) = c.lower_bound_per_hour {
            prop_assert!(b <= c.plan_per_hour + 1e-6, "bound {b} above the plan {}", c.plan_per_hour);
        }
    }
}
