//! Ray's state CLI: `ray list actors|nodes|jobs|tasks|placement-groups` and `ray
//! summary actors|tasks`, read from the GCS, as a table (Ray's layout), JSON or YAML.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{Security, explain_status};
use ray_common::session;
use ray_proto::rpc::{
    GetAllActorInfoRequest, GetAllJobInfoRequest, GetAllNodeInfoRequest, GetAllPlacementGroupRequest, GetTaskEventsRequest, NodeState,
};
use serde_json::{Map, Value, json};

use crate::args::{ListArgs, StateFormat, StateResource, SummaryArgs, SummaryResource};

/// One row: field name -> value, in column order.
type Row = Map<String, Value>;

fn connect(address: &str, temp_dir: Option<&std::path::Path>) -> Result<(tokio::runtime::Runtime, GcsClient, String)> {
    let root = session::temp_root(temp_dir);
    let addr = crate::address::resolve_gcs_address(Some(address), &root)?;
    let security = Security::from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let gcs = rt
        .block_on(GcsClient::connect(&addr, &security, Duration::from_secs(5)))
        .with_context(|| format!("cannot reach the cluster at {addr}"))?
        .0;
    Ok((rt, gcs, addr))
}

fn actors(rt: &tokio::runtime::Runtime, gcs: &GcsClient, addr: &str) -> Result<Vec<Row>> {
    let reply = rt
        .block_on(gcs.actors.clone().get_all_actor_info(GetAllActorInfoRequest::default()))
        .map_err(|s| anyhow!(explain_status(addr, &s)))?
        .into_inner();
    Ok(reply
        .actors
        .into_iter()
        .map(|a| {
            let mut r = Row::new();
            r.insert("actor_id".into(), json!(a.actor_id));
            r.insert("class_name".into(), json!(a.class_name));
            r.insert("state".into(), json!(a.state));
            r.insert("job_id".into(), json!(a.job_id));
            r.insert("name".into(), json!(a.name));
            r.insert("node_id".into(), json!(a.node_id));
            r.insert("pid".into(), json!(a.pid));
            r.insert("ray_namespace".into(), json!(a.namespace));
            r.insert("serialized_runtime_env".into(), json!("{}"));
            r.insert("required_resources".into(), json!(a.required_resources));
            r.insert("death_cause".into(), json!(a.death_cause));
            r.insert("is_detached".into(), json!(a.detached));
            r.insert("placement_group_id".into(), json!(a.placement_group_id));
            r.insert("repr_name".into(), json!(""));
            r.insert("num_restarts".into(), json!(a.num_restarts.to_string()));
            r.insert("start_time".into(), json!(a.start_time_ms));
            r.insert("end_time".into(), json!(a.end_time_ms));
            r
        })
        .collect())
}

fn nodes(rt: &tokio::runtime::Runtime, gcs: &GcsClient, addr: &str) -> Result<Vec<Row>> {
    let reply = rt
        .block_on(gcs.nodes.clone().get_all_node_info(GetAllNodeInfoRequest::default()))
        .map_err(|s| anyhow!(explain_status(addr, &s)))?
        .into_inner();
    Ok(reply
        .nodes
        .into_iter()
        .map(|n| {
            let alive = n.state == NodeState::Alive as i32 || n.state == NodeState::Draining as i32;
            let mut r = Row::new();
            r.insert("node_id".into(), json!(n.node_id));
            r.insert("node_ip".into(), json!(n.node_manager_address));
            r.insert("is_head_node".into(), json!(n.is_head_node));
            r.insert("state".into(), json!(if alive { "ALIVE" } else { "DEAD" }));
            r.insert("state_message".into(), json!(n.death_info.map(|d| d.reason_message)));
            r.insert("node_name".into(), json!(n.node_name));
            r.insert("resources_total".into(), json!(n.resources_total));
            r.insert("labels".into(), json!(n.labels));
            r.insert("start_time_ms".into(), json!(n.start_time_ms));
            r.insert("end_time_ms".into(), json!(n.end_time_ms));
            r
        })
        .collect())
}

