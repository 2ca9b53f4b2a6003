//! Parsers of flag values, shared by `ray start`, `ray stop` and the daemons'
//! command lines. Each returns a message that says what was expected; clap puts
//! the flag's name in front of it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::PathBuf;

/// A non-negative, finite number.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("expected a non-negative number, got {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("expected a non-negative number, got {s:?}"));
    }
    Ok(v)
}

/// A byte count: a non-negative integer.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("expected a non-negative whole number of bytes, got {s:?}"))
}

/// A boolean as click reads one: true/false, t/f, yes/no, y/n, on/off, 1/0, in
/// any case (an empty value is false).
pub fn parse_click_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" | "" => Ok(false),
        _ => Err(format!("expected a boolean (true/false, yes/no, on/off, 1/0), got {s:?}")),
    }
}

/// A TCP port, 0 to 65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    s.trim().parse::<u16>().map_err(|_| format!("expected a port number from 0 to 65535, got {s:?}"))
}

/// A path; a leading `~` is this user's home folder (Ray's cluster YAMLs pass
/// `--autoscaling-config=~/ray_bootstrap_config.yaml`, which no shell expands).
pub fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("expected a path, got an empty value".into());
    }
    Ok(expand_tilde(s))
}

/// `~` and `~/...` resolved against `$HOME`; anything else unchanged.
pub fn expand_tilde(s: &str) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (s, home) {
        ("~", Some(h)) => PathBuf::from(h),
        (_, Some(h)) if s.starts_with("~/") => PathBuf::from(h).join(&s[2..]),
        _ => PathBuf::from(s),
    }
}

/// `--node-ip-address`: an IP address, `localhost`, or a host name this machine
/// resolves (its first IPv4 address, else its first address).
pub fn parse_node_ip(s: &str) -> Result<IpAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip);
    }
    if t.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bad = || format!("expected an IP address (or a host name that resolves to one), got {s:?}");
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(bad());
    }
    let addrs: Vec<IpAddr> = (t, 0).to_socket_addrs().map_err(|_| bad())?.map(|a| a.ip()).collect();
    addrs.iter().find(|ip| ip.is_ipv4()).or(addrs.first()).copied().ok_or_else(bad)
}

/// A list of ports (one flag value; clap would read a bare `Vec` as a repeated flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

/// `--worker-port-list`: comma-separated ports, each from 1024 to 65535.
pub fn parse_port_list(s: &str) -> Result<PortList, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p: u32 = part
            .trim()
            .parse()
            .map_err(|_| format!("expected comma-separated port numbers such as 10002,10003, got {part:?} in {s:?}"))?;
        if !(1024..=65535).contains(&p) {
            return Err(format!("ports must be from 1024 to 65535, got {p}"));
        }
        out.push(p as u16);
    }
    Ok(PortList(out))
}

/// `--system-config`: a JSON object.
pub fn parse_json_object(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object such as '{{\"name\": 1}}', got {other}")),
        Err(e) => Err(format!("expected a JSON object such as '{{\"name\": 1}}': {e}")),
    }
}

/// `--resources`: a JSON object of non-negative numbers, without CPU/GPU/memory
/// (those have flags of their own).
pub fn parse_resources_flag(s: &str) -> Result<BTreeMap<String, f64>, String> {
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| format!("expected a JSON object such as '{{\"A\": 1}}': {e}"))?;
    let obj = v.as_object().ok_or_else(|| format!("expected a JSON object such as '{{\"A\": 1}}', got {v}"))?;
    let mut out = BTreeMap::new();
    for (k, q) in obj {
        if k.is_empty() {
            return Err("resource names must not be empty".into());
        }
        match k.as_str() {
            "CPU" => return Err("use --num-cpus instead of \"CPU\" in --resources".into()),
            "GPU" => return Err("use --num-gpus instead of \"GPU\" in --resources".into()),
            "memory" => return Err("use --memory instead of \"memory\" in --resources".into()),
            "object_store_memory" => {
                return Err("use --object-store-memory instead of \"object_store_memory\" in --resources".into());
            }
            _ => {}
        }
        let n = q.as_f64().ok_or_else(|| format!("quantity of {k:?} must be a number, got {q}"))?;
        if !n.is_finite() || n < 0.0 {
            return Err(format!("quantity of {k:?} must be a non-negative number, got {q}"));
        }
        out.insert(k.clone(), n);
    }
    Ok(out)
}

/// `--labels`: "k=v,k2=v2" (optionally in double quotes) or a JSON object of strings.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut t = s.trim();
    if t.len() > 1 && t.starts_with('"') && t.ends_with('"') {
        t = &t[1..t.len() - 1];
    }
    if t.starts_with('{') {
        let v: BTreeMap<String, String> =
            serde_json::from_str(t).map_err(|e| format!("expected a JSON object of strings: {e}"))?;
        return Ok(v);
    }
    let mut out = BTreeMap::new();
    for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("expected key=value pairs separated by commas, got {part:?}"))?;
        let k = k.trim();
        check_label_key(k).map_err(|e| format!("{e} in {part:?}"))?;
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn check_label_key(k: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("empty label key".into());
    }
    if k.starts_with("ray.io/") {
        return Err(format!("label key {k:?} uses the reserved prefix \"ray.io/\""));
    }
    Ok(())
}

