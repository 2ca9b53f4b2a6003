//! Resource quantities: fixed-point amounts and named sets of them.
//!
//! Quantities are kept as integers in units of 1/10000 (as Ray does), so that
//! adding and subtracting fractional CPUs never drifts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Units per whole resource.
pub const RESOURCE_UNIT_SCALING: i64 = 10_000;

/// Resource names with a meaning of their own.
pub const CPU: &str = "CPU";
/// GPUs.
pub const GPU: &str = "GPU";
/// Heap memory available to tasks, in bytes.
pub const MEMORY: &str = "memory";
/// Shared-memory object store capacity, in bytes.
pub const OBJECT_STORE_MEMORY: &str = "object_store_memory";

/// A resource amount with four decimal digits of precision.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FixedPoint(i64);

impl FixedPoint {
    /// Zero.
    pub const ZERO: FixedPoint = FixedPoint(0);

    /// From a float, rounding to the nearest unit. Non-finite input maps to zero;
    /// validate with [`ResourceSet::from_f64_map`] at the edges.
    pub fn from_f64(v: f64) -> Self {
        if !v.is_finite() {
            return Self(0);
        }
        let scaled = (v * RESOURCE_UNIT_SCALING as f64).round();
        Self(scaled.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
    }

    /// From a whole number.
    pub fn from_int(v: i64) -> Self {
        Self(v.saturating_mul(RESOURCE_UNIT_SCALING))
    }

    /// As a float.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / RESOURCE_UNIT_SCALING as f64
    }

    /// Raw units.
    pub fn raw(self) -> i64 {
        self.0
    }

    /// From raw units.
    pub fn from_raw(raw: i64) -> Self {
        Self(raw)
    }

    /// True for strictly positive amounts.
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl Add for FixedPoint {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}
impl AddAssign for FixedPoint {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}
impl Sub for FixedPoint {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }
}
impl SubAssign for FixedPoint {
    fn sub_assign(&mut self, rhs: Self) {
        *self = *self - rhs;
    }
}

impl fmt::Debug for FixedPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_f64())
    }
}

impl fmt::Display for FixedPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a resource map was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A quantity below zero.
    #[error("quantity of {name:?} must not be negative, got {value}")]
    Negative {
        /// Resource name.
        name: String,
        /// The value given.
        value: f64,
    },
    /// NaN or infinite.
    #[error("quantity of {name:?} must be a finite number, got {value}")]
    NotFinite {
        /// Resource name.
        name: String,
        /// The value given.
        value: f64,
    },
    /// Empty resource name.
    #[error("resource names must not be empty")]
    EmptyName,
}

/// A set of named, non-zero resource amounts, e.g. `{CPU: 4, GPU: 1}`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceSet(BTreeMap<String, FixedPoint>);

