//! What a submitted job is: its record (stored as JSON in the GCS KV), its
//! states, and the submit request checked field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A job's state, with Ray's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted; waiting for its entrypoint resources or its working_dir.
    Pending,
    /// The driver process runs.
    Running,
    /// Stopped on request.
    Stopped,
    /// The driver exited 0.
    Succeeded,
    /// The driver exited otherwise, or could not be started.
    Failed,
}

impl JobStatus {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Failed)
    }

    /// Ray's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

/// `error_type` of a job whose entrypoint exited with an error.
pub const ERROR_ENTRYPOINT: &str = "JOB_ENTRYPOINT_COMMAND_ERROR";
/// `error_type` of a job whose environment could not be prepared.
pub const ERROR_SETUP: &str = "RUNTIME_ENV_SETUP_FAILURE";
/// `error_type` of a job whose driver was lost (the dashboard went away).
pub const ERROR_SUPERVISOR: &str = "JOB_SUPERVISOR_ACTOR_DIED";

/// One submitted job, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub submission_id: String,
    pub status: JobStatus,
    pub entrypoint: String,
    pub message: Option<String>,
    pub error_type: Option<String>,
    /// Submission time, Unix ms.
    pub start_time: Option<u64>,
    /// When it reached a terminal state, Unix ms.
    pub end_time: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    /// As submitted (`working_dir` is a package URI).
    pub runtime_env: Map<String, Value>,
    pub entrypoint_num_cpus: Option<f64>,
    pub entrypoint_num_gpus: Option<f64>,
    pub entrypoint_memory: Option<u64>,
    pub entrypoint_resources: Option<BTreeMap<String, f64>>,
    pub driver_exit_code: Option<i32>,
    pub driver_node_id: Option<String>,
    pub driver_agent_http_address: Option<String>,
    /// The driver's Ray job id, once its `ray.init()` registered it.
    pub job_id: Option<String>,
    pub driver_pid: Option<u32>,
    /// The driver's start time in clock ticks (a reused pid is never taken for it).
    pub driver_start_ticks: Option<u64>,
    pub driver_node_ip: Option<String>,
    /// The group reserving the entrypoint resources, while the job holds it.
    pub placement_group_id: Option<String>,
}

impl JobRecord {
    /// Ray's `JobDetails` JSON. `redact` hides `env_vars` values (for browsers).
    pub fn details(&self, redact: bool) -> Value {
        let mut env = self.runtime_env.clone();
        if redact && let Some(Value::Object(vars)) = env.get_mut("env_vars") {
            for v in vars.values_mut() {
                *v = Value::String("<redacted>".into());
            }
        }
        let driver_info = match (&self.job_id, self.driver_pid) {
            (Some(id), Some(pid)) => json!({
                "id": id,
                "node_ip_address": self.driver_node_ip.clone().unwrap_or_default(),
                "pid": pid.to_string(),
            }),
            _ => Value::Null,
        };
        json!({
            "type": "SUBMISSION",
            "job_id": self.job_id,
            "submission_id": self.submission_id,
            "driver_info": driver_info,
            "status": self.status.as_str(),
            "entrypoint": self.entrypoint,
            "message": self.message,
            "error_type": self.error_type,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "metadata": self.metadata,
            "runtime_env": env,
            "driver_agent_http_address": self.driver_agent_http_address,
            "driver_node_id": self.driver_node_id,
            "driver_exit_code": self.driver_exit_code,
            "entrypoint_num_cpus": self.entrypoint_num_cpus,
            "entrypoint_num_gpus": self.entrypoint_num_gpus,
            "entrypoint_memory": self.entrypoint_memory,
            "entrypoint_resources": self.entrypoint_resources,
        })
    }

    /// The resources the entrypoint reserves (empty: none).
    pub fn entrypoint_shape(&self) -> BTreeMap<String, f64> {
        let mut shape = self.entrypoint_resources.clone().unwrap_or_default();
        for (name, v) in [
            ("CPU", self.entrypoint_num_cpus),
            ("GPU", self.entrypoint_num_gpus),
        ] {
            if let Some(v) = v.filter(|v| *v > 0.0) {
                shape.insert(name.into(), v);
            }
        }
        if let Some(m) = self.entrypoint_memory.filter(|m| *m > 0) {
            shape.insert("memory".into(), m as f64);
        }
        shape.retain(|_, v| *v > 0.0);
        shape
    }
}

