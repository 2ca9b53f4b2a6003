//! What a YAML scalar means, decided the way PyYAML's `SafeLoader` decides it (YAML
//! 1.1): Ray reads cluster files with `yaml.safe_load`, so `yes` is true, `0x10` is
//! 16, `017` is 15, `1e3` is a string and `1.0e+3` a number. Quoted and block
//! scalars are always strings; an explicit tag (`!!int "5"`) picks the type.

/// The typed value of a scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved {
    /// `~`, `null`, `Null`, `NULL` or nothing at all.
    Null,
    /// `yes`/`no`, `true`/`false`, `on`/`off` (lower, capitalized or upper case).
    Bool(bool),
    /// Decimal, `0x` hex, `0b` binary, leading-`0` octal, `1:30` base 60; `_` allowed.
    /// Values beyond `i128` saturate.
    Int(i128),
    /// Needs a `.` (`1.`, `.5`, `1.5e+3`), or `.inf`/`.nan`, or base 60 with a `.`.
    Float(f64),
    /// Anything else, and every quoted or block scalar.
    Str,
    /// `2001-12-14` or `2001-12-14 21:59:43.10 -5` (PyYAML makes a date of it).
    Timestamp,
}

impl Resolved {
    /// The kind, for messages: "a string", "an integer", "null"...
    pub fn kind(&self) -> &'static str {
        match self {
            Resolved::Null => "null",
            Resolved::Bool(_) => "a boolean",
            Resolved::Int(_) => "an integer",
            Resolved::Float(_) => "a number",
            Resolved::Str => "a string",
            Resolved::Timestamp => "a timestamp",
        }
    }
}

/// The tags of YAML's core types, as the parser reports them after expanding `!!`.
pub const TAG_STR: &str = "tag:yaml.org,2002:str";
/// `!!int`.
pub const TAG_INT: &str = "tag:yaml.org,2002:int";
/// `!!float`.
pub const TAG_FLOAT: &str = "tag:yaml.org,2002:float";
/// `!!bool`.
pub const TAG_BOOL: &str = "tag:yaml.org,2002:bool";
/// `!!null`.
pub const TAG_NULL: &str = "tag:yaml.org,2002:null";
/// `!!map`.
pub const TAG_MAP: &str = "tag:yaml.org,2002:map";
/// `!!seq`.
pub const TAG_SEQ: &str = "tag:yaml.org,2002:seq";
/// `!!merge` (what a plain `<<` key resolves to).
pub const TAG_MERGE: &str = "tag:yaml.org,2002:merge";

/// Resolves a plain (unquoted, untagged) scalar. `None` for the two plain scalars
/// PyYAML resolves to tags that have no value of their own: `<<` (a merge, only
/// meaningful as a mapping key) and `=`.
pub fn resolve_plain(text: &str) -> Option<Resolved> {
    if text == "<<" || text == "=" {
        return None;
    }
    Some(if is_null(text) {
        Resolved::Null
    } else if let Some(b) = plain_bool(text) {
        Resolved::Bool(b)
    } else if is_float(text) {
        Resolved::Float(construct_float(text).unwrap_or(f64::NAN))
    } else if is_int(text) {
        match construct_int(text) {
            Some(v) => Resolved::Int(v),
            // Matches the pattern but has no digits (`0b_`): PyYAML fails there too;
            // callers see a string that no typed field accepts.
            None => Resolved::Str,
        }
    } else if is_timestamp(text) {
        Resolved::Timestamp
    } else {
        Resolved::Str
    })
}

/// Resolves a scalar with an explicit core tag, as PyYAML's constructors do
/// (`!!bool` is case-insensitive there, `!!null` ignores the text).
pub fn resolve_tagged(tag: &str, text: &str) -> Result<Resolved, String> {
    match tag {
        TAG_STR => Ok(Resolved::Str),
        TAG_NULL => Ok(Resolved::Null),
        TAG_BOOL => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Ok(Resolved::Bool(true)),
            "no" | "false" | "off" => Ok(Resolved::Bool(false)),
            _ => Err(format!("{text:?} is not a boolean (yes/no, true/false, on/off)")),
        },
        TAG_INT => construct_int(text).map(Resolved::Int).ok_or_else(|| format!("{text:?} is not an integer")),
        TAG_FLOAT => construct_float(text).map(Resolved::Float).ok_or_else(|| format!("{text:?} is not a number")),
        TAG_MAP | TAG_SEQ => Err(format!("the tag {} is for a collection, not a scalar", short_tag(tag))),
        other => Err(format!(
            "the tag {} is not supported (PyYAML's safe loader has no constructor for it here)",
            short_tag(other)
        )),
    }
}