impl ResourceSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and converts a float map (from the wire or a flag): names must be
    /// non-empty, amounts finite and non-negative. Zero amounts are dropped.
    pub fn from_f64_map<'a, I>(map: I) -> Result<Self, ResourceError>
    where
        I: IntoIterator<Item = (&'a String, &'a f64)>,
    {
        let mut out = BTreeMap::new();
        for (name, &value) in map {
            if name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            if !value.is_finite() {
                return Err(ResourceError::NotFinite { name: name.clone(), value });
            }
            if value < 0.0 {
                return Err(ResourceError::Negative { name: name.clone(), value });
            }
            let q = FixedPoint::from_f64(value);
            if q.is_positive() {
                out.insert(name.clone(), q);
            }
        }
        Ok(Self(out))
    }

    /// Like [`Self::from_f64_map`] but drops invalid entries instead of failing;
    /// for data already validated upstream.
    pub fn from_f64_map_lossy<'a, I>(map: I) -> Self
    where
        I: IntoIterator<Item = (&'a String, &'a f64)>,
    {
        Self(
            map.into_iter()
                .filter(|(n, v)| !n.is_empty() && v.is_finite() && **v > 0.0)
                .map(|(n, v)| (n.clone(), FixedPoint::from_f64(*v)))
                .filter(|(_, q)| q.is_positive())
                .collect(),
        )
    }

    /// The float map used on the wire.
    pub fn to_f64_map(&self) -> HashMap<String, f64> {
        self.0.iter().map(|(k, v)| (k.clone(), v.to_f64())).collect()
    }

    /// Sets an amount; zero removes the entry.
    pub fn set(&mut self, name: impl Into<String>, amount: FixedPoint) {
        let name = name.into();
        if amount.is_positive() {
            self.0.insert(name, amount);
        } else {
            self.0.remove(&name);
        }
    }

    /// The amount of a resource (zero when absent).
    pub fn get(&self, name: &str) -> FixedPoint {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// True when no resource is present.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of distinct resources.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FixedPoint)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// True when every amount here is available in `other`.
    pub fn is_subset_of(&self, other: &ResourceSet) -> bool {
        self.0.iter().all(|(k, v)| other.get(k) >= *v)
    }

    /// Adds every amount of `other`.
    pub fn add(&mut self, other: &ResourceSet) {
        for (k, v) in &other.0 {
            let cur = self.get(k);
            self.set(k.clone(), cur + *v);
        }
    }

    /// Subtracts every amount of `other`, flooring at zero.
    pub fn subtract(&mut self, other: &ResourceSet) {
        for (k, v) in &other.0 {
            let cur = self.get(k);
            self.set(k.clone(), cur - *v);
        }
    }

    /// True when a GPU is part of the set.
    pub fn has_gpu(&self) -> bool {
        self.get(GPU).is_positive()
    }
}

impl FromIterator<(String, FixedPoint)> for ResourceSet {
    fn from_iter<T: IntoIterator<Item = (String, FixedPoint)>>(iter: T) -> Self {
        let mut s = ResourceSet::new();
        for (k, v) in iter {
            s.set(k, v);
        }
        s
    }
}

/// Formats like Ray prints a Python dict of floats: `{'CPU': 1.0, 'GPU': 1.0}`.
impl fmt::Display for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "'{}': {}", k, python_float(v.to_f64()))?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Formats a float as Python's `repr` does for ordinary values (`1.0`, `0.5`).
pub fn python_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, f64)]) -> ResourceSet {
        let m: HashMap<String, f64> = pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        ResourceSet::from_f64_map(&m).unwrap()
    }

    #[test]
    fn fractional_arithmetic_does_not_drift() {
        let mut total = ResourceSet::new();
        let tenth = set(&[("CPU", 0.1)]);
        for _ in 0..10 {
            total.add(&tenth);
        }
        assert_eq!(total.get("CPU"), FixedPoint::from_int(1));
        for _ in 0..10 {
            total.subtract(&tenth);
        }
        assert!(total.is_empty());
    }

    #[test]
    fn rejects_negative_and_non_finite() {
        let m: HashMap<String, f64> = [("A".to_string(), -1.0)].into();
        assert!(matches!(ResourceSet::from_f64_map(&m), Err(ResourceError::Negative { .. })));
        let m: HashMap<String, f64> = [("A".to_string(), f64::NAN)].into();
        assert!(matches!(ResourceSet::from_f64_map(&m), Err(ResourceError::NotFinite { .. })));
        let m: HashMap<String, f64> = [(String::new(), 1.0)].into();
        assert_eq!(ResourceSet::from_f64_map(&m), Err(ResourceError::EmptyName));
    }

    #[test]
    fn subset_and_display() {
        let small = set(&[("CPU", 1.0)]);
        let big = set(&[("CPU", 2.0), ("GPU", 1.0)]);
        assert!(small.is_subset_of(&big));
        assert!(!big.is_subset_of(&small));
        assert_eq!(big.to_string(), "{'CPU': 2.0, 'GPU': 1.0}");
        assert_eq!(set(&[("CPU", 0.5)]).to_string(), "{'CPU': 0.5}");
    }
}
