//! Prometheus metrics as text (the exposition format 0.0.4 that `/metrics`
//! answers with): an encoder the daemons write their figures through, a
//! cumulative histogram, and a parser for tests and tools that read the text
//! back.
//!
//! Every daemon builds its answer fresh at each scrape from its own state, so
//! there is no registry: a family is written with its `# HELP` and `# TYPE`
//! lines, then its samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only goes up (its name ends in `_total`).
    Counter,
    /// Observations in cumulative buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// A `/metrics` answer being written. Labels given to [`Exposition::new`] are
/// added to every sample (Ray puts `SessionName` on all of its metrics).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    common: Vec<(String, String)>,
}

impl Exposition {
    /// An empty answer whose samples all carry `common` labels.
    pub fn new(common: &[(&str, &str)]) -> Self {
        Self {
            out: String::new(),
            common: common
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts a family: writes its help and type, then take its samples.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        Family {
            exp: self,
            name: name.to_string(),
        }
    }

    /// A gauge family with one sample per entry.
    pub fn gauge<'a, L>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        let mut f = self.family(name, Kind::Gauge, help);
        for (labels, v) in samples {
            f.sample(labels.as_ref(), v);
        }
    }

    /// A counter family (`name` ends in `_total`) with one sample per entry.
    pub fn counter<'a, L>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        let mut f = self.family(name, Kind::Counter, help);
        for (labels, v) in samples {
            f.sample(labels.as_ref(), v);
        }
    }

    /// A histogram family with one series.
    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut f = self.family(name, Kind::Histogram, help);
        f.histogram(labels, h);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }

    fn line(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.out.push_str(name);
        let all = self
            .common
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(labels.iter().copied())
            .chain(extra);
        let mut first = true;
        for (k, v) in all {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }
}

/// The samples of one family.
pub struct Family<'a> {
    exp: &'a mut Exposition,
    name: String,
}

impl Family<'_> {
    /// One sample of a gauge or counter.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let name = std::mem::take(&mut self.name);
        self.exp.line(&name, labels, None, value);
        self.name = name;
        self
    }

    /// One series of a histogram: its buckets, sum and count.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let bucket = format!("{}_bucket", self.name);
        let mut cumulative = 0u64;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            self.exp.line(
                &bucket,
                labels,
                Some(("le", &format_value(*bound))),
                cumulative as f64,
            );
        }
        self.exp
            .line(&bucket, labels, Some(("le", "+Inf")), h.count as f64);
        self.exp
            .line(&format!("{}_sum", self.name), labels, None, h.sum);
        self.exp.line(
            &format!("{}_count", self.name),
            labels,
            None,
            h.count as f64,
        );
        self
    }
}

/// Observations counted into buckets with upper bounds, as Prometheus
/// histograms are.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (sorted here).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = vec![0; bounds.len() + 1];
        Self {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One sample read back from the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`_bucket`, `_sum`, `_total` included).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The label's value, or "" when absent.
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// A line of the text that is not a valid sample.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {why}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: &'static str,
    /// The line.
    pub text: String,
}

/// Reads every sample of a `/metrics` answer (comments skipped; timestamps,
/// which these daemons never write, refused).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why| ParseError {
            line: i + 1,
            why,
            text: raw.to_string(),
        };
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(body).ok_or_else(|| err("bad labels"))?;
            labels = parsed;
            rest = after;
        }
        let value = rest.trim();
        if value.contains(' ') {
            return Err(err("unexpected text after the value"));
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| err("bad value"))?,
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Labels up to the closing brace; returns them and what follows.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_write_help_type_and_labelled_samples_that_parse_back() {
        let mut e = Exposition::new(&[("SessionName", "session_x")]);
        e.gauge(
            "ray_resources",
            "Logical resources.\nBy state.",
            [([("Name", "CPU"), ("State", "USED")], 1.5)],
        );
        e.counter(
            "autoscaler_started_nodes_total",
            "Nodes started.",
            [([], 3.0)],
        );
        e.gauge("odd", "quotes", [([("v", "a\"b\\c\nd")], f64::NAN)]);
        let text = e.finish();
        assert!(
            text.contains(
                "# HELP ray_resources Logical resources.\\nBy state.\n# TYPE ray_resources gauge\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ray_resources{SessionName=\"session_x\",Name=\"CPU\",State=\"USED\"} 1.5\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE autoscaler_started_nodes_total counter\nautoscaler_started_nodes_total{SessionName=\"session_x\"} 3\n"));
        let samples = parse(&text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].label("State"), "USED");
        assert_eq!(samples[2].label("v"), "a\"b\\c\nd");
        assert!(samples[2].value.is_nan());
    }

    #[test]
    fn histograms_are_cumulative_with_an_infinite_bucket_sum_and_count() {
        let mut h = Histogram::new(&[1.0, 0.1, 10.0]);
        for v in [0.05, 0.5, 0.7, 50.0] {
            h.observe(v);
        }
        let mut e = Exposition::new(&[]);
        e.histogram("autoscaler_update_time_seconds", "Round time.", &[], &h);
        let samples = parse(&e.finish()).unwrap();
        let buckets: Vec<(String, f64)> = samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .map(|s| (s.label("le").to_string(), s.value))
            .collect();
        assert_eq!(
            buckets,
            vec![
                ("0.1".into(), 1.0),
                ("1".into(), 3.0),
                ("10".into(), 3.0),
                ("+Inf".into(), 4.0)
            ]
        );
        let get = |n: &str| samples.iter().find(|s| s.name == n).map(|s| s.value);
        assert_eq!(get("autoscaler_update_time_seconds_count"), Some(4.0));
        assert_eq!(get("autoscaler_update_time_seconds_sum"), Some(51.25));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        assert_eq!(parse("a 1\nb{x=\"1\" 2\n").unwrap_err().line, 2);
        assert!(parse("a one").is_err());
        assert!(parse("a 1 1700000000").is_err());
        assert!(parse("# only a comment\n\n").unwrap().is_empty());
    }
}
