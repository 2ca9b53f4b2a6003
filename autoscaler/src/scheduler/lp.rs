//! A small dense linear program solver for the cost lower bound: minimise
//! `c·x` subject to `A x >= b`, `x >= 0`, with `c >= 0`.
//!
//! With non-negative costs the all-slack basis is dual feasible, so the dual
//! simplex method starts there and keeps the dual feasible at every pivot. Its
//! objective (`y·b`) only rises, and at every step it is a valid lower bound on
//! the optimum (weak duality): if the iteration cap is reached the value so far
//! is still a bound, just a weaker one. The programs here are small (node types
//! as columns, resources × feasibility classes as rows), so a dense tableau is
//! the simple and fast choice.

/// `A x >= b` as rows of coefficients.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// Cost per unit of each variable (all >= 0).
    pub cost: Vec<f64>,
    /// Rows: (coefficients, right-hand side).
    pub rows: Vec<(Vec<f64>, f64)>,
}

/// The result of [`solve`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The optimum (or, when the pivot cap was reached, a lower bound on it).
    Bound(f64),
    /// No `x >= 0` satisfies the rows.
    Infeasible,
}

const EPS: f64 = 1e-9;
const MAX_PIVOTS: usize = 5_000;

/// Solves the program by the dual simplex method.
pub fn solve(p: &Program) -> Outcome {
    match solve_full(p) {
        Some(s) => Outcome::Bound(s.value),
        None => Outcome::Infeasible,
    }
}

/// The value, and the dual price of each row: what one more unit of the
/// row's right-hand side would add to the optimum (0 for rows that do not
/// bind). Optimal unless the pivot cap was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// The objective (a lower bound on the optimum).
    pub value: f64,
    /// One per row of the program.
    pub duals: Vec<f64>,
    /// The value of each variable at this basis (feasible only when optimal).
    pub primal: Vec<f64>,
    /// False when the pivot cap was reached first.
    pub optimal: bool,
}

/// As [`solve`], with the row prices. `None` when infeasible.
pub fn solve_full(p: &Program) -> Option<Solution> {
    solve_within(p, MAX_PIVOTS)
}

