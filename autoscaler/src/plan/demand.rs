//! The demand file of `ray plan`: JSON or YAML (JSON is read as YAML, so both
//! give positions in errors).
//!
//! ```yaml
//! bundles:
//!   - {resources: {CPU: 1, GPU: 0.5}, count: 300}
//!   - {resources: {CPU: 2, memory: 4294967296}}      # count defaults to 1
//! placement_groups:
//!   - {strategy: STRICT_SPREAD, bundles: [{CPU: 4}, {CPU: 4}], count: 2}
//! request_resources:                                  # as ray.autoscaler.sdk.request_resources
//!   - {resources: {CPU: 8}, count: 4}
//! ```
//!
//! Memory is in bytes, as in Ray. Every fault names the file, line, column and
//! the entry (`bundles[2].resources.CPU`) with what was expected.

use ray_common::{FixedPoint, ResourceSet};

use crate::config::scalar::Resolved;
use crate::config::yaml::{self, Mark, Node, Value};
use crate::scheduler::{Demand, Gang, PlacementStrategy};

/// The demand to plan for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemandFile {
    /// Task and actor bundles by shape.
    pub bundles: Vec<Demand>,
    /// Placement groups.
    pub placement_groups: Vec<Gang>,
    /// A `request_resources` call's bundles: capacity to have, as if idle,
    /// whether or not work is queued for it.
    pub request_resources: Vec<Demand>,
}

impl DemandFile {
    /// How many bundles in all (placement groups' and `request_resources`'
    /// included).
    pub fn bundle_count(&self) -> u64 {
        self.bundles.iter().chain(&self.request_resources).map(|d| d.count).sum::<u64>()
            + self.placement_groups.iter().map(|g| g.bundles.len() as u64).sum::<u64>()
    }

    /// Nothing asked at all.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty() && self.placement_groups.is_empty() && self.request_resources.is_empty()
    }
}

/// A fault in a demand file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}{sep}{message}", sep = if path.is_empty() { "" } else { ": " })]
pub struct DemandError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// The entry, e.g. `bundles[2].resources.CPU`.
    pub path: String,
    /// What was expected.
    pub message: String,
}

const STRATEGIES: &str = "PACK, SPREAD, STRICT_PACK or STRICT_SPREAD";

pub(super) struct Reader<'a> {
    pub(super) file: &'a str,
}

impl Reader<'_> {
    pub(super) fn fail<T>(&self, mark: Mark, path: &str, message: impl Into<String>) -> Result<T, DemandError> {
        Err(DemandError { file: self.file.into(), line: mark.line, column: mark.column, path: path.into(), message: message.into() })
    }

    pub(super) fn mapping<'n>(&self, n: &'n Node, path: &str, keys: &[&str]) -> Result<&'n yaml::Mapping, DemandError> {
        let Some(m) = n.as_mapping() else { return self.fail(n.mark, path, "expected a mapping") };
        for e in m.iter() {
            if !keys.contains(&e.key.as_str()) {
                let at = if path.is_empty() { e.key.clone() } else { format!("{path}.{}", e.key) };
                return self.fail(e.key_mark, &at, format!("unknown key; expected {}", keys.join(", ")));
            }
        }
        Ok(m)
    }

    pub(super) fn sequence<'n>(&self, n: &'n Node, path: &str) -> Result<&'n [Node], DemandError> {
        match &n.value {
            Value::Sequence(items) => Ok(items),
            _ => self.fail(n.mark, path, "expected a list"),
        }
    }

    pub(super) fn number(&self, n: &Node, path: &str) -> Result<f64, DemandError> {
        let v = match n.as_scalar().map(|s| &s.resolved) {
            Some(Resolved::Int(i)) => *i as f64,
            Some(Resolved::Float(f)) => *f,
            _ => return self.fail(n.mark, path, "expected a number"),
        };
        if !v.is_finite() || v < 0.0 {
            return self.fail(n.mark, path, format!("expected a number >= 0, got {v}"));
        }
        Ok(v)
    }

    pub(super) fn count(&self, m: &yaml::Mapping, path: &str) -> Result<u64, DemandError> {
        let Some(e) = m.entry("count") else { return Ok(1) };
        let at = format!("{path}.count");
        match e.value.as_scalar().map(|s| &s.resolved) {
            Some(Resolved::Int(i)) if *i >= 1 && *i <= i128::from(u32::MAX) => Ok(*i as u64),
            _ => self.fail(e.value.mark, &at, "expected a whole number >= 1"),
        }
    }

    pub(super) fn resources(&self, n: &Node, path: &str) -> Result<ResourceSet, DemandError> {
        let Some(m) = n.as_mapping() else {
            return self.fail(n.mark, path, "expected a mapping of resource names to amounts, e.g. {CPU: 1, GPU: 0.5}");
        };
        let mut set = ResourceSet::new();
        for e in m.iter() {
            let at = format!("{path}.{}", e.key);
            let v = self.number(&e.value, &at)?;
            if v > 0.0 {
                set.set(&e.key, FixedPoint::from_f64(v));
            }
        }
        if set.is_empty() {
            return self.fail(n.mark, path, "a bundle must ask for some resource");
        }
        Ok(set)
    }
}

