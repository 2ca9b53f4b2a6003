//! The `ray` executable. Under its own name it is the command-line tool; started
//! as `gcs_server` or `raylet` (argv[0]) it is that daemon, so one binary carries
//! the whole runtime.

mod address;
mod args;
mod auth_cmd;
mod daemons;
mod dashboard_daemon;
mod gcs_supervisor;
mod job_client;
mod job_cmd;
mod job_package;
mod launch;
mod metrics_serve;
mod plan_cmd;
mod prometheus;
mod monitor;
mod spawn;
mod start_env;
mod start;
mod start_dashboard;
mod state_cmd;
mod status;
mod stop;

use clap::Parser;

fn main() {
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let code = match argv0.as_str() {
        "gcs_server" => daemons::gcs_main(daemons::GcsArgs::parse()),
        "gcs_supervisor" => gcs_supervisor::main(gcs_supervisor::SupervisorArgs::parse()),
        "raylet" => daemons::raylet_main(daemons::RayletArgs::parse()),
        "monitor" => daemons::monitor_main(daemons::MonitorArgs::parse()),
        "dashboard" => dashboard_daemon::main(dashboard_daemon::DashboardArgs::parse()),
        _ => cli_main(),
    };
    std::process::exit(code);
}

fn cli_main() -> i32 {
    let cli = args::Cli::parse();
    // The CLI talks to people on stdout/stderr; its own tracing only shows problems.
    ray_common::logging::init_with_default("ray", "warn");
    // Commands that pass on an exit code of their own (the remote command's).
    let code = |r: anyhow::Result<i32>| r.map(Some);
    let result = match cli.command {
        args::Command::Start(a) => start::run(a).map(|_| None),
        args::Command::Stop(a) => stop::run(a).map(|_| None),
        args::Command::Status(a) => status::run(a).map(|_| None),
        args::Command::List(a) => state_cmd::list(a).map(|_| None),
        args::Command::Summary(a) => state_cmd::summary(a).map(|_| None),
        args::Command::Monitor(a) => monitor::run(a).map(|_| None),
        args::Command::Metrics(a) => prometheus::run(a).map(|_| None),
        args::Command::Plan(a) => plan_cmd::run(a).map(|_| None),
        args::Command::GetAuthToken(a) => auth_cmd::run(a).map(|_| None),
        args::Command::Up(a) => launch::up(a).map(|_| None),
        args::Command::Down(a) => launch::down(a).map(|_| None),
        args::Command::Exec(a) => code(launch::exec(a)),
        args::Command::Submit(a) => code(launch::submit(a)),
        args::Command::Job(a) => code(job_cmd::run(a)),
        args::Command::Attach(a) => code(launch::attach(a)),
        args::Command::GetHeadIp(a) => launch::head_ip(a).map(|_| None),
        args::Command::GetWorkerIps(a) => launch::worker_ips(a).map(|_| None),
        args::Command::RsyncUp(a) => launch::rsync(a, true).map(|_| None),
        args::Command::RsyncDown(a) => launch::rsync(a, false).map(|_| None),
    };
    match result {
        Ok(Some(code)) => code,
        Ok(None) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}