/// A checked `POST /api/jobs/` body.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub entrypoint: String,
    pub submission_id: Option<String>,
    pub runtime_env: Map<String, Value>,
    pub metadata: BTreeMap<String, String>,
    pub entrypoint_num_cpus: Option<f64>,
    pub entrypoint_num_gpus: Option<f64>,
    pub entrypoint_memory: Option<u64>,
    pub entrypoint_resources: Option<BTreeMap<String, f64>>,
}

/// The runtime_env fields a submitted job may use here.
const RUNTIME_ENV_FIELDS: &[&str] = &["working_dir", "env_vars", "excludes", "config"];

/// The longest submission id accepted.
const MAX_ID_LEN: usize = 128;

impl SubmitRequest {
    /// Checks a request body; the error names the field.
    pub fn parse(body: &Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or("the request body must be a JSON object")?;
        let known = [
            "entrypoint",
            "submission_id",
            "job_id",
            "runtime_env",
            "metadata",
            "entrypoint_num_cpus",
            "entrypoint_num_gpus",
            "entrypoint_memory",
            "entrypoint_resources",
            "entrypoint_label_selector",
        ];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "unknown field {k:?}; accepted fields: {}",
                known.join(", ")
            ));
        }
        let entrypoint = match obj.get("entrypoint") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err("entrypoint must not be empty".into()),
            Some(v) => return Err(format!("entrypoint must be a string, got {}", kind(v))),
            None => return Err("entrypoint is required".into()),
        };
        let mut submission_id = None;
        for field in ["job_id", "submission_id"] {
            match obj.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => submission_id = Some(check_id(field, s)?),
                Some(v) => return Err(format!("{field} must be a string, got {}", kind(v))),
            }
        }
        let runtime_env = match obj.get("runtime_env") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => check_runtime_env(m)?,
            Some(v) => return Err(format!("runtime_env must be an object, got {}", kind(v))),
        };
        let metadata = string_map(obj.get("metadata"), "metadata")?.unwrap_or_default();
        let entrypoint_num_cpus = quantity(obj.get("entrypoint_num_cpus"), "entrypoint_num_cpus")?;
        let entrypoint_num_gpus = quantity(obj.get("entrypoint_num_gpus"), "entrypoint_num_gpus")?;
        let entrypoint_memory = match obj.get("entrypoint_memory") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                format!("entrypoint_memory must be a non-negative integer (bytes), got {v}")
            })?),
        };
        let entrypoint_resources = match obj.get("entrypoint_resources") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    if ["CPU", "GPU", "memory"].contains(&k.as_str()) {
                        return Err(format!(
                            "entrypoint_resources must not name {k:?}; use entrypoint_num_cpus, entrypoint_num_gpus or entrypoint_memory"
                        ));
                    }
                    let q =
                        quantity(Some(v), &format!("entrypoint_resources[{k:?}]"))?.unwrap_or(0.0);
                    out.insert(k.clone(), q);
                }
                Some(out)
            }
            Some(v) => {
                return Err(format!(
                    "entrypoint_resources must be an object, got {}",
                    kind(v)
                ));
            }
        };
        if let Some(sel) = string_map(
            obj.get("entrypoint_label_selector"),
            "entrypoint_label_selector",
        )? && !sel.is_empty()
        {
            return Err(
                "entrypoint_label_selector is not supported: job drivers run on the head node"
                    .into(),
            );
        }
        Ok(Self {
            entrypoint,
            submission_id,
            runtime_env,
            metadata,
            entrypoint_num_cpus,
            entrypoint_num_gpus,
            entrypoint_memory,
            entrypoint_resources,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn check_id(field: &str, s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{field} must be 1 to {MAX_ID_LEN} characters of letters, digits, '_', '-' or '.'"
        ))
    }
}

fn quantity(v: Option<&Value>, field: &str) -> Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(q) if q.is_finite() && q >= 0.0 => Ok(Some(q)),
            _ => Err(format!("{field} must be a non-negative number, got {n}")),
        },
        Some(v) => Err(format!(
            "{field} must be a non-negative number, got {}",
            kind(v)
        )),
    }
}

