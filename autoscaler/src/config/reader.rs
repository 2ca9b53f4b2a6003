//! Reading the positioned YAML tree: typed accessors that record every fault (and
//! warning) with its file, line, column and YAML path, so a bad config is reported
//! in full, not one fault at a time.

use std::fmt;

use super::scalar::Resolved;
use super::yaml::{Mapping, Mark, Node, Scalar, Value};

/// One fault in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown, or when the value is not from the file).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// YAML path, e.g. `available_node_types["ray.worker.cpu"].max_workers`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn write_located(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    line: usize,
    column: usize,
    path: &str,
    message: &str,
) -> fmt::Result {
    if line > 0 {
        write!(f, "{file}:{line}:{column}: ")?;
    } else {
        write!(f, "{file}: ")?;
    }
    if path.is_empty() { write!(f, "{message}") } else { write!(f, "{path}: {message}") }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.line, self.column, &self.path, &self.message)
    }
}

/// Every fault found in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "invalid cluster config ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for (i, e) in self.0.iter().enumerate() {
            if i + 1 < n { writeln!(f, "  {e}")? } else { write!(f, "  {e}")? }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Something Ray accepts but changes or ignores, said once when the config loads
/// (Ray logs the same things): a dropped legacy field, a capped worker count...
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigWarning {
    /// The file.
    pub file: String,
    /// 1-based line (0 when not tied to a line).
    pub line: usize,
    /// 1-based column (0 when not tied to a line).
    pub column: usize,
    /// YAML path of what the warning is about.
    pub path: String,
    /// What happens and why.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.line, self.column, &self.path, &format!("warning: {}", self.message))
    }
}

/// Appends a mapping key to a YAML path, bracketing keys that are not plain words.
pub fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

/// A node's kind, for messages.
pub fn kind(node: &Node) -> &'static str {
    match &node.value {
        Value::Scalar(s) => s.resolved.kind(),
        Value::Mapping(_) => "a mapping",
        Value::Sequence(_) => "a list",
    }
}

