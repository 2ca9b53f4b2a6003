//! Jobs on the head's dashboard port: `ray job submit|status|logs|stop|list|delete`
//! against real clusters, the token check on HTTP, and Ray's own
//! `JobSubmissionClient` (from the PyPI `ray` package) talking to our dashboard.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ray_tests::*;

/// The dashboard URL `ray start --head` recorded.
fn dashboard_url(env: &RayEnv) -> String {
    std::fs::read_to_string(env.root().join("ray_current_dashboard"))
        .expect("no dashboard recorded")
        .trim()
        .to_string()
}

/// One HTTP/1.1 request over a plain TCP connection; returns (status, body).
fn http(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn job_status(env: &RayEnv, id: &str) -> String {
    env.ray_ok(&["job", "status", id])
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

/// A project folder: a helper module imported by the entrypoint and by its tasks.
fn project(env: &RayEnv) -> PathBuf {
    let dir = env.tmpdir().join("project");
    write(&dir, "helper.py", "def double(x):\n    return 2 * x\n");
    write(
        &dir,
        "main.py",
        r#"import os, ray, helper
ray.init()

@ray.remote
def work(x):
    import helper
    return helper.double(x), os.environ.get("GREETING")

out = ray.get([work.remote(i) for i in range(4)])
print("results:", [v for v, _ in out])
print("task GREETING:", sorted({g for _, g in out}))
print("driver GREETING:", os.environ.get("GREETING"))
"#,
    );
    write(
        &dir,
        "fail.py",
        "def inner():\n    raise RuntimeError('the job went wrong')\n\ninner()\n",
    );
    dir
}

#[test]
fn submitted_jobs_run_tasks_in_their_working_dir_and_report_failures() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "2"]);
    let dir = project(&env);
    let wd = dir.display().to_string();

    let t0 = Instant::now();
    let out = env.ray(&[
        "job",
        "submit",
        "--submission-id",
        "tasks",
        "--working-dir",
        &wd,
        "--runtime-env-json",
        r#"{"env_vars": {"GREETING": "hello-from-env"}}"#,
        "--",
        "python",
        "main.py",
    ]);
    let elapsed = t0.elapsed();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("results: [0, 2, 4, 6]"),
        "the entrypoint and its tasks imported the helper:\n{all}"
    );
    assert!(
        all.contains("task GREETING: ['hello-from-env']"),
        "env_vars reach the tasks:\n{all}"
    );
    assert!(
        all.contains("driver GREETING: hello-from-env"),
        "env_vars reach the driver:\n{all}"
    );
    assert!(all.contains("Job 'tasks' succeeded"), "{all}");
    println!("submit to SUCCEEDED (ray job submit, 4 tasks, working_dir): {elapsed:?}");
    assert!(job_status(&env, "tasks").contains("SUCCEEDED"));
    let log = env.logs_dir().join("job-driver-tasks.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("results: [0, 2, 4, 6]"),
        "the log is in the session"
    );

    // A failing script: FAILED, exit code 1, its traceback in the logs.
    let out = env.ray(&[
        "job",
        "submit",
        "--submission-id",
        "bad",
        "--working-dir",
        &wd,
        "--",
        "python",
        "fail.py",
    ]);
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job fails the command:\n{all}"
    );
    assert!(
        all.contains("Job 'bad' failed") && all.contains("exit code 1"),
        "{all}"
    );
    let status = job_status(&env, "bad");
    assert!(status.contains("FAILED"), "{status}");
    let logs = env.ray_ok(&["job", "logs", "bad"]);
    assert!(
        logs.contains("Traceback (most recent call last)")
            && logs.contains("RuntimeError: the job went wrong"),
        "{logs}"
    );

    let list = env.ray_ok(&["job", "list"]);
    assert!(
        list.contains("tasks")
            && list.contains("SUCCEEDED")
            && list.contains("bad")
            && list.contains("FAILED"),
        "{list}"
    );
    env.ray_ok(&["job", "delete", "bad"]);
    let gone = env.ray(&["job", "status", "bad"]);
    assert!(
        !gone.status.success() && text(&gone).contains("does not exist"),
        "{}",
        text(&gone)
    );

    // A refused request names the address.
    let out = env.ray(&["job", "list", "--address", "http://127.0.0.1:1"]);
    assert!(
        !out.status.success() && text(&out).contains("http://127.0.0.1:1"),
        "{}",
        text(&out)
    );
}

fn wait_for_pid(file: &Path) -> u32 {
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(file)
            .is_ok_and(|s| !s.trim().is_empty())),
        "no pid in {}",
        file.display()
    );
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !ray_common::process::is_zombie(pid)
}

