//! New nodes by patterns: an alternative to opening nodes shape by shape.
//!
//! Each bundle is given a value: the least it costs to host on its own (over
//! the types that can hold it, price divided by how many fit). A node of each
//! type is then filled one bundle at a time, each time with the shape of the
//! most value per share of the node's *remaining* room it takes, so shapes
//! heavy in different resources end up side by side. The type whose filled
//! node is worth the most per unit of its price is opened, as many times as the
//! remaining bundles fill that same pattern; then again, until every bundle is
//! placed or the caps are reached. `place.rs` keeps this plan only when it
//! costs less than the shape-by-shape one and places as much.

use super::{Demand, LaunchReason, Planner, Vector, bound, fits, sub_times};
use ray_common::ResourceSet;

/// Above this many shapes the patterns cost more time than they are worth for
/// one decision; the shape-by-shape plan stands.
pub(super) const MAX_SHAPES: usize = 64;

/// Plans new nodes for `left` (shape, count, set, reason) on a copy of `p`;
/// `None` when not tried.
pub(super) fn plan<'a>(p: &Planner<'a>, left: &[(Vector, u64, ResourceSet, LaunchReason)]) -> Option<Planner<'a>> {
    if left.is_empty() || left.len() > MAX_SHAPES {
        return None;
    }
    let q = p;
    let types = q.input.types.len();
    // A bundle's worth: its dual price in the cost LP of this demand (what it
    // adds to the cheapest fractional plan), else the least it costs to host
    // on its own.
    let alone: Vec<f64> = left
        .iter()
        .map(|(s, ..)| {
            (0..types)
                .filter(|&t| q.room(t) > 0)
                .filter_map(|t| {
                    let k = fits(&q.type_vecs[t], s);
                    (k > 0).then(|| q.type_cost[t] / k as f64)
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let room: Vec<u64> = (0..types).map(|t| q.room(t)).collect();
    let global = u64::from(q.input.max_workers).saturating_sub(q.workers);
    let items: Vec<(Vector, u64)> = left.iter().zip(&alone).filter(|(_, a)| a.is_finite()).map(|(l, _)| (l.0.clone(), l.1)).collect();
    let priced = bound::bundle_values(&q.type_vecs, &q.type_cost, &room, global, &items);
    let by_alone = build(p, left, &alone, &alone);
    let Some(prices) = priced.filter(|v| v.iter().any(|x| *x > 0.0)) else { return Some(by_alone) };
    let mut it = prices.into_iter();
    let dual: Vec<f64> = alone.iter().map(|a| if a.is_finite() { it.next().unwrap_or(0.0).max(1e-9) } else { f64::INFINITY }).collect();
    let by_dual = build(p, left, &alone, &dual);
    let capped = |p: &Planner| p.decision.capped.iter().map(|d| d.count).sum::<u64>();
    if capped(&by_dual) <= capped(&by_alone) && super::place::cost(&by_dual) < super::place::cost(&by_alone) {
        Some(by_dual)
    } else {
        Some(by_alone)
    }
}

/// The pattern plan with bundles worth `value` (`alone`: what each costs on
/// its own, infinite for shapes no type with room holds).
fn build<'a>(p: &Planner<'a>, left: &[(Vector, u64, ResourceSet, LaunchReason)], alone: &[f64], value: &[f64]) -> Planner<'a> {
    let mut q = p.clone();
    let types = q.input.types.len();
    let mut remaining: Vec<u64> = left.iter().map(|l| l.1).collect();
    for (i, v) in alone.iter().enumerate() {
        if !v.is_finite() {
            remaining[i] = 0; // no type with room holds it: capped below
        }
    }
    loop {
        if remaining.iter().all(|r| *r == 0) {
            break;
        }
        let mut best: Option<(usize, Vec<u64>, f64)> = None;
        for t in (0..types).filter(|&t| q.room(t) > 0 && q.type_cost[t] > 0.0) {
            let counts = fill(&q.type_vecs[t], left, &remaining, value);
            let worth: f64 = counts.iter().zip(value).map(|(c, v)| *c as f64 * v).sum();
            if worth <= 0.0 {
                continue;
            }
            let score = worth / q.type_cost[t];
            if best.as_ref().is_none_or(|(_, _, b)| score > *b + 1e-12) {
                best = Some((t, counts, score));
            }
        }
        let Some((t, counts, _)) = best else { break };
        let times = counts
            .iter()
            .zip(&remaining)
            .filter(|(c, _)| **c > 0)
            .map(|(c, r)| r / c)
            .min()
            .unwrap_or(0)
            .max(1)
            .min(q.room(t));
        let reason = if counts.iter().zip(left).any(|(c, l)| *c > 0 && l.3 == LaunchReason::Demand) {
            LaunchReason::Demand
        } else {
            LaunchReason::PlacementGroup
        };
        q.add(t, times, reason);
        for (r, c) in remaining.iter_mut().zip(&counts) {
            *r = r.saturating_sub(c.saturating_mul(times));
        }
    }
    // What found no room: shapes no type with room holds, and the rest once
    // the caps were reached.
    for (i, l) in left.iter().enumerate() {
        let unplaced = if alone[i].is_finite() { remaining[i] } else { l.1 };
        if unplaced > 0 {
            q.decision.capped.push(Demand { shape: l.2.clone(), count: unplaced });
        }
    }
    q
}

/// One node of capacity `cap`, filled one bundle at a time with the shape of
/// the most value per share of the remaining room it takes.
fn fill(cap: &[i64], left: &[(Vector, u64, ResourceSet, LaunchReason)], remaining: &[u64], value: &[f64]) -> Vec<u64> {
    let mut room = cap.to_vec();
    let mut counts = vec![0u64; left.len()];
    loop {
        let mut best: Option<(usize, f64)> = None;
        for (i, (s, ..)) in left.iter().enumerate() {
            if counts[i] >= remaining[i] || fits(&room, s) == 0 {
                continue;
            }
            let share = s
                .iter()
                .zip(&room)
                .filter(|(need, _)| **need > 0)
                .map(|(need, have)| *need as f64 / *have as f64)
                .fold(0.0, f64::max);
            let score = value[i] / share.max(1e-12);
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        let Some((i, _)) = best else { break };
        // Add as many of it as keep the node's other resources no scarcer than
        // this one's: at least one, at most what fits and what remains.
        let k = fits(&room, &left[i].0).min(remaining[i] - counts[i]).min(batch(&room, &left[i].0));
        sub_times(&mut room, &left[i].0, k);
        counts[i] += k;
    }
    counts
}

/// How many of `shape` to add at once: an eighth of what fits, at least one,
/// so the choice is revisited as the room changes without a step per bundle.
fn batch(room: &[i64], shape: &[i64]) -> u64 {
    (fits(room, shape) / 8).max(1)
}
