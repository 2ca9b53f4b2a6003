//! One scaling decision for 100, 10k and 100k pending bundles against 0, 100 and
//! 1,000 existing nodes with 3 node types (issue target: 100k x 1,000 in <= 50 ms).
//!
//! "grouped": bundles as the GCS reports them, by shape with counts (5 shapes).
//! "distinct": every bundle its own shape (up to 1,000 distinct shapes), a worst case.
//! "mixed": 32 shapes of CPU and memory (4 CPU sizes x 8 memory sizes), the
//! most the configuration LP takes on: its worst case.
//!
//! Run: `cargo bench -p ray-autoscaler --bench scheduler`.

use std::collections::HashMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ray_autoscaler::scheduler::{Demand, Gang, Input, NodeTypeSpec, NodeView, PlacementStrategy, decide};
use ray_common::{FixedPoint, ResourceSet};

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    pairs.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_f64(*v))).collect()
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn types() -> Vec<NodeTypeSpec> {
    let t = |name: &str, res: ResourceSet| NodeTypeSpec {
        name: name.into(),
        resources: res,
        min_workers: 0,
        max_workers: 1_000_000,
        is_head: false,
        price: None,
        priority: 0,
    };
    vec![
        NodeTypeSpec { is_head: true, max_workers: 0, ..t("head", rs(&[("CPU", 0.0)])) },
        t("cpu4", rs(&[("CPU", 4.0), ("memory", 16.0 * GIB)])),
        t("cpu16", rs(&[("CPU", 16.0), ("memory", 64.0 * GIB)])),
        t("gpu", rs(&[("CPU", 8.0), ("GPU", 1.0), ("memory", 32.0 * GIB)])),
    ]
}

fn nodes(n: usize, types: &[NodeTypeSpec]) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let t = &types[1 + i % 3];
            // Half busy.
            let mut avail = t.resources.clone();
            let cpu = avail.get("CPU").to_f64();
            avail.set("CPU", FixedPoint::from_f64(if i % 2 == 0 { cpu / 2.0 } else { cpu }));
            NodeView {
                id: format!("n{i}"),
                node_type: t.name.clone(),
                total: t.resources.clone(),
                available: avail,
                pending: false,
                is_head: false,
                unmanaged: false,
                draining: false,
                idle_ms: 0,
            }
        })
        .collect()
}

fn grouped(bundles: u64) -> Vec<Demand> {
    let shapes = [
        (rs(&[("CPU", 1.0)]), 50),
        (rs(&[("CPU", 2.0)]), 20),
        (rs(&[("CPU", 1.0), ("GPU", 1.0)]), 10),
        (rs(&[("CPU", 4.0), ("memory", 8.0 * GIB)]), 10),
        (rs(&[("CPU", 0.5)]), 10),
    ];
    shapes.into_iter().map(|(shape, pct)| Demand { shape, count: bundles * pct / 100 }).collect()
}

fn distinct(bundles: u64) -> Vec<Demand> {
    // Shapes CPU 0.001..1.0 in 1,000 steps; counts spread evenly.
    let kinds = bundles.min(1000);
    (0..kinds)
        .map(|i| Demand { shape: rs(&[("CPU", 0.001 * (i + 1) as f64)]), count: bundles / kinds })
        .collect()
}

fn mixed(bundles: u64) -> Vec<Demand> {
    let mut out = Vec::new();
    for cpu in [0.5, 1.0, 2.0, 4.0] {
        for mem in [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0] {
            out.push(Demand { shape: rs(&[("CPU", cpu), ("memory", mem * GIB)]), count: (bundles / 32).max(1) });
        }
    }
    out
}

fn input(existing: usize, demands: Vec<Demand>) -> Input {
    let types = types();
    Input {
        nodes: nodes(existing, &types),
        idle_timeout_ms: types.iter().map(|t| (t.name.clone(), 60_000)).collect::<HashMap<_, _>>(),
        types,
        max_workers: 1_000_000,
        upscaling_speed: 1.0,
        demands,
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let kinds = [("grouped", grouped as fn(u64) -> Vec<Demand>), ("distinct", distinct as fn(u64) -> Vec<Demand>), ("mixed", mixed as fn(u64) -> Vec<Demand>)];
    for (label, make) in kinds {
        let mut g = c.benchmark_group(format!("decide/{label}"));
        for bundles in [100u64, 10_000, 100_000] {
            for existing in [0usize, 100, 1000] {
                let inp = input(existing, make(bundles));
                let d = decide(&inp);
                assert!(d.infeasible.is_empty());
                g.bench_with_input(BenchmarkId::new(format!("{bundles}_bundles"), format!("{existing}_nodes")), &inp, |b, inp| {
                    b.iter(|| decide(inp))
                });
            }
        }
        g.finish();
    }
    // The mixed demand with 100 STRICT_SPREAD groups of 3 bundles beside it:
    // step 3 is planned three ways.
    let mut g = c.benchmark_group("decide/mixed+spread");
    for existing in [0usize, 1000] {
        let mut inp = input(existing, mixed(100_000));
        inp.gangs = (0..100).map(|_| Gang { bundles: vec![rs(&[("CPU", 2.0)]); 3], strategy: PlacementStrategy::StrictSpread }).collect();
        g.bench_with_input(BenchmarkId::new("100000_bundles", format!("{existing}_nodes")), &inp, |b, inp| b.iter(|| decide(inp)));
    }
    g.finish();
    // The cost and its lower bound, which the monitor computes every round
    // beside the decision (`ray status -v`).
    let mut g = c.benchmark_group("costing");
    for (label, make) in kinds {
        for existing in [0usize, 1000] {
            let inp = input(existing, make(100_000));
            let d = decide(&inp);
            g.bench_with_input(BenchmarkId::new(label, format!("100000_bundles/{existing}_nodes")), &(inp, d), |b, (inp, d)| {
                b.iter(|| ray_autoscaler::scheduler::bound::costing(inp, d))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);