#[test]
fn stop_ends_a_long_job_and_the_api_refuses_requests_without_the_token() {
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "1"]);
    let url = dashboard_url(&env);
    let pidfile = env.tmpdir().join("long.pid");
    let code = format!(
        "import os, time; open({:?}, 'w').write(str(os.getpid())); time.sleep(300)",
        pidfile.display().to_string()
    );
    env.ray_ok(&[
        "job",
        "submit",
        "--no-wait",
        "--submission-id",
        "long",
        "--",
        "python",
        "-c",
        &code,
    ]);
    let pid = wait_for_pid(&pidfile);
    assert!(job_status(&env, "long").contains("RUNNING"));

    // Without the token (or with a wrong one) nothing is created, stopped or deleted.
    let token = env.token();
    for bad in [None, Some("not-the-token")] {
        let (code, body) = http(
            &url,
            "POST",
            "/api/jobs/",
            bad,
            Some(r#"{"entrypoint": "echo sneaky"}"#),
        );
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
        assert!(!body.contains(&token), "a refusal never echoes the token");
        assert_eq!(http(&url, "POST", "/api/jobs/long/stop", bad, None).0, 401);
        assert_eq!(http(&url, "DELETE", "/api/jobs/long", bad, None).0, 401);
        assert_eq!(
            http(
                &url,
                "PUT",
                "/api/packages/gcs/_ray_pkg_abc.zip",
                bad,
                Some("zip")
            )
            .0,
            401
        );
        assert_eq!(http(&url, "GET", "/api/jobs/long/logs", bad, None).0, 401);
    }
    let (code, body) = http(&url, "GET", "/api/jobs/", Some(&token), None);
    assert_eq!(code, 200, "{body}");
    let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(1),
        "no job was created: {body}"
    );
    assert!(alive(pid), "the refused stop did not stop the job");
    assert!(job_status(&env, "long").contains("RUNNING"));
    // The page shell and login form are open; the data behind them is not.
    assert_eq!(http(&url, "GET", "/", None, None).0, 200);
    assert_eq!(http(&url, "GET", "/api/cluster_status", None, None).0, 401);
    let (code, body) = http(&url, "GET", "/api/cluster_status", Some(&token), None);
    assert!(
        code == 200 && body.contains("Autoscaler status"),
        "{code} {body}"
    );

    let t0 = Instant::now();
    let out = env.ray_ok(&["job", "stop", "long"]);
    assert!(out.contains("Job 'long' was stopped"), "{out}");
    println!("stop to STOPPED: {:?}", t0.elapsed());
    assert!(job_status(&env, "long").contains("STOPPED"));
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "the driver {pid} is gone"
    );

    // `ray stop` stops the jobs that still run.
    let pidfile2 = env.tmpdir().join("long2.pid");
    let code = format!(
        "import os, time; open({:?}, 'w').write(str(os.getpid())); time.sleep(300)",
        pidfile2.display().to_string()
    );
    env.ray_ok(&["job", "submit", "--no-wait", "--", "python", "-c", &code]);
    let pid2 = wait_for_pid(&pidfile2);
    env.ray_ok(&["stop"]);
    assert!(!alive(pid2), "ray stop ended the job's driver {pid2}");
    assert!(
        env.live_processes().is_empty(),
        "{:?}",
        env.live_processes()
    );
}

/// The `python` of a venv holding Ray 2.60 from PyPI (scripts/test.sh makes it).
fn pypi_ray_python() -> PathBuf {
    let p = std::env::var_os("RAY_PYPI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/ray-rs/pyray-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: this test needs a venv with PyPI's ray==2.60.0 and aiohttp and pydantic (scripts/test.sh \
         creates it; or set RAY_PYPI_PYTHON)",
        p.display()
    );
    p
}

const CLIENT_SCRIPT: &str = r#"
import asyncio, sys, time
from ray.job_submission import JobSubmissionClient, JobStatus
address, token, wd = sys.argv[1:4]
client = JobSubmissionClient(address, headers={"Authorization": "Bearer " + token})
sid = client.submit_job(entrypoint="python main.py", runtime_env={"working_dir": wd, "env_vars": {"GREETING": "from-pypi-client"}})
deadline = time.time() + 120
while client.get_job_status(sid) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and time.time() < deadline:
    time.sleep(0.2)
info = client.get_job_info(sid)
print("STATUS", info.status, info.submission_id == sid, info.entrypoint)
print("LOGS", client.get_job_logs(sid))

async def tail():
    return "".join([chunk async for chunk in client.tail_job_logs(sid)])

print("TAIL", asyncio.run(tail()))
print("LISTED", [j.submission_id for j in client.list_jobs()] == [sid])
print("DELETED", client.delete_job(sid))
"#;

#[test]
fn rays_own_job_submission_client_submits_and_reads_a_job() {
    let python = pypi_ray_python();
    let env = RayEnv::new();
    env.start_head(&["--num-cpus", "2"]);
    let dir = project(&env);
    let script = env.write_file("client.py", CLIENT_SCRIPT);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args([dashboard_url(&env), env.token(), dir.display().to_string()])
        .env("HOME", env.home())
        .env_remove("RAY_ADDRESS")
        .env_remove("RAY_AUTH_MODE")
        .env_remove("RAY_AUTH_TOKEN")
        .output()
        .expect("run the PyPI ray client");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("STATUS SUCCEEDED True python main.py"),
        "{all}"
    );
    assert!(all.contains("LOGS results: [0, 2, 4, 6]"), "{all}");
    assert!(all.contains("driver GREETING: from-pypi-client"), "{all}");
    assert!(
        all.contains("TAIL results: [0, 2, 4, 6]"),
        "the websocket tail: {all}"
    );
    assert!(
        all.contains("LISTED True") && all.contains("DELETED True"),
        "{all}"
    );
}
