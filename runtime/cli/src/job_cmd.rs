//! `ray job`: submit, status, logs, stop, list and delete jobs through the
//! dashboard's Jobs API, as Ray's `ray job` does.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::job_client::{Body, JobClient, urlencode};
use crate::job_package;

/// `ray job ...`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

/// The `--address` every subcommand takes.
#[derive(Debug, Args)]
pub struct AddressArg {
    /// The dashboard's address, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS when it is an
    /// http(s) URL, else the dashboard of the cluster started on this machine, else http://127.0.0.1:8265).
    #[arg(long)]
    pub address: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job: `ray job submit [flags] -- ENTRYPOINT...`.
    Submit(Box<SubmitArgs>),
    /// Print a job's status.
    Status(IdArgs),
    /// Print a job's logs (--follow: until it ends).
    Logs(LogsArgs),
    /// Stop a job.
    Stop(StopJobArgs),
    /// List every job.
    List(AddressArg),
    /// Delete an ended job (its log file stays).
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub address: AddressArg,
    /// The job's id (default: raysubmit_<random>).
    #[arg(long = "submission-id")]
    pub submission_id: Option<String>,
    /// Older name of --submission-id.
    #[arg(long = "job-id", hide = true)]
    pub job_id: Option<String>,
    /// A YAML or JSON file holding the runtime_env.
    #[arg(long = "runtime-env")]
    pub runtime_env: Option<PathBuf>,
    /// The runtime_env as JSON (wins over --runtime-env).
    #[arg(long = "runtime-env-json")]
    pub runtime_env_json: Option<String>,
    /// A local folder to run the job in; uploaded to the cluster (wins over the runtime_env's).
    #[arg(long = "working-dir")]
    pub working_dir: Option<PathBuf>,
    /// Metadata for the job, a JSON object of strings.
    #[arg(long = "metadata-json")]
    pub metadata_json: Option<String>,
    /// CPUs to reserve for the entrypoint itself.
    #[arg(long = "entrypoint-num-cpus")]
    pub entrypoint_num_cpus: Option<f64>,
    /// GPUs to reserve for the entrypoint itself.
    #[arg(long = "entrypoint-num-gpus")]
    pub entrypoint_num_gpus: Option<f64>,
    /// Memory (bytes) to reserve for the entrypoint itself.
    #[arg(long = "entrypoint-memory")]
    pub entrypoint_memory: Option<u64>,
    /// Custom resources to reserve for the entrypoint, a JSON object.
    #[arg(long = "entrypoint-resources")]
    pub entrypoint_resources: Option<String>,
    /// Return once the job is submitted instead of printing its logs until it ends.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
    /// The command to run (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "ENTRYPOINT"
    )]
    pub entrypoint: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub address: AddressArg,
    /// The submission id (or the driver's job id).
    #[arg(value_name = "JOB_ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub ids: IdArgs,
    /// Keep printing new output until the job ends.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct StopJobArgs {
    #[command(flatten)]
    pub ids: IdArgs,
    /// Return once the stop is requested.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
}

/// Entry point; returns the exit code.
pub fn run(a: JobArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match a.command {
            JobCommand::Submit(s) => submit(*s).await,
            JobCommand::Status(i) => status(i).await.map(|_| 0),
            JobCommand::Logs(l) => logs(l).await.map(|_| 0),
            JobCommand::Stop(s) => stop(s).await.map(|_| 0),
            JobCommand::List(a) => list(a).await.map(|_| 0),
            JobCommand::Delete(i) => delete(i).await.map(|_| 0),
        }
    })
}

fn parse_json_object(flag: &str, text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => bail!("{flag}: expected a JSON object, got {other}"),
        Err(e) => bail!("{flag}: not valid JSON: {e}"),
    }
}