fn string_map(v: Option<&Value>, field: &str) -> Result<Option<BTreeMap<String, String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!(
                    "{field}[{k:?}] must be a string, got {}",
                    kind(other)
                )),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(v) => Err(format!(
            "{field} must be an object of strings, got {}",
            kind(v)
        )),
    }
}

fn check_runtime_env(m: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        if !RUNTIME_ENV_FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "runtime_env[{k:?}] is not supported for submitted jobs by this build; supported fields: {}",
                RUNTIME_ENV_FIELDS.join(", ")
            ));
        }
        match k.as_str() {
            "working_dir" => {
                let s = v.as_str().ok_or_else(|| {
                    format!(
                        "runtime_env[\"working_dir\"] must be a string, got {}",
                        kind(v)
                    )
                })?;
                crate::packages::PackageName::from_uri(s)
                    .map_err(|e| format!("runtime_env[\"working_dir\"]: {e}"))?;
            }
            "env_vars" => {
                string_map(Some(v), "runtime_env[\"env_vars\"]")?;
            }
            _ => {}
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_parses() {
        let r = SubmitRequest::parse(&json!({
            "entrypoint": "python x.py",
            "submission_id": "my-job_1",
            "runtime_env": {"working_dir": "gcs://_ray_pkg_abc123.zip", "env_vars": {"A": "1"}},
            "metadata": {"owner": "me"},
            "entrypoint_num_cpus": 1,
            "entrypoint_memory": 1024,
            "entrypoint_resources": {"custom": 0.5},
        }))
        .unwrap();
        assert_eq!(r.submission_id.as_deref(), Some("my-job_1"));
        assert_eq!(r.entrypoint_num_cpus, Some(1.0));
        assert_eq!(r.runtime_env["env_vars"]["A"], "1");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({}), "entrypoint is required"),
            (json!({"entrypoint": 3}), "entrypoint must be a string"),
            (
                json!({"entrypoint": "x", "nope": 1}),
                "unknown field \"nope\"",
            ),
            (
                json!({"entrypoint": "x", "submission_id": "../etc"}),
                "submission_id must be",
            ),
            (
                json!({"entrypoint": "x", "entrypoint_num_cpus": -1}),
                "entrypoint_num_cpus must be",
            ),
            (
                json!({"entrypoint": "x", "runtime_env": {"pip": ["x"]}}),
                "runtime_env[\"pip\"]",
            ),
            (
                json!({"entrypoint": "x", "runtime_env": {"working_dir": "/home/me"}}),
                "runtime_env[\"working_dir\"]",
            ),
            (
                json!({"entrypoint": "x", "runtime_env": {"env_vars": {"A": 1}}}),
                "env_vars\"][\"A\"]",
            ),
            (
                json!({"entrypoint": "x", "metadata": {"a": []}}),
                "metadata[\"a\"]",
            ),
            (
                json!({"entrypoint": "x", "entrypoint_resources": {"CPU": 1}}),
                "entrypoint_num_cpus",
            ),
        ];
        for (body, want) in cases {
            let e = SubmitRequest::parse(&body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn shape_and_redaction() {
        let mut r = JobRecord {
            submission_id: "s".into(),
            status: JobStatus::Running,
            entrypoint: "x".into(),
            message: None,
            error_type: None,
            start_time: Some(1),
            end_time: None,
            metadata: BTreeMap::new(),
            runtime_env: json!({"env_vars": {"SECRET": "v"}})
                .as_object()
                .unwrap()
                .clone(),
            entrypoint_num_cpus: Some(1.0),
            entrypoint_num_gpus: Some(0.0),
            entrypoint_memory: None,
            entrypoint_resources: Some([("x".to_string(), 2.0)].into()),
            driver_exit_code: None,
            driver_node_id: None,
            driver_agent_http_address: None,
            job_id: None,
            driver_pid: None,
            driver_start_ticks: None,
            driver_node_ip: None,
            placement_group_id: None,
        };
        assert_eq!(
            r.entrypoint_shape(),
            [("CPU".to_string(), 1.0), ("x".to_string(), 2.0)].into()
        );
        assert_eq!(r.details(false)["runtime_env"]["env_vars"]["SECRET"], "v");
        assert_eq!(
            r.details(true)["runtime_env"]["env_vars"]["SECRET"],
            "<redacted>"
        );
        r.status = JobStatus::Succeeded;
        assert_eq!(r.details(false)["status"], "SUCCEEDED");
    }
}
