//! The YAML layer: what PyYAML accepts loads, with positions (a duplicate key with
//! a warning); what it refuses is a fault with a position and a path.

use super::scalar::Resolved;
use super::yaml::{Mark, Node, Value, YamlError, YamlErrorKind, parse};

fn doc(text: &str) -> Node {
    parse(text).unwrap_or_else(|e| panic!("{e:?}")).expect("a document")
}

fn faults(text: &str) -> Vec<YamlError> {
    parse(text).expect_err("must be refused")
}

fn at<'a>(n: &'a Node, path: &[&str]) -> &'a Node {
    path.iter().fold(n, |n, k| n.as_mapping().and_then(|m| m.get(k)).unwrap_or_else(|| panic!("no {k}")))
}

fn scalar(n: &Node) -> (&str, Resolved) {
    let s = n.as_scalar().expect("a scalar");
    (s.text.as_str(), s.resolved)
}

#[test]
fn a_flow_mapping_may_close_in_column_0_after_comment_lines() {
    // The habit of Ray's templates that stricter parsers refuse.
    let d = doc("a: 1\nfile_mounts: {\n#    \"/x\": \"/y\",\n#    \"/z\": \"/w\",\n}\nb: 2\n");
    assert_eq!(at(&d, &["file_mounts"]).as_mapping().map(|m| m.len()), Some(0));
    assert_eq!(scalar(at(&d, &["b"])), ("2", Resolved::Int(2)));
    let d = doc("file_mounts: {\n#  c\n     \"~/.k\": \"~/.k\"\n}\n");
    assert_eq!(scalar(at(&d, &["file_mounts", "~/.k"])).0, "~/.k");
}

#[test]
fn nodes_and_keys_keep_their_line_and_column() {
    let d = doc("# comment\ntop:\n  inner: [1, two]\n  \"quoted key\": 'x'\n");
    let top = at(&d, &["top"]).as_mapping().unwrap();
    assert_eq!(top.entry("inner").unwrap().key_mark, Mark { line: 3, column: 3 });
    let Value::Sequence(items) = &at(&d, &["top", "inner"]).value else { panic!() };
    assert_eq!(items[1].mark, Mark { line: 3, column: 14 });
    assert_eq!(top.entry("quoted key").unwrap().key_mark, Mark { line: 4, column: 3 });
    assert_eq!(at(&d, &["top", "quoted key"]).mark, Mark { line: 4, column: 17 });
}

#[test]
fn quoting_and_block_scalars_make_strings() {
    let d =
        doc("a: yes\nb: 'yes'\nc: \"5\"\nd: |\n  5\ne: >-\n  x\n  y\nf: ~\ng: !!str 5\nh: !!int \"0x10\"\ni: ! 5\n");
    assert_eq!(scalar(at(&d, &["a"])).1, Resolved::Bool(true));
    assert_eq!(scalar(at(&d, &["b"])), ("yes", Resolved::Str));
    assert_eq!(scalar(at(&d, &["c"])), ("5", Resolved::Str));
    assert_eq!(scalar(at(&d, &["d"])), ("5\n", Resolved::Str));
    assert_eq!(scalar(at(&d, &["e"])), ("x y", Resolved::Str));
    assert_eq!(scalar(at(&d, &["f"])).1, Resolved::Null);
    assert_eq!(scalar(at(&d, &["g"])), ("5", Resolved::Str));
    assert_eq!(scalar(at(&d, &["h"])).1, Resolved::Int(16));
    assert_eq!(scalar(at(&d, &["i"])).1, Resolved::Int(5), "a bare ! resolves a plain scalar as usual (PyYAML)");
}