/// The runtime_env from --runtime-env, --runtime-env-json and --working-dir.
fn runtime_env(a: &SubmitArgs) -> Result<Map<String, Value>> {
    let mut env = Map::new();
    if let Some(path) = &a.runtime_env {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--runtime-env {}", path.display()))?;
        let node = ray_autoscaler::config::yaml::parse(&text).map_err(|errs| {
            anyhow!(
                "--runtime-env {}: {}",
                path.display(),
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        match node.map(|n| ray_autoscaler::config::to_json(&n)) {
            Some(Value::Object(m)) => env = m,
            None | Some(Value::Null) => {}
            Some(other) => bail!(
                "--runtime-env {}: expected a mapping, got {other}",
                path.display()
            ),
        }
    }
    if let Some(text) = &a.runtime_env_json {
        env = parse_json_object("--runtime-env-json", text)?;
    }
    if let Some(dir) = &a.working_dir {
        env.insert(
            "working_dir".into(),
            Value::String(dir.display().to_string()),
        );
    }
    Ok(env)
}

/// Uploads a local `working_dir` (unless the cluster has that content already)
/// and puts its package URI in its place.
async fn upload_working_dir(client: &JobClient, env: &mut Map<String, Value>) -> Result<()> {
    let Some(dir) = env
        .get("working_dir")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return Ok(());
    };
    if dir.contains("://") {
        return Ok(());
    }
    let excludes: Vec<String> = match env.get("excludes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(v)) => v
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow!("runtime_env excludes must be a list of strings"))
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!("runtime_env excludes must be a list of strings, got {other}"),
    };
    let path = PathBuf::from(&dir);
    let package =
        tokio::task::spawn_blocking(move || job_package::make(&path, &excludes)).await??;
    let url = format!("/api/packages/gcs/{}", package.name);
    let (status, text) = client
        .send(Method::GET, &url, None, Duration::from_secs(30))
        .await?;
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            let size = package.data.len();
            let (status, text) = client
                .send(
                    Method::PUT,
                    &url,
                    Some(Body::Bytes(package.data)),
                    Duration::from_secs(600),
                )
                .await?;
            if status != StatusCode::OK {
                bail!(
                    "cannot upload --working-dir {dir} ({size} bytes) to {}: {status}: {}",
                    client.address,
                    text.trim()
                );
            }
        }
        _ => bail!(
            "cannot check for package {} at {}: {status}: {}",
            package.name,
            client.address,
            text.trim()
        ),
    }
    env.insert(
        "working_dir".into(),
        Value::String(format!("gcs://{}", package.name)),
    );
    env.remove("excludes");
    Ok(())
}

fn banner(text: &str) {
    let line = "-".repeat(text.len());
    println!();
    println!("{line}");
    println!("{text}");
    println!("{line}");
    println!();
}

/// Prints a job's final state as Ray's CLI does; returns its status.
async fn report_status(client: &JobClient, id: &str) -> Result<String> {
    let info = client
        .json(Method::GET, &format!("/api/jobs/{}", urlencode(id)), None)
        .await?;
    let status = info["status"].as_str().unwrap_or("UNKNOWN").to_string();
    let message = info["message"].as_str();
    match status.as_str() {
        "SUCCEEDED" => banner(&format!("Job '{id}' succeeded")),
        "STOPPED" => println!("Job '{id}' was stopped"),
        "FAILED" => {
            banner(&format!("Job '{id}' failed"));
            if let Some(m) = message {
                println!("Status message: {m}");
            }
        }
        other => {
            println!("Status for job '{id}': {other}");
            if let Some(m) = message {
                println!("Status message: {m}");
            }
        }
    }
    Ok(status)
}

async fn submit(a: SubmitArgs) -> Result<i32> {
    let client = JobClient::new(a.address.address.as_deref())?;
    client.check().await?;
    let mut env = runtime_env(&a)?;
    upload_working_dir(&client, &mut env).await?;
    let entrypoint = shlex::try_join(a.entrypoint.iter().map(String::as_str))
        .map_err(|e| anyhow!("ENTRYPOINT: {e}"))?;
    let mut body = json!({ "entrypoint": entrypoint, "runtime_env": env });
    if let Some(id) = a.submission_id.or(a.job_id) {
        body["submission_id"] = Value::String(id);
    }
    if let Some(m) = &a.metadata_json {
        body["metadata"] = Value::Object(parse_json_object("--metadata-json", m)?);
    }
    if let Some(r) = &a.entrypoint_resources {
        body["entrypoint_resources"] =
            Value::Object(parse_json_object("--entrypoint-resources", r)?);
    }
    for (field, v) in [
        ("entrypoint_num_cpus", a.entrypoint_num_cpus),
        ("entrypoint_num_gpus", a.entrypoint_num_gpus),
    ] {
        if let Some(v) = v {
            body[field] = json!(v);
        }
    }
    if let Some(m) = a.entrypoint_memory {
        body["entrypoint_memory"] = json!(m);
    }
    let reply = client
        .json(Method::POST, "/api/jobs/", Some(Body::Json(body)))
        .await
        .context("the job was not submitted")?;
    let id = reply["submission_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the dashboard did not return a submission id: {reply}"))?
        .to_string();
    banner(&format!("Job '{id}' submitted successfully"));
    println!("Next steps");
    println!("  Query the logs of the job:");
    println!("    ray job logs {id}");
    println!("  Query the status of the job:");
    println!("    ray job status {id}");
    println!("  Request the job to be stopped:");
    println!("    ray job stop {id}");
    println!();
    std::io::stdout().flush()?;
    if a.no_wait {
        return Ok(0);
    }
    println!("Tailing logs until the job exits (disable with --no-wait):");
    client.follow_logs(&id, &mut std::io::stdout()).await?;
    let status = report_status(&client, &id).await?;
    Ok(if status == "FAILED" { 1 } else { 0 })
}