/// Edit distance, for did-you-mean.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest known word, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    known
        .iter()
        .map(|k| (levenshtein(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn is_null(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar(s) if s.resolved == Resolved::Null)
}

/// Fault and warning collector for one file.
pub struct Reader {
    file: String,
    /// Faults so far.
    pub errors: Vec<ConfigError>,
    /// Warnings so far.
    pub warnings: Vec<ConfigWarning>,
}

impl Reader {
    /// A collector for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Self { file: file.into(), errors: Vec::new(), warnings: Vec::new() }
    }

    /// Records a fault at a position.
    pub fn error_at(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: mark.line,
            column: mark.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a fault at a node.
    pub fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.error_at(node.mark, path, message);
    }

    /// Records a warning at a position.
    pub fn warn_at(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            file: self.file.clone(),
            line: mark.line,
            column: mark.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The node as a mapping, or a fault.
    pub fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n Mapping> {
        match &node.value {
            Value::Mapping(m) => Some(m),
            _ => {
                self.error(node, path, format!("expected a mapping, got {}", kind(node)));
                None
            }
        }
    }

    /// Faults for keys not in `known`, with a did-you-mean.
    pub fn check_keys(&mut self, map: &Mapping, path: &str, known: &[&str]) {
        for e in map.iter() {
            let key = e.key.as_str();
            if !known.contains(&key) {
                let hint = match did_you_mean(key, known) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => format!("; expected one of: {}", known.join(", ")),
                };
                self.error_at(e.key_mark, &child_path(path, key), format!("unknown key {key:?}{hint}"));
            }
        }
    }

    /// A value that must be present (`at` positions the fault when it is not).
    pub fn required<'n>(&mut self, map: &'n Mapping, at: Mark, path: &str, key: &str, what: &str) -> Option<&'n Node> {
        let n = map.get(key);
        if n.is_none() {
            self.error_at(at, &child_path(path, key), format!("missing; expected {what}"));
        }
        n
    }

    fn scalar<'n>(&mut self, node: &'n Node, path: &str, expected: &str) -> Option<&'n Scalar> {
        match &node.value {
            Value::Scalar(s) => Some(s),
            _ => {
                self.error(node, path, format!("expected {expected}, got {}", kind(node)));
                None
            }
        }
    }

    fn wrong(&mut self, node: &Node, path: &str, expected: &str, s: &Scalar) {
        let got = match s.resolved {
            Resolved::Null => "null".to_string(),
            r => format!("{} {:?}", r.kind(), s.text),
        };
        self.error(node, path, format!("expected {expected}, got {got}"));
    }

    /// A string. Numbers, booleans and null are refused, as Ray's schema refuses
    /// them (quote a value such as `"123"` to make it a string).
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.scalar(node, path, "a string")?;
        if s.resolved != Resolved::Str {
            self.wrong(node, path, "a string", s);
            return None;
        }
        Some(s.text.clone())
    }

    /// A boolean (`true`/`false`, and YAML 1.1's `yes`/`no`, `on`/`off`).
    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let s = self.scalar(node, path, "a boolean (true or false)")?;
        match s.resolved {
            Resolved::Bool(b) => Some(b),
            _ => {
                self.wrong(node, path, "a boolean (true or false)", s);
                None
            }
        }
    }

    /// A whole number ≥ `min`. A float with no fraction (`3.0`) counts, as in Ray's
    /// JSON schema; a boolean does not.
    pub fn integer(&mut self, node: &Node, path: &str, min: i64) -> Option<i64> {
        let what = format!("a whole number >= {min}");
        let s = self.scalar(node, path, &what)?;
        let v = match s.resolved {
            Resolved::Int(i) => Some(i.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64),
            Resolved::Float(f) if f.is_finite() && f.fract() == 0.0 => {
                Some(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
            }
            _ => None,
        };
        match v {
            Some(v) if v >= min => Some(v),
            Some(v) => {
                self.error(node, path, format!("expected {what}, got {v}"));
                None
            }
            None => {
                self.wrong(node, path, &what, s);
                None
            }
        }
    }

    /// A number ≥ `min`; `.inf` only where `infinite_ok` (a timeout that never
    /// fires). NaN never.
    pub fn number(&mut self, node: &Node, path: &str, min: f64, infinite_ok: bool) -> Option<f64> {
        let what = format!("a number >= {min}");
        let s = self.scalar(node, path, &what)?;
        let v = match s.resolved {
            Resolved::Int(i) => Some(i as f64),
            Resolved::Float(f) if f.is_finite() || (infinite_ok && f == f64::INFINITY) => Some(f),
            _ => None,
        };
        match v {
            Some(v) if v >= min => Some(v),
            Some(v) => {
                self.error(node, path, format!("expected {what}, got {v}"));
                None
            }
            None => {
                self.wrong(node, path, &what, s);
                None
            }
        }
    }

    /// A list of strings (shell commands). Null reads as an empty list.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Sequence(seq) => {
                let mut out = Vec::new();
                for (i, item) in seq.iter().enumerate() {
                    if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                        out.push(s);
                    }
                }
                Some(out)
            }
            _ if is_null(node) => Some(Vec::new()),
            _ => {
                self.error(node, path, format!("expected a list of strings, got {}", kind(node)));
                None
            }
        }
    }

    /// A list whose items Ray's schema leaves untyped (paths and patterns): any
    /// scalar but null, as its text. Null reads as an empty list.
    pub fn scalar_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Sequence(seq) => {
                let mut out = Vec::new();
                for (i, item) in seq.iter().enumerate() {
                    match &item.value {
                        Value::Scalar(s) if s.resolved != Resolved::Null => out.push(s.text.clone()),
                        _ => {
                            self.error(item, &format!("{path}[{i}]"), format!("expected a string, got {}", kind(item)))
                        }
                    }
                }
                Some(out)
            }
            _ if is_null(node) => Some(Vec::new()),
            _ => {
                self.error(node, path, format!("expected a list, got {}", kind(node)));
                None
            }
        }
    }

    /// A mapping of strings to strings. Null reads as an empty mapping.
    pub fn string_map(&mut self, node: &Node, path: &str) -> Option<Vec<(String, String)>> {
        if is_null(node) {
            return Some(Vec::new());
        }
        let map = self.mapping(node, path)?;
        let mut out = Vec::new();
        for e in map.iter() {
            let p = child_path(path, &e.key);
            if let Some(v) = self.string(&e.value, &p) {
                out.push((e.key.clone(), v));
            }
        }
        Some(out)
    }
}

/// Converts a free-form subtree (`node_config`, `provider`, `docker`) to JSON,
/// with YAML's types. Infinities and NaN, which JSON lacks, become `.inf`/`.nan`
/// strings; timestamps stay text.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Scalar(s) => match s.resolved {
            Resolved::Null => J::Null,
            Resolved::Bool(b) => J::Bool(b),
            Resolved::Int(i) => match i64::try_from(i) {
                Ok(v) => J::from(v),
                Err(_) => J::from(i as f64),
            },
            Resolved::Float(f) if f.is_finite() => J::from(f),
            Resolved::Float(f) if f.is_nan() => J::String(".nan".into()),
            Resolved::Float(f) => J::String(if f > 0.0 { ".inf" } else { "-.inf" }.into()),
            Resolved::Str | Resolved::Timestamp => J::String(s.text.clone()),
        },
        Value::Sequence(seq) => J::Array(seq.iter().map(to_json).collect()),
        Value::Mapping(m) => J::Object(m.iter().map(|e| (e.key.clone(), to_json(&e.value))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_and_paths() {
        assert_eq!(did_you_mean("max_worker", &["max_workers", "min_workers"]), Some("max_workers"));
        assert_eq!(did_you_mean("zzzzzzzz", &["max_workers"]), None);
        assert_eq!(child_path("", "a"), "a");
        assert_eq!(child_path("available_node_types", "ray.worker.cpu"), "available_node_types[\"ray.worker.cpu\"]");
    }
}