#[test]
fn aliases_copy_their_anchor_and_merges_follow_pyyaml() {
    let d = doc(concat!(
        "base: &b {p: 1, q: 2}\n",
        "other: &o {p: 3, r: 4}\n",
        "one: {<<: *b, q: 5}\n",
        "many:\n  <<: [*b, *o]\n  s: 6\n",
        "twice:\n  <<: *b\n  <<: {qq: 7, z: 0}\n  q2: 1\n",
        "copy: *b\n",
    ));
    let ints = |path: &[&str]| -> Vec<(String, String)> {
        at(&d, path).as_mapping().unwrap().iter().map(|e| (e.key.clone(), scalar(&e.value).0.to_string())).collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(ints(&["one"]), pairs(&[("p", "1"), ("q", "5")]), "the mapping's own key wins");
    assert_eq!(
        ints(&["many"]),
        pairs(&[("p", "1"), ("q", "2"), ("r", "4"), ("s", "6")]),
        "the first merged mapping wins"
    );
    assert_eq!(ints(&["twice"]), pairs(&[("p", "1"), ("q", "2"), ("qq", "7"), ("z", "0"), ("q2", "1")]));
    assert_eq!(ints(&["copy"]), pairs(&[("p", "1"), ("q", "2")]));
    assert_eq!(at(&d, &["copy"]).mark, Mark { line: 1, column: 7 }, "an alias points at its anchor's text");
}

#[test]
fn duplicate_keys_keep_the_later_value_with_a_warning_naming_both_positions() {
    let warned = |text: &str| super::yaml::parse_with_warnings(text).expect("accepted, as PyYAML accepts it").1;
    let (root, w) = super::yaml::parse_with_warnings("a:\n  b: 1\n  c: 2\n  b: 3\n").unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].mark, w[0].path.as_str()), (Mark { line: 4, column: 3 }, "a.b"));
    assert!(w[0].message.contains("duplicate key \"b\" (first at line 2, column 3)"), "{}", w[0].message);
    let root = root.expect("a document");
    assert_eq!(scalar(at(&root, &["a", "b"])).0, "3", "the later value wins, as in PyYAML");
    // Equal as Python values: 1 and 0x1 are one key, "1" is another.
    assert_eq!(warned("1: a\n0x1: b\n").len(), 1);
    assert!(warned("1: a\n\"1\": b\n").is_empty());
    // A merged key the mapping sets again is not a duplicate.
    assert!(warned("x: &x {a: 1}\ny: {<<: *x, a: 2}\n").is_empty());
    // Every duplicate is reported, not just the first.
    assert_eq!(warned("a: 1\na: 2\nb: 1\nb: 2\n").len(), 2);
}

#[test]
fn what_pyyaml_refuses_is_refused_with_a_position() {
    let cases: &[(&str, &str, (usize, usize))] = &[
        ("a: *nope\n", "undefined alias *nope", (1, 4)),
        ("a: &x 1\nb: &x 2\n", "duplicate anchor &x (first defined at line 1, column 4)", (2, 4)),
        ("a: &r {b: *r}\n", "recursive", (1, 11)),
        ("a: {<<: 5}\n", "expected a mapping or list of mappings for merging", (1, 9)),
        ("a: {<<: [1]}\n", "expected a mapping for merging", (1, 10)),
        ("a: !custom x\n", "the tag !custom is not supported", (1, 4)),
        ("a: !!int x\n", "\"x\" is not an integer", (1, 4)),
        ("a: !!map [1]\n", "the tag !!map is not supported on a !!seq", (1, 4)),
        ("a: <<\n", "a plain \"<<\" has no value here", (1, 4)),
        ("a: [=]\n", "a plain \"=\" has no value here", (1, 5)),
        ("[1]: x\n", "a mapping key must be a scalar, not a list", (1, 1)),
        ("a: 1\n---\nb: 2\n", "expected a single document", (2, 1)),
    ];
    for (text, want, (line, column)) in cases {
        let e = faults(text);
        assert!(e[0].message.contains(want), "{text:?}: {e:?}");
        assert_eq!(e[0].mark, Mark { line: *line, column: *column }, "{text:?}: {e:?}");
    }
}

#[test]
fn syntax_errors_name_the_place_and_what_was_open() {
    let e = faults("provider: {type: aws\n");
    assert_eq!(e[0].kind, YamlErrorKind::Syntax);
    assert_eq!(e[0].mark.line, 2);
    assert!(e[0].message.contains("while parsing a flow mapping (started at line 1, column 11)"), "{}", e[0].message);
    let e = faults("a: b: c\n");
    assert_eq!(
        (e[0].mark, e[0].message.as_str()),
        (Mark { line: 1, column: 5 }, "mapping values are not allowed in this context")
    );
}

#[test]
fn empty_streams_documents_and_markers() {
    assert_eq!(parse("").unwrap(), None);
    assert_eq!(parse("# only a comment\n").unwrap(), None);
    let d = doc("%YAML 1.1\n---\na: [x, ... ]\n...\n");
    let Value::Sequence(items) = &at(&d, &["a"]).value else { panic!() };
    assert_eq!(scalar(&items[1]), ("...", Resolved::Str), "`...` inside a flow list is text");
    assert_eq!(scalar(&doc("---\n")).1, Resolved::Null);
}

#[test]
fn huge_expansions_and_deep_nesting_stop_with_one_fault() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    let e = faults(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("past 1000000 nodes"), "{e:?}");
    let deep = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    let e = faults(&deep);
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("nested deeper than 256 levels"), "{e:?}");
}