fn tasks(rt: &tokio::runtime::Runtime, gcs: &GcsClient, addr: &str) -> Result<Vec<Row>> {
    let reply = rt
        .block_on(gcs.tasks.clone().get_task_events(GetTaskEventsRequest::default()))
        .map_err(|s| anyhow!(explain_status(addr, &s)))?
        .into_inner();
    Ok(reply
        .events
        .into_iter()
        .map(|t| {
            let mut r = Row::new();
            r.insert("task_id".into(), json!(t.task_id));
            r.insert("attempt_number".into(), json!(t.attempt));
            r.insert("name".into(), json!(t.name));
            r.insert("state".into(), json!(t.state));
            r.insert("job_id".into(), json!(t.job_id));
            r.insert("actor_id".into(), json!(t.actor_id));
            r.insert("type".into(), json!(t.r#type));
            r.insert("func_or_class_name".into(), json!(t.name));
            r.insert("error_type".into(), json!(t.error_type));
            r.insert("time_ms".into(), json!(t.time_ms));
            r
        })
        .collect())
}

fn jobs(rt: &tokio::runtime::Runtime, gcs: &GcsClient, addr: &str) -> Result<Vec<Row>> {
    let reply =
        rt.block_on(gcs.jobs.clone().get_all_job_info(GetAllJobInfoRequest {})).map_err(|s| anyhow!(explain_status(addr, &s)))?.into_inner();
    Ok(reply
        .jobs
        .into_iter()
        .map(|j| {
            let mut r = Row::new();
            r.insert("job_id".into(), json!(j.job_id));
            r.insert("status".into(), json!(if j.is_dead { "SUCCEEDED" } else { "RUNNING" }));
            r.insert("entrypoint".into(), json!(j.entrypoint));
            r.insert("type".into(), json!("DRIVER"));
            r.insert("driver_pid".into(), json!(j.driver_pid));
            r.insert("driver_node_id".into(), json!(j.driver_node_id));
            r.insert("start_time".into(), json!(j.start_time_ms));
            r.insert("end_time".into(), json!(j.end_time_ms));
            r
        })
        .collect())
}

fn groups(rt: &tokio::runtime::Runtime, gcs: &GcsClient, addr: &str) -> Result<Vec<Row>> {
    let reply = rt
        .block_on(gcs.placement_groups.clone().get_all_placement_group(GetAllPlacementGroupRequest {}))
        .map_err(|s| anyhow!(explain_status(addr, &s)))?
        .into_inner();
    Ok(reply
        .groups
        .into_iter()
        .map(|g| {
            let mut r = Row::new();
            r.insert("placement_group_id".into(), json!(g.placement_group_id));
            r.insert("name".into(), json!(g.name));
            r.insert("creator_job_id".into(), json!(g.creator_job_id));
            r.insert("state".into(), json!(g.state));
            r.insert("strategy".into(), json!(g.strategy));
            r.insert("is_detached".into(), json!(g.detached));
            r.insert("bundles".into(), json!(g.bundles.iter().map(|b| b.amounts.clone()).collect::<Vec<_>>()));
            r
        })
        .collect())
}

/// The columns `ray list` shows without `--detail` (Ray's).
fn main_columns(r: StateResource) -> &'static [&'static str] {
    match r {
        StateResource::Actors => &["actor_id", "class_name", "state", "job_id", "name", "node_id", "pid", "ray_namespace"],
        StateResource::Nodes => &["node_id", "node_ip", "is_head_node", "state", "state_message", "node_name", "resources_total", "labels"],
        StateResource::Jobs => &["job_id", "status", "entrypoint", "type", "driver_pid"],
        StateResource::Tasks => &["task_id", "attempt_number", "name", "state", "job_id", "actor_id", "type", "func_or_class_name", "error_type"],
        StateResource::PlacementGroups => &["placement_group_id", "name", "creator_job_id", "state"],
    }
}

/// A `key=value` or `key!=value` condition.
fn parse_filter(f: &str) -> Result<(String, bool, String)> {
    if let Some((k, v)) = f.split_once("!=") {
        return Ok((k.trim().to_string(), false, v.trim().to_string()));
    }
    if let Some((k, v)) = f.split_once('=') {
        return Ok((k.trim().to_string(), true, v.trim().to_string()));
    }
    bail!("invalid --filter {f:?}: expected KEY=VALUE or KEY!=VALUE")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `ray list`.
pub fn list(a: ListArgs) -> Result<()> {
    let filters = a.filter.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>>>()?;
    let (rt, gcs, addr) = connect(&a.address, a.temp_dir.as_deref())?;
    let mut rows = match a.resource {
        StateResource::Actors => actors(&rt, &gcs, &addr)?,
        StateResource::Nodes => nodes(&rt, &gcs, &addr)?,
        StateResource::Jobs => jobs(&rt, &gcs, &addr)?,
        StateResource::Tasks => tasks(&rt, &gcs, &addr)?,
        StateResource::PlacementGroups => groups(&rt, &gcs, &addr)?,
    };
    for (key, eq, value) in &filters {
        if let Some(first) = rows.first()
            && !first.contains_key(key)
        {
            let known: Vec<&String> = first.keys().collect();
            bail!("invalid --filter: {key:?} is not a field of {:?}; the fields are {known:?}", a.resource);
        }
        rows.retain(|r| (r.get(key).map(text).unwrap_or_default().eq_ignore_ascii_case(value)) == *eq);
    }
    let total = rows.len();
    rows.truncate(a.limit);
    if !a.detail {
        let cols = main_columns(a.resource);
        rows = rows.into_iter().map(|r| r.into_iter().filter(|(k, _)| cols.contains(&k.as_str())).collect()).collect();
    }
    let title = format!("{:?}", a.resource).to_lowercase();
    print_rows(&rows, a.format, &format!("List: {}", chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f")), total, &title);
    Ok(())
}

fn print_rows(rows: &[Row], format: StateFormat, heading: &str, total: usize, _what: &str) {
    match format {
        StateFormat::Json => println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        StateFormat::Yaml => print!("{}", yaml(rows)),
        StateFormat::Table => {
            println!("======== {heading} ========");
            println!("Stats:\n------------------------------\nTotal: {total}\n");
            println!("Table:\n------------------------------");
            println!("{}", table(rows));
        }
    }
}

/// A list of rows as YAML (values in JSON's flow style, which YAML reads).
fn yaml(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let mut first = true;
        for (k, v) in r {
            out.push_str(if first { "- " } else { "  " });
            first = false;
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    if rows.is_empty() {
        out.push_str("[]\n");
    }
    out
}

/// Ray's table: an index column, upper-case headers, columns padded.
fn table(rows: &[Row]) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let cols: Vec<&String> = first.keys().collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| r.get(*c).map(text).unwrap_or_default()).collect()).collect();
    let idx_w = rows.len().saturating_sub(1).to_string().len();
    let widths: Vec<usize> =
        cols.iter().enumerate().map(|(i, c)| cells.iter().map(|r| r[i].len()).max().unwrap_or(0).max(c.len())).collect();
    let mut out = format!("{:idx_w$}", "");
    for (c, w) in cols.iter().zip(&widths) {
        out.push_str(&format!("  {:w$}", c.to_uppercase()));
    }
    for (i, r) in cells.iter().enumerate() {
        out.push_str(&format!("\n{i:>idx_w$}"));
        for (v, w) in r.iter().zip(&widths) {
            out.push_str(&format!("  {v:w$}"));
        }
    }
    out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

/// `ray summary actors|tasks`: by class (function), with how many are in each state.
pub fn summary(a: SummaryArgs) -> Result<()> {
    let (rt, gcs, addr) = connect(&a.address, a.temp_dir.as_deref())?;
    let (rows, key, what) = match a.resource {
        SummaryResource::Actors => (actors(&rt, &gcs, &addr)?, "class_name", "Actors"),
        SummaryResource::Tasks => (tasks(&rt, &gcs, &addr)?, "func_or_class_name", "Tasks"),
    };
    let mut by_class: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in &rows {
        *by_class.entry(text(&r[key])).or_default().entry(text(&r["state"])).or_default() += 1;
    }
    let total = format!("total_{}", what.to_lowercase());
    match a.format {
        StateFormat::Json | StateFormat::Yaml => {
            let summary: Map<String, Value> = by_class
                .iter()
                .map(|(c, s)| (c.clone(), json!({"class_name": c, "state_counts": s})))
                .collect();
            let v = json!({"cluster": {"summary": summary, total.clone(): rows.len(), "summary_by": "class"}});
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        StateFormat::Table => {
            println!("======== {what} Summary: {} ========", chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f"));
            println!("Stats:\n------------------------------------\n{total}: {}\n", rows.len());
            println!("Table (group by {}):\n------------------------------------", if what == "Tasks" { "func_name" } else { "class" });
            let table_rows: Vec<Row> = by_class
                .iter()
                .map(|(c, s)| {
                    let mut r = Row::new();
                    r.insert(if what == "Tasks" { "func_or_class_name" } else { "class_name" }.into(), json!(c));
                    let counts: Vec<String> = s.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                    r.insert("state_counts".into(), json!(counts.join(", ")));
                    r
                })
                .collect();
            println!("{}", table(&table_rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_tables_pad_their_columns() {
        assert_eq!(parse_filter("state=ALIVE").unwrap(), ("state".into(), true, "ALIVE".into()));
        assert_eq!(parse_filter("state != DEAD").unwrap(), ("state".into(), false, "DEAD".into()));
        assert!(parse_filter("state").is_err());
        let mut r = Row::new();
        r.insert("class_name".into(), json!("Counter"));
        r.insert("pid".into(), json!(42));
        let t = table(&[r.clone(), r]);
        assert_eq!(t.lines().next().unwrap(), "   CLASS_NAME  PID");
        assert_eq!(t.lines().nth(1).unwrap(), "0  Counter     42");
    }
}
