//! Reading a YAML tree with positions: typed accessors that record every fault with
//! its file, line, column and YAML path, so a bad config is reported in full.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

/// One fault in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// YAML path, e.g. `available_node_types["ray.worker.cpu"].max_workers`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
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

/// Fault collector for one file.
pub struct Reader {
    file: String,
    /// Faults so far.
    pub errors: Vec<ConfigError>,
}

fn pos(span: &Span) -> (usize, usize) {
    span.start().map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

/// A node's kind, for messages.
pub fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(s) => scalar_kind(s),
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

fn scalar_kind(s: &MarkedScalarNode) -> &'static str {
    if !s.may_coerce() {
        return "a string";
    }
    let v = s.as_str();
    if is_null(v) {
        "null"
    } else if s.as_bool().is_some() {
        "a boolean"
    } else if v.parse::<i64>().is_ok() {
        "an integer"
    } else if v.parse::<f64>().is_ok() {
        "a number"
    } else {
        "a string"
    }
}

fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
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
    known.iter().map(|k| (levenshtein(word, k), *k)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

impl Reader {
    /// A collector for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Self { file: file.into(), errors: Vec::new() }
    }

    /// Records a fault at a span.
    pub fn error_at(&mut self, span: &Span, path: &str, message: impl Into<String>) {
        let (line, column) = pos(span);
        self.errors.push(ConfigError { file: self.file.clone(), line, column, path: path.to_string(), message: message.into() });
    }

    /// Records a fault at a node.
    pub fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.error_at(node.span(), path, message);
    }

    /// The node as a mapping, or a fault.
    pub fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n MarkedMappingNode> {
        match node {
            Node::Mapping(m) => Some(m),
            other => {
                self.error(other, path, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    /// Faults for keys not in `known`, with a did-you-mean.
    pub fn check_keys(&mut self, map: &MarkedMappingNode, path: &str, known: &[&str]) {
        for (k, _) in map.iter() {
            let key = k.as_str();
            if !known.contains(&key) {
                let hint = match did_you_mean(key, known) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => format!("; expected one of: {}", known.join(", ")),
                };
                self.error_at(k.span(), &child_path(path, key), format!("unknown key {key:?}{hint}"));
            }
        }
    }

    /// A value that must be present.
    pub fn required<'n>(&mut self, map: &'n MarkedMappingNode, path: &str, key: &str, what: &str) -> Option<&'n Node> {
        let n = map.get_node(key);
        if n.is_none() {
            self.error_at(map.span(), &child_path(path, key), format!("missing; expected {what}"));
        }
        n
    }

    fn scalar<'n>(&mut self, node: &'n Node, path: &str, expected: &str) -> Option<&'n MarkedScalarNode> {
        match node {
            Node::Scalar(s) => Some(s),
            other => {
                self.error(other, path, format!("expected {expected}, got {}", kind(other)));
                None
            }
        }
    }

    /// A string (any scalar that is not null).
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.scalar(node, path, "a string")?;
        if s.may_coerce() && is_null(s.as_str()) {
            self.error(node, path, "expected a string, got null");
            return None;
        }
        Some(s.as_str().to_string())
    }

    /// A boolean.
    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let s = self.scalar(node, path, "a boolean (true or false)")?;
        match s.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(node, path, format!("expected a boolean (true or false), got {} {:?}", scalar_kind(s), s.as_str()));
                None
            }
        }
    }

    /// A whole number ≥ `min`.
    pub fn integer(&mut self, node: &Node, path: &str, min: i64) -> Option<i64> {
        let s = self.scalar(node, path, "a whole number")?;
        let v = if s.may_coerce() { s.as_str().parse::<i64>().ok() } else { None };
        match v {
            Some(v) if v >= min => Some(v),
            Some(v) => {
                self.error(node, path, format!("expected a whole number >= {min}, got {v}"));
                None
            }
            None => {
                self.error(node, path, format!("expected a whole number >= {min}, got {} {:?}", scalar_kind(s), s.as_str()));
                None
            }
        }
    }

    /// A number ≥ `min`.
    pub fn number(&mut self, node: &Node, path: &str, min: f64) -> Option<f64> {
        let s = self.scalar(node, path, "a number")?;
        let v = if s.may_coerce() { s.as_str().parse::<f64>().ok().filter(|v| v.is_finite()) } else { None };
        match v {
            Some(v) if v >= min => Some(v),
            Some(v) => {
                self.error(node, path, format!("expected a number >= {min}, got {v}"));
                None
            }
            None => {
                self.error(node, path, format!("expected a number >= {min}, got {} {:?}", scalar_kind(s), s.as_str()));
                None
            }
        }
    }

    /// A list of strings (shell commands, paths, patterns).
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match node {
            Node::Sequence(seq) => {
                let mut out = Vec::new();
                for (i, item) in seq.iter().enumerate() {
                    if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                        out.push(s);
                    }
                }
                Some(out)
            }
            Node::Scalar(s) if s.may_coerce() && is_null(s.as_str()) => Some(Vec::new()),
            other => {
                self.error(other, path, format!("expected a list of strings, got {}", kind(other)));
                None
            }
        }
    }

    /// A mapping of strings to strings.
    pub fn string_map(&mut self, node: &Node, path: &str) -> Option<Vec<(String, String)>> {
        if let Node::Scalar(s) = node
            && s.may_coerce()
            && is_null(s.as_str())
        {
            return Some(Vec::new());
        }
        let map = self.mapping(node, path)?;
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            let p = child_path(path, k.as_str());
            match v {
                Node::Scalar(s) if !(s.may_coerce() && is_null(s.as_str())) && scalar_kind(s) == "a string" => {
                    out.push((k.as_str().to_string(), s.as_str().to_string()))
                }
                other => self.error(other, &p, format!("expected a string, got {}", kind(other))),
            }
        }
        Some(out)
    }
}

/// Converts a free-form subtree (`node_config`, `provider`) to JSON, typing scalars
/// the way YAML does.
pub fn to_json(node: &Node) -> serde_json::Value {
    match node {
        Node::Scalar(s) => {
            let v = s.as_str();
            if !s.may_coerce() {
                serde_json::Value::String(v.to_string())
            } else if is_null(v) {
                serde_json::Value::Null
            } else if let Some(b) = s.as_bool() {
                serde_json::Value::Bool(b)
            } else if let Ok(i) = v.parse::<i64>() {
                serde_json::Value::from(i)
            } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
                serde_json::Value::from(f)
            } else {
                serde_json::Value::String(v.to_string())
            }
        }
        Node::Sequence(seq) => serde_json::Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.as_str().to_string(), to_json(v))).collect())
        }
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
