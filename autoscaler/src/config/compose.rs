//! Events to tree: libyaml's events (through `libyaml-safer`) composed into the
//! positioned [`Node`] tree the way PyYAML's composer and `SafeConstructor` build
//! Python values: anchors and aliases, `<<` merges (`flatten_mapping`), one
//! document per file, and tags resolved by `scalar.rs`. Unlike PyYAML, a key given
//! twice in one mapping is a fault.

use std::collections::HashMap;

use libyaml_safer::{EventData, Parser, ScalarStyle};

use super::reader::child_path;
use super::scalar::{self, Resolved};
use super::yaml::{Entry, MAX_DEPTH, MAX_NODES, Mapping, Mark, Node, Scalar, Style, Value, YamlError, YamlErrorKind};

/// See [`super::yaml::parse`]; also returns what PyYAML accepts silently but a
/// person should hear of (a duplicate key: the later value is used).
pub fn compose(text: &str) -> Result<(Option<Node>, Vec<YamlError>), Vec<YamlError>> {
    let events = read_events(text).map_err(|e| vec![e])?;
    let mut c = Composer {
        events,
        pos: 0,
        anchors: HashMap::new(),
        open: Vec::new(),
        nodes: 0,
        gave_up: false,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let root = c.stream();
    if c.errors.is_empty() {
        Ok((root, c.warnings))
    } else {
        c.errors.sort_by_key(|e| e.mark);
        Err(c.errors)
    }
}

/// A parser event, with what the tree needs of it.
enum Ev {
    Scalar { anchor: Option<String>, tag: Option<String>, text: String, style: Style },
    SequenceStart { anchor: Option<String>, tag: Option<String> },
    MappingStart { anchor: Option<String>, tag: Option<String> },
    Alias(String),
    CollectionEnd,
    DocumentStart,
    Other,
}

fn read_events(text: &str) -> Result<Vec<(Ev, Mark)>, YamlError> {
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut out = Vec::new();
    loop {
        match parser.parse() {
            Ok(ev) => {
                let mark = Mark::from_libyaml(ev.start_mark);
                let ev = match ev.data {
                    EventData::StreamEnd => return Ok(out),
                    EventData::Scalar { anchor, tag, value, style: st, .. } => {
                        Ev::Scalar { anchor, tag, text: value, style: style(st) }
                    }
                    EventData::SequenceStart { anchor, tag, .. } => Ev::SequenceStart { anchor, tag },
                    EventData::MappingStart { anchor, tag, .. } => Ev::MappingStart { anchor, tag },
                    EventData::Alias { anchor } => Ev::Alias(anchor),
                    EventData::SequenceEnd | EventData::MappingEnd => Ev::CollectionEnd,
                    EventData::DocumentStart { .. } => Ev::DocumentStart,
                    _ => Ev::Other,
                };
                out.push((ev, mark));
            }
            Err(e) => {
                let mark = e.problem_mark().map(Mark::from_libyaml).unwrap_or(Mark::NONE);
                let mut message = e.problem().to_string();
                if let (Some(ctx), Some(at)) = (e.context(), e.context_mark()) {
                    let at = Mark::from_libyaml(at);
                    message = format!("{message} {ctx} (started at line {}, column {})", at.line, at.column);
                }
                return Err(YamlError { kind: YamlErrorKind::Syntax, mark, path: String::new(), message });
            }
        }
    }
}

struct Composer {
    events: Vec<(Ev, Mark)>,
    pos: usize,
    /// Finished anchored nodes, with their size in nodes.
    anchors: HashMap<String, (Node, usize)>,
    /// Anchors whose node is still being read (an alias to one would recurse).
    open: Vec<String>,
    nodes: usize,
    /// A size limit was hit (reported once).
    gave_up: bool,
    errors: Vec<YamlError>,
    warnings: Vec<YamlError>,
}

fn style(s: ScalarStyle) -> Style {
    match s {
        ScalarStyle::SingleQuoted => Style::SingleQuoted,
        ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
        ScalarStyle::Literal => Style::Literal,
        ScalarStyle::Folded => Style::Folded,
        _ => Style::Plain,
    }
}

fn size(n: &Node) -> usize {
    1 + match &n.value {
        Value::Scalar(_) => 0,
        Value::Sequence(items) => items.iter().map(size).sum(),
        Value::Mapping(m) => m.entries.iter().map(|e| 1 + size(&e.value)).sum(),
    }
}

impl Composer {
    /// Takes the next event (`Other` past the end).
    fn next(&mut self) -> (Ev, Mark) {
        let i = self.pos;
        self.pos += 1;
        match self.events.get_mut(i) {
            Some(slot) => std::mem::replace(slot, (Ev::Other, slot.1)),
            None => (Ev::Other, Mark::NONE),
        }
    }

    /// Skips the rest of a collection whose start was just taken.
    fn skip_collection(&mut self) {
        let mut open = 1usize;
        while open > 0 && self.pos < self.events.len() {
            match self.next().0 {
                Ev::SequenceStart { .. } | Ev::MappingStart { .. } => open += 1,
                Ev::CollectionEnd => open -= 1,
                _ => {}
            }
        }
    }

    fn peek(&self) -> Option<&Ev> {
        self.events.get(self.pos).map(|(e, _)| e)
    }

    fn err(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(YamlError {
            kind: YamlErrorKind::Document,
            mark,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn stream(&mut self) -> Option<Node> {
        self.next(); // StreamStart
        if !matches!(self.peek(), Some(Ev::DocumentStart)) {
            return None;
        }
        self.next();
        let root = self.node(0, "");
        self.next(); // DocumentEnd
        if let Some((Ev::DocumentStart, mark)) = self.events.get(self.pos) {
            let mark = *mark;
            self.err(mark, "", "expected a single document in the stream, but another document starts here");
        }
        root
    }

    /// One node (and its children). `None` after a fault that leaves no value.
    fn node(&mut self, depth: usize, path: &str) -> Option<Node> {
        let (ev, mark) = self.next();
        let anchor = match &ev {
            Ev::Alias(a) => return self.alias(a.clone(), mark, path),
            Ev::Scalar { anchor, .. } | Ev::SequenceStart { anchor, .. } | Ev::MappingStart { anchor, .. } => {
                anchor.clone()
            }
            _ => {
                self.err(mark, path, "unexpected end of a collection");
                return None;
            }
        };
        self.nodes += 1;
        let over = if self.nodes > MAX_NODES {
            Some(format!("the document has more than {MAX_NODES} nodes"))
        } else if depth > MAX_DEPTH {
            Some(format!("nested deeper than {MAX_DEPTH} levels"))
        } else {
            None
        };
        if let Some(msg) = over {
            if !self.gave_up {
                self.gave_up = true;
                self.err(mark, path, msg);
            }
            if !matches!(ev, Ev::Scalar { .. }) {
                self.skip_collection();
            }
            return None;
        }
        if let Some(a) = &anchor {
            if let Some((prev, _)) = self.anchors.get(a) {
                let first = prev.mark;
                self.err(
                    mark,
                    path,
                    format!("duplicate anchor &{a} (first defined at line {}, column {})", first.line, first.column),
                );
            }
            self.open.push(a.clone());
        }
        let node = match ev {
            Ev::Scalar { tag, text, style: st, .. } => self.scalar(mark, path, tag, text, st),
            Ev::SequenceStart { tag, .. } => {
                self.check_collection_tag(mark, path, tag.as_deref(), scalar::TAG_SEQ);
                self.sequence(mark, depth, path)
            }
            _ => {
                let tag = if let Ev::MappingStart { tag, .. } = ev { tag } else { None };
                self.check_collection_tag(mark, path, tag.as_deref(), scalar::TAG_MAP);
                self.mapping(mark, depth, path)
            }
        };
        if let Some(a) = anchor {
            self.open.retain(|o| *o != a);
            if let Some(n) = &node {
                let s = size(n);
                self.anchors.entry(a).or_insert_with(|| (n.clone(), s));
            }
        }
        node
    }

    fn alias(&mut self, anchor: String, mark: Mark, path: &str) -> Option<Node> {
        if self.open.contains(&anchor) {
            self.err(
                mark,
                path,
                format!("alias *{anchor} refers to a node that contains it (recursive structures are not supported)"),
            );
            return None;
        }
        let Some((node, n)) = self.anchors.get(&anchor) else {
            self.err(mark, path, format!("found undefined alias *{anchor}"));
            return None;
        };
        let (node, n) = (node.clone(), *n);
        self.nodes += n;
        if self.nodes > MAX_NODES {
            if !self.gave_up {
                self.gave_up = true;
                self.err(mark, path, format!("aliases expand the document past {MAX_NODES} nodes"));
            }
            return None;
        }
        Some(node)
    }

    fn check_collection_tag(&mut self, mark: Mark, path: &str, tag: Option<&str>, expected: &str) {
        if let Some(t) = tag
            && t != "!"
            && t != expected
        {
            self.err(
                mark,
                path,
                format!("the tag {} is not supported on a {}", scalar::short_tag(t), scalar::short_tag(expected)),
            );
        }
    }

    fn scalar(&mut self, mark: Mark, path: &str, tag: Option<String>, text: String, st: Style) -> Option<Node> {
        // `! 5` is resolved like `5`; `! "5"` is a string.
        let tag = tag.filter(|t| t != "!" || st != Style::Plain);
        let resolved = match (&tag, st) {
            (Some(t), _) if t == "!" => Resolved::Str,
            (Some(t), _) => match scalar::resolve_tagged(t, &text) {
                Ok(r) => r,
                Err(msg) => {
                    self.err(mark, path, msg);
                    return None;
                }
            },
            // `None` is a plain `<<` or `=`: judged by where it is used.
            (None, Style::Plain) => scalar::resolve_plain(&text).unwrap_or(Resolved::Str),
            (None, _) => Resolved::Str,
        };
        Some(Node { mark, value: Value::Scalar(Scalar { text, style: st, tag, resolved }) })
    }

    fn at_end(&self) -> bool {
        matches!(self.peek(), Some(Ev::CollectionEnd) | None)
    }

    fn sequence(&mut self, mark: Mark, depth: usize, path: &str) -> Option<Node> {
        let mut items = Vec::new();
        let mut ok = true;
        while !self.at_end() {
            let item_path = format!("{path}[{}]", items.len());
            match self.node(depth + 1, &item_path) {
                Some(n) => {
                    ok &= self.value_position(&n, &item_path);
                    items.push(n);
                }
                None => ok = false,
            }
        }
        self.next(); // SequenceEnd
        ok.then_some(Node { mark, value: Value::Sequence(items) })
    }

    /// A plain `<<` or `=` where a value is expected has no value in PyYAML.
    fn value_position(&mut self, n: &Node, path: &str) -> bool {
        if let Value::Scalar(s) = &n.value
            && s.style == Style::Plain
            && s.tag.is_none()
            && (s.text == "<<" || s.text == "=")
        {
            let msg = format!("a plain {:?} has no value here (PyYAML refuses it); quote it", s.text);
            self.err(n.mark, path, msg);
            return false;
        }
        true
    }

    fn mapping(&mut self, mark: Mark, depth: usize, path: &str) -> Option<Node> {
        let mut merged: Vec<Entry> = Vec::new();
        let mut own: Vec<(Entry, String)> = Vec::new();
        let mut ok = true;
        while !self.at_end() {
            let key = self.node(depth + 1, path);
            let value_path = match key.as_ref().and_then(Node::as_scalar) {
                Some(k) => child_path(path, &k.text),
                None => path.to_string(),
            };
            let value = self.node(depth + 1, &value_path);
            let (Some(key), Some(value)) = (key, value) else {
                ok = false;
                continue;
            };
            let Value::Scalar(k) = &key.value else {
                let what = if matches!(key.value, Value::Mapping(_)) { "a mapping" } else { "a list" };
                self.err(key.mark, path, format!("a mapping key must be a scalar, not {what}"));
                ok = false;
                continue;
            };
            let is_merge = (k.style == Style::Plain && k.tag.is_none() && k.text == "<<")
                || k.tag.as_deref() == Some(scalar::TAG_MERGE);
            if is_merge {
                ok &= self.merge(&value, &value_path, &mut merged);
                continue;
            }
            if k.style == Style::Plain && k.tag.is_none() && k.text == "=" {
                self.err(key.mark, path, "a plain \"=\" has no value as a key (PyYAML refuses it); quote it");
                ok = false;
                continue;
            }
            ok &= self.value_position(&value, &value_path);
            let identity = key_identity(k);
            if let Some(i) = own.iter().position(|(_, id)| *id == identity) {
                // PyYAML (Ray's loader) keeps the later value silently; so do we, and say so.
                let (line, col) = (own[i].0.key_mark.line, own[i].0.key_mark.column);
                self.warnings.push(YamlError {
                    kind: YamlErrorKind::Document,
                    mark: key.mark,
                    path: value_path.clone(),
                    message: format!("duplicate key {:?} (first at line {line}, column {col}); the later value is used, as Ray does", k.text),
                });
                own.remove(i);
            }
            own.push((Entry { key: k.text.clone(), key_mark: key.mark, value }, identity));
        }
        self.next(); // MappingEnd
        // PyYAML: merged pairs first, then the mapping's own; a later pair wins.
        let mut m = Mapping::default();
        for e in merged.into_iter().chain(own.into_iter().map(|(e, _)| e)) {
            m.insert(&e.key.clone(), e.key_mark, e.value);
        }
        ok.then_some(Node { mark, value: Value::Mapping(m) })
    }

    /// `<<: *a` or `<<: [*a, *b]` (the first mapping listed wins), as PyYAML's
    /// `flatten_mapping` does. Of two `<<` keys in one mapping, the later wins.
    fn merge(&mut self, value: &Node, path: &str, into: &mut Vec<Entry>) -> bool {
        match &value.value {
            Value::Mapping(m) => {
                into.extend(m.entries.iter().cloned());
                true
            }
            Value::Sequence(items) => {
                // An earlier mapping's key wins over a later one's (YAML's merge
                // rule, and PyYAML's up to 6.0.2; 6.0.4 lets a later one win for
                // keys that are not interned Python strings).
                let mut ok = true;
                let mut combined = Mapping::default();
                for item in items {
                    match &item.value {
                        Value::Mapping(m) => {
                            for e in m.iter() {
                                if !combined.contains(&e.key) {
                                    combined.insert(&e.key, e.key_mark, e.value.clone());
                                }
                            }
                        }
                        _ => {
                            self.err(item.mark, path, "expected a mapping for merging (<<)");
                            ok = false;
                        }
                    }
                }
                into.extend(combined.entries);
                ok
            }
            Value::Scalar(_) => {
                self.err(value.mark, path, "expected a mapping or list of mappings for merging (<<)");
                false
            }
        }
    }
}

/// Keys are equal when PyYAML would build equal Python values from them (`1` and
/// `0x1` are one key; `"1"` and `1` are two).
fn key_identity(k: &Scalar) -> String {
    match k.resolved {
        Resolved::Null => "null".into(),
        Resolved::Bool(b) => format!("int:{}", i128::from(b)),
        Resolved::Int(i) => format!("int:{i}"),
        Resolved::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e30 => format!("int:{}", f as i128),
        Resolved::Float(f) => format!("float:{f:?}"),
        Resolved::Str | Resolved::Timestamp => format!("str:{}", k.text),
    }
}