/// `--labels-file`: a YAML file holding one flat mapping of label keys to string
/// values (`key: value` lines; `#` comments; values may be quoted).
pub fn read_labels_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_labels_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The flat-mapping YAML of a labels file.
pub fn parse_labels_yaml(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_yaml_comment(raw).trim_end();
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        let n = i + 1;
        if line.starts_with(char::is_whitespace) || line.trim_start().starts_with('-') {
            return Err(format!("line {n}: expected `key: value` at the top level (a flat mapping of labels), got {raw:?}"));
        }
        let (k, v) = split_yaml_pair(line).ok_or_else(|| format!("line {n}: expected `key: value`, got {raw:?}"))?;
        let key = unquote(k.trim()).map_err(|e| format!("line {n}: {e}"))?;
        let v = v.trim();
        if v.is_empty() || v.starts_with(['{', '[', '|', '>', '&', '*']) {
            return Err(format!("line {n}: the value of {key:?} must be a string, got {v:?}"));
        }
        let quoted = v.starts_with(['"', '\'']);
        let value = unquote(v).map_err(|e| format!("line {n}: {e}"))?;
        if !quoted && !is_plain_yaml_string(&value) {
            return Err(format!("line {n}: the value of {key:?} must be a string, got {v} (quote it to make it one)"));
        }
        check_label_key(&key).map_err(|e| format!("line {n}: {e}"))?;
        out.insert(key, value);
    }
    Ok(out)
}

fn strip_yaml_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn split_yaml_pair(line: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ':') if bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()) => {
                return Some((&line[..i], &line[i + 1..]));
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if s.starts_with(q) {
            return if s.len() > 1 && s.ends_with(q) {
                Ok(s[1..s.len() - 1].to_string())
            } else {
                Err(format!("unterminated quote in {s:?}"))
            };
        }
    }
    Ok(s.to_string())
}

/// Whether an unquoted YAML scalar reads as a string (not null, a boolean or a number).
fn is_plain_yaml_string(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let special = ["~", "null", "true", "false", "yes", "no", "on", "off", ".inf", "-.inf", ".nan"];
    !special.contains(&lower.as_str()) && v.parse::<f64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_flag_accepts_objects_and_names_faults() {
        assert_eq!(parse_resources_flag(r#"{"A": 1, "B": 0.5}"#).unwrap().len(), 2);
        assert!(parse_resources_flag("{}").unwrap().is_empty());
        assert!(parse_resources_flag("{bad").unwrap_err().contains("JSON object"));
        assert!(parse_resources_flag("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_resources_flag(r#"{"A": -1}"#).unwrap_err().contains("non-negative"));
        assert!(parse_resources_flag(r#"{"A": "x"}"#).unwrap_err().contains("must be a number"));
        assert!(parse_resources_flag(r#"{"CPU": 1}"#).unwrap_err().contains("--num-cpus"));
    }

    #[test]
    fn quantities_and_labels() {
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("two").is_err());
        assert!(parse_bytes("1.5").is_err());
        let l = parse_labels("zone=a, tier = gold").unwrap();
        assert_eq!(l["tier"], "gold");
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("ray.io/x=1").is_err());
        assert_eq!(parse_labels(r#"{"a":"b"}"#).unwrap()["a"], "b");
        assert_eq!(parse_labels(r#""a=b""#).unwrap()["a"], "b");
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn booleans_read_as_click_reads_them() {
        for t in ["true", "True", "1", "yes", "Y", "on", " t "] {
            assert!(parse_click_bool(t).unwrap(), "{t}");
        }
        for f in ["false", "FALSE", "0", "no", "n", "off", "f", ""] {
            assert!(!parse_click_bool(f).unwrap(), "{f}");
        }
        assert!(parse_click_bool("maybe").unwrap_err().contains("boolean"));
    }

    #[test]
    fn ports_paths_addresses() {
        assert_eq!(parse_port("8076").unwrap(), 8076);
        assert!(parse_port("70000").unwrap_err().contains("0 to 65535"));
        assert!(parse_port("x").is_err());
        assert_eq!(parse_port_list("10002, 10003").unwrap(), PortList(vec![10002, 10003]));
        assert!(parse_port_list("80").unwrap_err().contains("1024"));
        assert!(parse_port_list("10002,a").is_err());
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(parse_path("~/x.yaml").unwrap(), PathBuf::from(home).join("x.yaml"));
        }
        assert_eq!(parse_path("/a/~b").unwrap(), PathBuf::from("/a/~b"));
        assert!(parse_path("").is_err());
        assert_eq!(parse_node_ip("10.0.0.1").unwrap().to_string(), "10.0.0.1");
        assert_eq!(parse_node_ip("localhost").unwrap().to_string(), "127.0.0.1");
        assert_eq!(parse_node_ip("[::1]").unwrap().to_string(), "::1");
        assert!(parse_node_ip("not an ip").is_err());
        assert!(parse_json_object("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_json_object("{").is_err());
        assert_eq!(parse_json_object(r#"{"a": 1}"#).unwrap()["a"], 1);
    }

    #[test]
    fn labels_files_are_flat_mappings_of_strings() {
        let l = parse_labels_yaml("# labels\ngpu_type: A100\nregion: 'us-west' # where\n\"k.x/y\": \"1\"\n").unwrap();
        assert_eq!(l["gpu_type"], "A100");
        assert_eq!(l["region"], "us-west");
        assert_eq!(l["k.x/y"], "1");
        assert!(parse_labels_yaml("a:\n  b: c\n").unwrap_err().contains("line 1"));
        assert!(parse_labels_yaml("a: 1\n").unwrap_err().contains("must be a string"));
        assert!(parse_labels_yaml("a: true\n").unwrap_err().contains("must be a string"));
        assert!(parse_labels_yaml("- a\n").unwrap_err().contains("flat mapping"));
        assert!(parse_labels_yaml("ray.io/x: y\n").unwrap_err().contains("reserved"));
        assert!(parse_labels_yaml("").unwrap().is_empty());
    }
}