/// The document's root node, or the fault that stops it being read.
pub(super) fn root(r: &Reader<'_>, text: &str, expected: &str) -> Result<Node, DemandError> {
    match yaml::parse(text) {
        Ok(Some(root)) => Ok(root),
        Ok(None) => r.fail(Mark::NONE, "", format!("the file is empty; expected {expected}")),
        Err(faults) => {
            let f = &faults[0];
            r.fail(f.mark, &f.path, format!("not valid JSON or YAML: {}", f.message))
        }
    }
}

/// Reads a demand file's text (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<DemandFile, DemandError> {
    let r = Reader { file };
    let root = root(&r, text, "a mapping with `bundles`, `placement_groups` and/or `request_resources`")?;
    let top = r.mapping(&root, "", &["bundles", "placement_groups", "request_resources"])?;
    let mut out = read(&r, top, "")?;
    if let Some(list) = top.get("request_resources") {
        out.request_resources = bundle_list(&r, list, "request_resources")?;
    }
    if out.is_empty() {
        return r.fail(root.mark, "", "no demand: expected `bundles`, `placement_groups` and/or `request_resources` with at least one entry");
    }
    Ok(out)
}

/// The `bundles` and `placement_groups` of a mapping (`prefix` leads the
/// entries' paths in errors, e.g. `steps[2].`).
pub(super) fn read(r: &Reader<'_>, top: &yaml::Mapping, prefix: &str) -> Result<DemandFile, DemandError> {
    let mut out = DemandFile::default();
    if let Some(list) = top.get("bundles") {
        out.bundles = bundle_list(r, list, &format!("{prefix}bundles"))?;
    }
    if let Some(list) = top.get("placement_groups") {
        for (i, item) in r.sequence(list, &format!("{prefix}placement_groups"))?.iter().enumerate() {
            let path = format!("{prefix}placement_groups[{i}]");
            let m = r.mapping(item, &path, &["strategy", "bundles", "count", "name"])?;
            let strategy = match m.entry("strategy") {
                None => PlacementStrategy::Pack,
                Some(e) => match e.value.as_scalar().map(|s| s.text.as_str()) {
                    Some("PACK") => PlacementStrategy::Pack,
                    Some("SPREAD") => PlacementStrategy::Spread,
                    Some("STRICT_PACK") => PlacementStrategy::StrictPack,
                    Some("STRICT_SPREAD") => PlacementStrategy::StrictSpread,
                    _ => return r.fail(e.value.mark, &format!("{path}.strategy"), format!("expected {STRATEGIES}")),
                },
            };
            let Some(list) = m.get("bundles") else { return r.fail(item.mark, &path, "missing `bundles`") };
            let bundles = r
                .sequence(list, &format!("{path}.bundles"))?
                .iter()
                .enumerate()
                .map(|(j, b)| r.resources(b, &format!("{path}.bundles[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if bundles.is_empty() {
                return r.fail(list.mark, &format!("{path}.bundles"), "a placement group needs at least one bundle");
            }
            for _ in 0..r.count(m, &path)? {
                out.placement_groups.push(Gang { bundles: bundles.clone(), strategy });
            }
        }
    }
    Ok(out)
}

/// A list of `{resources, count}` entries at `at`.
fn bundle_list(r: &Reader<'_>, list: &Node, at: &str) -> Result<Vec<Demand>, DemandError> {
    let mut out = Vec::new();
    for (i, item) in r.sequence(list, at)?.iter().enumerate() {
        let path = format!("{at}[{i}]");
        let m = r.mapping(item, &path, &["resources", "count"])?;
        let Some(res) = m.get("resources") else { return r.fail(item.mark, &path, "missing `resources`") };
        let shape = r.resources(res, &format!("{path}.resources"))?;
        out.push(Demand { shape, count: r.count(m, &path)? });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_demand() {
        let json = r#"{"bundles": [{"resources": {"CPU": 1, "GPU": 0.5}, "count": 300}],
                       "placement_groups": [{"strategy": "STRICT_SPREAD", "bundles": [{"CPU": 4}, {"CPU": 4}]}]}"#;
        let yaml = "bundles:\n  - resources: {CPU: 1, GPU: 0.5}\n    count: 300\nplacement_groups:\n  - strategy: STRICT_SPREAD\n    bundles: [{CPU: 4}, {CPU: 4}]\n";
        let a = parse("d.json", json).unwrap();
        assert_eq!(a, parse("d.yaml", yaml).unwrap());
        assert_eq!(a.bundles[0].count, 300);
        assert_eq!(a.bundles[0].shape.get("GPU"), FixedPoint::from_f64(0.5));
        assert_eq!(a.placement_groups[0].strategy, PlacementStrategy::StrictSpread);
        assert_eq!(a.bundle_count(), 302);
        assert!(a.request_resources.is_empty());
    }

    #[test]
    fn request_resources_is_read_like_bundles() {
        let d = parse("d.yaml", "request_resources:\n  - {resources: {CPU: 8}, count: 4}\n").unwrap();
        assert_eq!(d.request_resources, vec![Demand { shape: [("CPU".to_string(), FixedPoint::from_f64(8.0))].into_iter().collect(), count: 4 }]);
        assert_eq!(d.bundle_count(), 4);
        let e = parse("d.yaml", "request_resources:\n  - {resources: {CPU: 8}, cnt: 4}\n").unwrap_err();
        assert_eq!(e.path, "request_resources[0].cnt", "{e}");
    }

    #[test]
    fn faults_name_the_file_line_and_entry() {
        let e = parse("d.yaml", "bundles:\n  - resources: {CPU: 1}\n  - resources: {CPU: two}\n").unwrap_err();
        assert_eq!((e.line, e.path.as_str()), (3, "bundles[1].resources.CPU"), "{e}");
        assert!(e.to_string().starts_with("d.yaml:3:"), "{e}");
        assert!(e.message.contains("expected a number"), "{e}");

        let e = parse("d.yaml", "bundles:\n  - resources: {CPU: 1}\n    cuont: 3\n").unwrap_err();
        assert_eq!(e.path, "bundles[0].cuont");
        assert!(e.message.contains("expected resources, count"), "{e}");

        let e = parse("d.json", r#"{"placement_groups": [{"strategy": "STRICT", "bundles": [{"CPU": 1}]}]}"#).unwrap_err();
        assert_eq!(e.path, "placement_groups[0].strategy");
        assert!(e.message.contains("STRICT_SPREAD"), "{e}");

        for (text, path) in [
            ("bundles: [{resources: {CPU: -1}}]", "bundles[0].resources.CPU"),
            ("bundles: [{resources: {CPU: 0}}]", "bundles[0].resources"),
            ("bundles: [{resources: {CPU: 1}, count: 0}]", "bundles[0].count"),
            ("bundles: [{count: 2}]", "bundles[0]"),
            ("placement_groups: [{bundles: []}]", "placement_groups[0].bundles"),
            ("bundles: {CPU: 1}", "bundles"),
            ("nodes: []", "nodes"),
            ("request_resources: [{resources: {CPU: x}}]", "request_resources[0].resources.CPU"),
            ("bundles: []", ""),
        ] {
            let e = parse("d.yaml", text).unwrap_err();
            assert_eq!(e.path, path, "{text}: {e}");
        }
        assert!(parse("d.json", "{\"bundles\": [").unwrap_err().message.contains("not valid JSON or YAML"));
    }
}