/// `tag:yaml.org,2002:int` as `!!int`, for messages.
pub fn short_tag(tag: &str) -> String {
    match tag.strip_prefix("tag:yaml.org,2002:") {
        Some(rest) => format!("!!{rest}"),
        None => tag.to_string(),
    }
}

fn is_null(t: &str) -> bool {
    matches!(t, "" | "~" | "null" | "Null" | "NULL")
}

fn plain_bool(t: &str) -> Option<bool> {
    match t {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// A small cursor for the hand-written versions of PyYAML's resolver patterns.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Self { b: s.as_bytes(), i: 0 }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn eat(&mut self, f: impl Fn(u8) -> bool) -> bool {
        if self.i < self.b.len() && f(self.b[self.i]) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.eat(&f) {}
        self.i - start
    }
    fn sign(&mut self) {
        self.eat(|c| c == b'+' || c == b'-');
    }
    fn lit(&mut self, s: &str) -> bool {
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }
}

fn digit_(c: u8) -> bool {
    c.is_ascii_digit() || c == b'_'
}

/// One or more `:[0-5]?[0-9]` groups.
fn base60_tail(c: &mut Cur) -> bool {
    let mut groups = 0;
    while c.eat(|x| x == b':') {
        let first = c.eat_while(|x| x.is_ascii_digit());
        let ok = match first {
            1 => true,
            2 => c.b[c.i - 2] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    groups > 0
}

/// `[eE][-+][0-9]+` (PyYAML needs the sign).
fn exponent(c: &mut Cur) -> bool {
    if !c.eat(|x| x == b'e' || x == b'E') {
        return true;
    }
    c.eat(|x| x == b'+' || x == b'-') && c.eat_while(|x| x.is_ascii_digit()) > 0
}

fn is_float(t: &str) -> bool {
    let alt = |f: &dyn Fn(&mut Cur) -> bool| {
        let mut c = Cur::new(t);
        f(&mut c) && c.done()
    };
    // [-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?
    alt(&|c| {
        c.sign();
        c.eat(|x| x.is_ascii_digit()) && {
            c.eat_while(digit_);
            c.eat(|x| x == b'.')
        } && {
            c.eat_while(digit_);
            exponent(c)
        }
    })
    // \.[0-9][0-9_]*([eE][-+][0-9]+)?
    || alt(&|c| c.eat(|x| x == b'.') && c.eat(|x| x.is_ascii_digit()) && { c.eat_while(digit_); exponent(c) })
    // [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
    || alt(&|c| {
        c.sign();
        c.eat(|x| x.is_ascii_digit()) && {
            c.eat_while(digit_);
            base60_tail(c)
        } && c.eat(|x| x == b'.') && {
            c.eat_while(digit_);
            true
        }
    })
    // [-+]?\.(inf|Inf|INF)
    || alt(&|c| { c.sign(); c.lit(".inf") || c.lit(".Inf") || c.lit(".INF") })
    // \.(nan|NaN|NAN)
    || alt(&|c| c.lit(".nan") || c.lit(".NaN") || c.lit(".NAN"))
}

fn is_int(t: &str) -> bool {
    let alt = |f: &dyn Fn(&mut Cur) -> bool| {
        let mut c = Cur::new(t);
        f(&mut c) && c.done()
    };
    alt(&|c| {
        c.sign();
        c.lit("0b") && c.eat_while(|x| matches!(x, b'0' | b'1' | b'_')) > 0
    }) || alt(&|c| {
        c.sign();
        c.eat(|x| x == b'0') && c.eat_while(|x| matches!(x, b'0'..=b'7' | b'_')) > 0
    }) || alt(&|c| {
        c.sign();
        c.eat(|x| x == b'0')
            || (c.eat(|x| matches!(x, b'1'..=b'9')) && {
                c.eat_while(digit_);
                true
            })
    }) || alt(&|c| {
        c.sign();
        c.lit("0x") && c.eat_while(|x| x.is_ascii_hexdigit() || x == b'_') > 0
    }) || alt(&|c| {
        c.sign();
        c.eat(|x| matches!(x, b'1'..=b'9')) && {
            c.eat_while(digit_);
            base60_tail(c)
        }
    })
}

fn split_sign(t: &str) -> (i128, String) {
    let v = t.replace('_', "");
    match v.as_bytes().first() {
        Some(b'-') => (-1, v[1..].to_string()),
        Some(b'+') => (1, v[1..].to_string()),
        _ => (1, v),
    }
}

/// PyYAML's `construct_yaml_int`.
fn construct_int(t: &str) -> Option<i128> {
    let (sign, v) = split_sign(t);
    let parse = |s: &str, radix: u32| -> Option<i128> {
        if s.is_empty() {
            return None;
        }
        match i128::from_str_radix(s, radix) {
            Ok(x) => Some(x),
            Err(e) if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) => Some(i128::MAX),
            Err(_) => None,
        }
    };
    let magnitude = if v == "0" {
        Some(0)
    } else if let Some(b) = v.strip_prefix("0b") {
        parse(b, 2)
    } else if let Some(h) = v.strip_prefix("0x") {
        parse(h, 16)
    } else if v.starts_with('0') {
        parse(&v, 8)
    } else if v.contains(':') {
        let mut total: i128 = 0;
        for part in v.split(':') {
            total = total.saturating_mul(60).saturating_add(parse(part, 10)?);
        }
        Some(total)
    } else {
        parse(&v, 10)
    }?;
    Some(sign.saturating_mul(magnitude))
}

/// PyYAML's `construct_yaml_float`.
fn construct_float(t: &str) -> Option<f64> {
    let (sign, v) = split_sign(&t.to_ascii_lowercase());
    let sign = sign as f64;
    let magnitude = if v == ".inf" {
        f64::INFINITY
    } else if v == ".nan" {
        f64::NAN
    } else if v.contains(':') {
        let mut total = 0.0;
        for part in v.split(':') {
            total = total * 60.0 + part.trim().parse::<f64>().ok()?;
        }
        total
    } else {
        v.trim().parse::<f64>().ok()?
    };
    Some(sign * magnitude)
}

fn is_timestamp(t: &str) -> bool {
    let mut c = Cur::new(t);
    let n = |c: &mut Cur, k: usize| (0..k).all(|_| c.eat(|x| x.is_ascii_digit()));
    // YYYY-MM-DD alone.
    if n(&mut c, 4) && c.eat(|x| x == b'-') && n(&mut c, 2) && c.eat(|x| x == b'-') && n(&mut c, 2) && c.done() {
        return true;
    }
    // YYYY-M-D(T| +)H:MM:SS(.frac)?( *(Z|+-H(:MM)?))?
    let mut c = Cur::new(t);
    let one_or_two = |c: &mut Cur| {
        c.eat(|x| x.is_ascii_digit()) && {
            c.eat(|x| x.is_ascii_digit());
            true
        }
    };
    let ok = n(&mut c, 4)
        && c.eat(|x| x == b'-')
        && one_or_two(&mut c)
        && c.eat(|x| x == b'-')
        && one_or_two(&mut c)
        && (c.eat(|x| x == b'T' || x == b't') || c.eat_while(|x| x == b' ' || x == b'\t') > 0)
        && one_or_two(&mut c)
        && c.eat(|x| x == b':')
        && n(&mut c, 2)
        && c.eat(|x| x == b':')
        && n(&mut c, 2);
    if !ok {
        return false;
    }
    if c.eat(|x| x == b'.') {
        c.eat_while(|x| x.is_ascii_digit());
    }
    if c.done() {
        return true;
    }
    c.eat_while(|x| x == b' ' || x == b'\t');
    if c.eat(|x| x == b'Z') {
        return c.done();
    }
    c.eat(|x| x == b'+' || x == b'-')
        && one_or_two(&mut c)
        && (c.done() || (c.eat(|x| x == b':') && n(&mut c, 2) && c.done()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Resolved::*;

    fn r(t: &str) -> Resolved {
        resolve_plain(t).expect("has a value")
    }

    #[test]
    fn nulls_and_booleans_follow_yaml_1_1() {
        for t in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(r(t), Null, "{t:?}");
        }
        for t in ["yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"] {
            assert_eq!(r(t), Bool(true), "{t:?}");
        }
        for t in ["no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"] {
            assert_eq!(r(t), Bool(false), "{t:?}");
        }
        for t in ["nuLL", "yES", "oN", "y", "n", "nil"] {
            assert_eq!(r(t), Str, "{t:?}");
        }
    }

    #[test]
    fn integers_in_every_base_pyyaml_knows() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("-0", 0),
            ("+7", 7),
            ("1_000", 1000),
            ("017", 15),
            ("0_7", 7),
            ("0x1F", 31),
            ("-0x1f", -31),
            ("0b101", 5),
            ("190:20:30", 685230),
            ("99999999999999999999999999999999999999999", i128::MAX),
        ];
        for (t, v) in cases {
            assert_eq!(r(t), Int(*v), "{t:?}");
        }
        // Not integers in YAML 1.1: 8 and 9 are not octal digits, 0o is YAML 1.2.
        for t in ["08", "09", "0o17", "_1", "0x", "1:60", "12abc"] {
            assert!(!matches!(r(t), Int(_)), "{t:?} -> {:?}", r(t));
        }
        assert_eq!(r("1_"), Int(1), "a trailing _ is allowed, as in PyYAML");
    }

    #[test]
    fn floats_need_a_dot_and_a_signed_exponent() {
        let cases: &[(&str, f64)] = &[
            ("1.5", 1.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("1.5e+3", 1500.0),
            ("-2.5E-1", -0.25),
            ("1_0.5", 10.5),
            ("1:30.5", 90.5),
        ];
        for (t, v) in cases {
            assert_eq!(r(t), Float(*v), "{t:?}");
        }
        assert_eq!(r(".inf"), Float(f64::INFINITY));
        assert_eq!(r("-.Inf"), Float(f64::NEG_INFINITY));
        assert!(matches!(r(".NaN"), Float(f) if f.is_nan()));
        for t in ["1e3", "1.5e3", "1.5e", ".", "-.nan", "inf", "infinity"] {
            assert_eq!(r(t), Str, "{t:?}");
        }
    }

    #[test]
    fn timestamps_merge_and_value_keys() {
        assert_eq!(r("2001-12-14"), Timestamp);
        assert_eq!(r("2001-12-14t21:59:43.10-05:00"), Timestamp);
        assert_eq!(r("2001-12-14 21:59:43.10 -5"), Timestamp);
        assert_eq!(r("2001-12-14 21:59:43.10 Z"), Timestamp);
        assert_eq!(r("2001-12-1"), Str);
        assert_eq!(resolve_plain("<<"), None);
        assert_eq!(resolve_plain("="), None);
        assert_eq!(r("127.0.0.1"), Str);
        assert_eq!(r("us-west-2a,us-west-2b"), Str);
    }

    #[test]
    fn explicit_tags_construct_like_pyyaml() {
        assert_eq!(resolve_tagged(TAG_INT, "0x10"), Ok(Int(16)));
        assert_eq!(resolve_tagged(TAG_BOOL, "YeS"), Ok(Bool(true)));
        assert_eq!(resolve_tagged(TAG_FLOAT, "1"), Ok(Float(1.0)));
        assert_eq!(resolve_tagged(TAG_FLOAT, "1e3"), Ok(Float(1000.0)));
        assert_eq!(resolve_tagged(TAG_NULL, "anything"), Ok(Null));
        assert_eq!(resolve_tagged(TAG_STR, "5"), Ok(Str));
        assert!(resolve_tagged(TAG_INT, "five").is_err());
        assert!(resolve_tagged(TAG_INT, "").is_err());
        assert!(resolve_tagged("!custom", "x").unwrap_err().contains("!custom"));
        assert!(resolve_tagged("tag:yaml.org,2002:binary", "aGk=").unwrap_err().contains("!!binary"));
    }
}
