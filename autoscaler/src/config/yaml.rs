//! A YAML document as a tree with positions, read the way Ray reads it
//! (`yaml.safe_load`): libyaml's grammar through `libyaml-safer` (so a flow mapping
//! may close in column 0 after comment lines, as Ray's own templates do), PyYAML's
//! YAML 1.1 scalar types (`scalar.rs`), anchors and aliases, and `<<` merge keys.
//! Every node keeps the line and column it was written at.
//!
//! One deliberate difference: PyYAML keeps the last of two equal keys in a mapping
//! without a word; this loader refuses the file, because it is almost always a typo.

use std::fmt;

use super::scalar::Resolved;

/// Where a node starts: 1-based line and column. `Mark::NONE` (0:0) for values that
/// do not come from the file (provider defaults, values Ray fills in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    /// 1-based line, 0 when not from the file.
    pub line: usize,
    /// 1-based column, 0 when not from the file.
    pub column: usize,
}

impl Mark {
    /// No position: the value was not written in the file.
    pub const NONE: Mark = Mark { line: 0, column: 0 };

    pub(super) fn from_libyaml(m: libyaml_safer::Mark) -> Self {
        Mark { line: m.line as usize + 1, column: m.column as usize + 1 }
    }
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: its type comes from its text.
    Plain,
    /// `'...'`.
    SingleQuoted,
    /// `"..."`.
    DoubleQuoted,
    /// `|` block.
    Literal,
    /// `>` block.
    Folded,
}

/// A scalar: its text (after unescaping and folding), how it was written, its
/// explicit tag if any, and its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The value as text.
    pub text: String,
    /// Plain, quoted or block.
    pub style: Style,
    /// Explicit tag, expanded (`!!int` is `tag:yaml.org,2002:int`).
    pub tag: Option<String>,
    /// The type PyYAML would give it.
    pub resolved: Resolved,
}

/// One `key: value` of a mapping. Keys are scalars; `key` is their text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is written.
    pub key_mark: Mark,
    /// The value.
    pub value: Node,
}

/// A mapping with its keys in the order Python's dict keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    /// The entries, one per key.
    pub entries: Vec<Entry>,
}

impl Mapping {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The entry of `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Sets `key` like a Python dict does: a present key keeps its place and
    /// position, a new one goes last.
    pub fn insert(&mut self, key: &str, key_mark: Mark, value: Node) {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = value,
            None => self.entries.push(Entry { key: key.to_string(), key_mark, value }),
        }
    }

    /// Takes `key` out.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A mapping.
    Mapping(Mapping),
    /// A sequence.
    Sequence(Vec<Node>),
}

/// A node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts in the file.
    pub mark: Mark,
    /// What it holds.
    pub value: Value,
}

impl Node {
    /// A string scalar not written in the file (or at `mark`).
    pub fn string(text: &str, mark: Mark) -> Node {
        Node {
            mark,
            value: Value::Scalar(Scalar {
                text: text.to_string(),
                style: Style::DoubleQuoted,
                tag: None,
                resolved: Resolved::Str,
            }),
        }
    }

    /// An integer scalar not written in the file (or at `mark`).
    pub fn int(v: i128, mark: Mark) -> Node {
        Node {
            mark,
            value: Value::Scalar(Scalar {
                text: v.to_string(),
                style: Style::Plain,
                tag: None,
                resolved: Resolved::Int(v),
            }),
        }
    }

    /// A mapping node.
    pub fn mapping(m: Mapping, mark: Mark) -> Node {
        Node { mark, value: Value::Mapping(m) }
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping, if this is one.
    pub fn as_mapping(&self) -> Option<&Mapping> {
        match &self.value {
            Value::Mapping(m) => Some(m),
            _ => None,
        }
    }

    /// Python's truth value of what PyYAML would build: empty collections, null,
    /// false, zero and "" are false.
    pub fn truthy(&self) -> bool {
        match &self.value {
            Value::Mapping(m) => !m.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            Value::Scalar(s) => match s.resolved {
                Resolved::Null => false,
                Resolved::Bool(b) => b,
                Resolved::Int(i) => i != 0,
                Resolved::Float(f) => f != 0.0,
                Resolved::Str | Resolved::Timestamp => !s.text.is_empty(),
            },
        }
    }

    /// Forgets where every node of this subtree was written (for values that are
    /// not from the user's file, such as provider defaults).
    pub fn without_marks(mut self) -> Node {
        fn clear(n: &mut Node) {
            n.mark = Mark::NONE;
            match &mut n.value {
                Value::Scalar(_) => {}
                Value::Sequence(items) => items.iter_mut().for_each(clear),
                Value::Mapping(m) => m.entries.iter_mut().for_each(|e| {
                    e.key_mark = Mark::NONE;
                    clear(&mut e.value);
                }),
            }
        }
        clear(&mut self);
        self
    }
}

/// What kind of fault a [`YamlError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// The text is not YAML (libyaml's grammar refuses it).
    Syntax,
    /// Well-formed YAML that cannot be read as one document of plain data:
    /// duplicate keys or anchors, unknown aliases, unsupported tags, bad merges.
    Document,
}

/// A fault in the YAML itself: its position (0:0 when unknown), YAML path (empty
/// for grammar faults) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Grammar or document.
    pub kind: YamlErrorKind,
    /// Where.
    pub mark: Mark,
    /// YAML path of the node, e.g. `provider.type`.
    pub path: String,
    /// What.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.mark.line, self.mark.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for YamlError {}

/// Most nodes a document may expand to (aliases copy their anchor's node), so that
/// a small file of nested aliases cannot exhaust memory.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// Parses one YAML document. `Ok(None)` for a stream with no document (an empty
/// file). A grammar error stops at the first fault; faults in a well-formed file
/// (duplicate keys, unknown aliases or tags, bad merges) are all reported.
pub fn parse(text: &str) -> Result<Option<Node>, Vec<YamlError>> {
    super::compose::compose(text).map(|(root, _)| root)
}

/// [`parse`], with what was accepted but is worth a warning (duplicate keys).
pub fn parse_with_warnings(text: &str) -> Result<(Option<Node>, Vec<YamlError>), Vec<YamlError>> {
    super::compose::compose(text)
}