async fn status(a: IdArgs) -> Result<()> {
    let client = JobClient::new(a.address.address.as_deref())?;
    let info = client
        .json(
            Method::GET,
            &format!("/api/jobs/{}", urlencode(&a.id)),
            None,
        )
        .await?;
    println!(
        "Status for job '{}': {}",
        a.id,
        info["status"].as_str().unwrap_or("UNKNOWN")
    );
    if let Some(m) = info["message"].as_str() {
        println!("Status message: {m}");
    }
    Ok(())
}

async fn logs(a: LogsArgs) -> Result<()> {
    let client = JobClient::new(a.ids.address.address.as_deref())?;
    if a.follow {
        // A missing job is a clear error before the websocket is opened.
        client
            .json(
                Method::GET,
                &format!("/api/jobs/{}", urlencode(&a.ids.id)),
                None,
            )
            .await?;
        return client.follow_logs(&a.ids.id, &mut std::io::stdout()).await;
    }
    let reply = client
        .json(
            Method::GET,
            &format!("/api/jobs/{}/logs", urlencode(&a.ids.id)),
            None,
        )
        .await?;
    print!("{}", reply["logs"].as_str().unwrap_or_default());
    Ok(())
}

async fn stop(a: StopJobArgs) -> Result<()> {
    let client = JobClient::new(a.ids.address.address.as_deref())?;
    let id = &a.ids.id;
    println!("Attempting to stop job '{id}'");
    client
        .json(
            Method::POST,
            &format!("/api/jobs/{}/stop", urlencode(id)),
            None,
        )
        .await?;
    if a.no_wait {
        return Ok(());
    }
    println!("Waiting for job '{id}' to exit (disable with --no-wait):");
    loop {
        let info = client
            .json(Method::GET, &format!("/api/jobs/{}", urlencode(id)), None)
            .await?;
        let status = info["status"].as_str().unwrap_or("UNKNOWN");
        if matches!(status, "SUCCEEDED" | "FAILED" | "STOPPED") {
            report_status(&client, id).await?;
            return Ok(());
        }
        println!("Job has not exited yet. Status: {status}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn time_text(v: &Value) -> String {
    v.as_u64()
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

async fn list(a: AddressArg) -> Result<()> {
    let client = JobClient::new(a.address.as_deref())?;
    let jobs = client.json(Method::GET, "/api/jobs/", None).await?;
    let jobs = jobs.as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!("No jobs.");
        return Ok(());
    }
    let rows: Vec<[String; 5]> = jobs
        .iter()
        .map(|j| {
            [
                j["submission_id"].as_str().unwrap_or("-").to_string(),
                j["status"].as_str().unwrap_or("-").to_string(),
                time_text(&j["start_time"]),
                time_text(&j["end_time"]),
                j["entrypoint"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let header = [
        "SUBMISSION_ID",
        "STATUS",
        "START_TIME",
        "END_TIME",
        "ENTRYPOINT",
    ]
    .map(String::from);
    let mut widths = [0usize; 4];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    Ok(())
}

async fn delete(a: IdArgs) -> Result<()> {
    let client = JobClient::new(a.address.address.as_deref())?;
    client
        .json(
            Method::DELETE,
            &format!("/api/jobs/{}", urlencode(&a.id)),
            None,
        )
        .await?;
    println!("Job '{}' deleted successfully", a.id);
    Ok(())
}
