//! The Ray Client server of a head node: `python -m ray.util.client.server`,
//! which lets `ray.init("ray://HOST:PORT")` reach the cluster from machines
//! outside it. `ray start --head` starts it on `--ray-client-server-port`
//! (10001 by default, as Ray; 0 turns it off), listening on the node's
//! address, with the interpreter of this installation: the `python3` next to
//! the `ray` executable (a virtualenv's `bin`), else `python3` on the PATH. It
//! logs to `ray_client_server.out` and is recorded for `ray stop`. A port that
//! is taken, or no interpreter, is a warning: the cluster starts without it.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use ray_common::process;

use crate::address::join_host_port;
use crate::spawn::{Launched, Launcher};

/// Ray's default port of the Ray Client server.
pub const DEFAULT_PORT: u16 = 10001;

/// The Python interpreter next to `exe` (`python3`, then `python`), else
/// `python3` on `path` (a `PATH` value).
pub fn python_interpreter(exe: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if let Some(dir) = exe.and_then(Path::parent) {
        for name in ["python3", "python"] {
            let p = dir.join(name);
            if process::is_executable(&p) {
                return Some(p);
            }
        }
    }
    std::env::split_paths(path?).map(|d| d.join("python3")).find(|p| process::is_executable(p))
}

/// Starts the server for the head at `ip` whose GCS is `gcs_addr`, unless the
/// port is 0. Returns the process and its address, or `None` after printing
/// why it was not started.
pub fn start(launcher: &Launcher, ip: IpAddr, port: Option<u16>, gcs_addr: &str) -> Option<(Launched, String)> {
    let port = port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return None;
    }
    let addr = SocketAddr::new(ip, port);
    if let Err(e) = TcpListener::bind(addr) {
        eprintln!(
            "WARNING: the Ray Client server was not started: cannot listen on {}: {e}. Ray Client \
             (ray.init(\"ray://...\")) cannot reach this cluster; start it again with \
             --ray-client-server-port=<a free port> to have one.",
            join_host_port(ip, port)
        );
        return None;
    }
    let exe = process::current_exe().ok();
    let Some(python) = python_interpreter(exe.as_deref(), std::env::var_os("PATH").as_deref()) else {
        eprintln!(
            "WARNING: the Ray Client server was not started: no Python interpreter next to {} or on the PATH.",
            exe.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "the ray executable".into())
        );
        return None;
    };
    let args: Vec<String> = vec![
        "-m".into(),
        "ray.util.client.server".into(),
        "--address".into(),
        gcs_addr.to_string(),
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        port.to_string(),
    ];
    match launcher.spawn_program(&python, "ray_client_server", "ray_client_server", "out", &args) {
        Ok(p) => {
            let url = format!("ray://{}", join_host_port(ip, port));
            Some((p, url))
        }
        Err(e) => {
            eprintln!("WARNING: the Ray Client server was not started: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn touch_exe(p: &Path) {
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_interpreter_next_to_ray_wins_over_the_path() {
        let dir = std::env::temp_dir().join(format!("ray-cs-{}", std::process::id()));
        let (bin, other) = (dir.join("venv/bin"), dir.join("usr/bin"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        touch_exe(&other.join("python3"));
        let ray = bin.join("ray");
        let path = std::env::join_paths([&other]).unwrap();
        let found = || python_interpreter(Some(ray.as_path()), Some(path.as_os_str()));
        assert_eq!(found(), Some(other.join("python3")));
        touch_exe(&bin.join("python"));
        assert_eq!(found(), Some(bin.join("python")));
        touch_exe(&bin.join("python3"));
        assert_eq!(found(), Some(bin.join("python3")));
        assert_eq!(python_interpreter(None, None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