/// As [`solve_full`], stopping after `max_pivots` pivots (then not `optimal`).
pub fn solve_within(p: &Program, max_pivots: usize) -> Option<Solution> {
    let n = p.cost.len();
    // Rows every `x >= 0` satisfies are dropped; a row with no coefficient
    // that asks something makes the program infeasible.
    let mut rows: Vec<(Vec<f64>, f64)> = Vec::new();
    let mut origin: Vec<(usize, f64)> = Vec::new();
    for (k, (a, b)) in p.rows.iter().enumerate() {
        if *b <= EPS && a.iter().all(|v| *v >= 0.0) {
            continue;
        }
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if scale <= EPS {
            if *b > EPS {
                return None;
            }
            continue;
        }
        // Scale each row so its largest coefficient is 1.
        rows.push((a.iter().map(|v| v / scale).collect(), b / scale));
        origin.push((k, scale));
    }
    let m = rows.len();
    if m == 0 {
        return Some(Solution { value: 0.0, duals: vec![0.0; p.rows.len()], primal: vec![0.0; n], optimal: true });
    }
    let width = n + m;
    // Row i: s_i - sum_j a_ij x_j = -b_i, the slack s_i basic.
    let mut t: Vec<Vec<f64>> = rows
        .iter()
        .enumerate()
        .map(|(i, (a, _))| {
            let mut r = vec![0.0; width];
            for (j, v) in a.iter().enumerate() {
                r[j] = -v;
            }
            r[n + i] = 1.0;
            r
        })
        .collect();
    let mut rhs: Vec<f64> = rows.iter().map(|(_, b)| -b).collect();
    let mut basis: Vec<usize> = (n..width).collect();
    let mut reduced: Vec<f64> = (0..width).map(|j| if j < n { p.cost[j].max(0.0) } else { 0.0 }).collect();
    let value = |basis: &[usize], rhs: &[f64], reduced: &[f64], optimal: bool| -> Solution {
        let v: f64 = basis.iter().zip(rhs).filter(|(j, _)| **j < n).map(|(&j, &r)| p.cost[j] * r).sum();
        let mut duals = vec![0.0; p.rows.len()];
        for (i, (k, scale)) in origin.iter().enumerate() {
            duals[*k] = reduced[n + i].max(0.0) / scale;
        }
        let mut primal = vec![0.0; n];
        for (&j, &r) in basis.iter().zip(rhs) {
            if j < n {
                primal[j] = r.max(0.0);
            }
        }
        Solution { value: v.max(0.0), duals, primal, optimal }
    };
    for _ in 0..max_pivots {
        // Leaving row: the most negative basic value.
        let Some((r, _)) = rhs.iter().enumerate().filter(|(_, v)| **v < -EPS).min_by(|a, b| a.1.total_cmp(b.1)) else {
            return Some(value(&basis, &rhs, &reduced, true));
        };
        // Entering column: the smallest ratio keeps the reduced costs >= 0.
        let mut enter: Option<(usize, f64)> = None;
        for j in 0..width {
            let a = t[r][j];
            if a < -EPS {
                let ratio = reduced[j] / -a;
                if enter.is_none_or(|(_, best)| ratio < best - EPS) {
                    enter = Some((j, ratio));
                }
            }
        }
        let (e, _) = enter?;
        let pivot = t[r][e];
        for v in t[r].iter_mut() {
            *v /= pivot;
        }
        rhs[r] /= pivot;
        let row_r = t[r].clone();
        for i in 0..m {
            if i == r {
                continue;
            }
            let f = t[i][e];
            if f.abs() > 0.0 {
                for (v, w) in t[i].iter_mut().zip(&row_r) {
                    *v -= f * w;
                }
                rhs[i] -= f * rhs[r];
            }
        }
        let f = reduced[e];
        if f.abs() > 0.0 {
            for (v, w) in reduced.iter_mut().zip(&row_r) {
                *v -= f * w;
            }
        }
        basis[r] = e;
    }
    // Still dual feasible: the value so far bounds the optimum from below.
    Some(value(&basis, &rhs, &reduced, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(p: &Program) -> f64 {
        match solve(p) {
            Outcome::Bound(v) => v,
            Outcome::Infeasible => panic!("infeasible"),
        }
    }

    #[test]
    fn one_resource_two_types_takes_the_cheaper_per_unit() {
        // 10 CPUs needed; type 0 gives 4 CPUs for 1.0, type 1 gives 8 for 1.5.
        let p = Program { cost: vec![1.0, 1.5], rows: vec![(vec![4.0, 8.0], 10.0)] };
        assert!((bound(&p) - 10.0 * 1.5 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn two_resources_mix_types() {
        // Need 8 CPU and 8 GPU: type 0 {CPU 4} costs 1, type 1 {CPU 1, GPU 2} costs 3.
        // x1 = 4 (8 GPU, 4 CPU), x0 = 1 (4 CPU): cost 13.
        let p = Program { cost: vec![1.0, 3.0], rows: vec![(vec![4.0, 1.0], 8.0), (vec![0.0, 2.0], 8.0)] };
        assert!((bound(&p) - 13.0).abs() < 1e-9, "{}", bound(&p));
    }

    #[test]
    fn upper_bounds_as_rows_and_infeasibility() {
        // Need 10 CPU from type 0 (4 CPU, cost 1) capped at 2 nodes: infeasible.
        let p = Program { cost: vec![1.0], rows: vec![(vec![4.0], 10.0), (vec![-1.0], -2.0)] };
        assert_eq!(solve(&p), Outcome::Infeasible);
        // A cap on the cheap type moves the rest to the dear one.
        let p = Program {
            cost: vec![1.0, 3.0],
            rows: vec![(vec![4.0, 4.0], 16.0), (vec![-1.0, 0.0], -2.0)],
        };
        assert!((bound(&p) - (2.0 + 2.0 * 3.0)).abs() < 1e-9, "{}", bound(&p));
    }

    #[test]
    fn duals_price_the_binding_rows() {
        // Need 8 CPU and 8 GPU: type 0 {CPU 4} costs 1, type 1 {CPU 1, GPU 2} costs 3.
        // Both types are used, so CPU is worth 1/4 and GPU (3 - 1/4) / 2.
        let p = Program { cost: vec![1.0, 3.0], rows: vec![(vec![4.0, 1.0], 8.0), (vec![0.0, 2.0], 8.0)] };
        let s = solve_full(&p).unwrap();
        assert!((s.duals[0] - 0.25).abs() < 1e-9 && (s.duals[1] - 1.375).abs() < 1e-9, "{s:?}");
        // Strong duality: prices times needs is the optimum.
        assert!((s.duals[0] * 8.0 + s.duals[1] * 8.0 - s.value).abs() < 1e-9, "{s:?}");
        // The primal point: x1 = 4, x0 = 1.
        assert!((s.primal[0] - 1.0).abs() < 1e-9 && (s.primal[1] - 4.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn nothing_asked_costs_nothing_and_empty_rows_are_infeasible() {
        assert_eq!(solve(&Program { cost: vec![1.0], rows: vec![(vec![1.0], 0.0)] }), Outcome::Bound(0.0));
        assert_eq!(solve(&Program { cost: vec![1.0], rows: vec![(vec![0.0], 1.0)] }), Outcome::Infeasible);
    }

    proptest::proptest! {
        /// The bound never exceeds the cost of a feasible integer point found by
        /// brute force, and equals the true LP optimum on one-row programs.
        #[test]
        fn never_above_a_feasible_point(
            costs in proptest::collection::vec(0.1f64..10.0, 1..4),
            caps in proptest::collection::vec(proptest::collection::vec(0.0f64..8.0, 3), 1..4),
            need in proptest::collection::vec(0.0f64..20.0, 3),
        ) {
            let n = costs.len().min(caps.len());
            let rows: Vec<(Vec<f64>, f64)> = (0..3).map(|r| ((0..n).map(|t| caps[t][r]).collect(), need[r])).collect();
            let p = Program { cost: costs[..n].to_vec(), rows: rows.clone() };
            // Brute force over small integer points.
            let mut best = f64::INFINITY;
            let mut x = vec![0usize; n];
            loop {
                if rows.iter().all(|(a, b)| a.iter().zip(&x).map(|(c, k)| c * *k as f64).sum::<f64>() >= *b - 1e-9) {
                    best = best.min(x.iter().zip(&costs).map(|(k, c)| *k as f64 * c).sum());
                }
                let mut i = 0;
                while i < n {
                    x[i] += 1;
                    if x[i] <= 25 { break; }
                    x[i] = 0;
                    i += 1;
                }
                if i == n { break; }
            }
            match solve(&p) {
                Outcome::Bound(v) => proptest::prop_assert!(v <= best + 1e-6, "bound {v} above a feasible point {best}"),
                Outcome::Infeasible => proptest::prop_assert!(best.is_infinite(), "called infeasible, but {best} is feasible"),
            }
        }
    }
}
