//! Process helpers: names in `ps`, liveness checks that survive pid reuse, signals.

use std::path::Path;

/// Sets the name shown by `ps -e`, `top` and `pkill` (Linux `comm`, 15 bytes max).
pub fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from buf.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// The start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); with the pid it names one process for good.
pub fn start_time_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come fields 3.. ; start time is field 22, i.e. index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is alive, is not a zombie, and started at `start_ticks`.
pub fn is_same_process_alive(pid: u32, start_ticks: u64) -> bool {
    if start_time_ticks(pid) != Some(start_ticks) {
        return false;
    }
    !is_zombie(pid)
}

/// True when the process has exited but was not reaped yet.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Sends a signal; false when the process is gone.
pub fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Resident set size of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Total CPU time (user + system) of a process in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. indices 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// Asks the kernel to send `sig` to this process when its parent exits. Call from
/// a child between fork and exec (`pre_exec`).
pub fn set_parent_death_signal(sig: i32) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Raises the open-file limit to its hard maximum (a GCS serves a connection per
/// node; the usual soft limit of 1024 is too low for large clusters).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A command that starts this cluster's executable `exe` as a daemon named `argv0`
/// (Ray's `--flag=value` form for `args`), in a session of its own (so a Ctrl-C in
/// the terminal does not reach it), with `env` added and stdout and stderr going
/// to `log`. Everyone who starts a daemon (`ray start`, the local-process
/// provider) builds it here.
pub fn daemon_command(exe: &Path, argv0: &str, args: &[String], env: &[(String, String)], log: std::fs::File) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt as _;
    let err = log.try_clone()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0(argv0)
        .args(joined_flags(args))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log))
        .stderr(std::process::Stdio::from(err));
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    Ok(cmd)
}

/// Joins `["--flag", "value"]` pairs into `"--flag=value"`, the form Ray's own
/// processes use on their command lines (tools that scan `ps` for Ray processes
/// parse it that way).
pub fn joined_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match args.get(i + 1) {
            Some(v) if a.starts_with("--") && !a.contains('=') && !v.starts_with("--") => {
                out.push(format!("{a}={v}"));
                i += 2;
            }
            _ => {
                out.push(a.clone());
                i += 1;
            }
        }
    }
    out
}

/// The value of `--flag` on a command line, in either form.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// A process's command line.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// The path of the running executable.
pub fn current_exe() -> std::io::Result<std::path::PathBuf> {
    std::env::current_exe()
}

/// True when `path` names an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_joined_and_read_back() {
        let args: Vec<String> = ["--head", "--port", "0", "--resources", "{\"A\": 1}", "--block"].iter().map(|s| s.to_string()).collect();
        let j = joined_flags(&args);
        assert_eq!(j, ["--head", "--port=0", "--resources={\"A\": 1}", "--block"]);
        assert_eq!(flag_value(&j, "--port"), Some("0"));
        assert_eq!(flag_value(&args, "--port"), Some("0"));
        assert_eq!(flag_value(&j, "--missing"), None);
    }

    #[test]
    fn own_process_is_alive_and_has_rss() {
        let pid = std::process::id();
        let t = start_time_ticks(pid).expect("start time");
        assert!(is_same_process_alive(pid, t));
        assert!(!is_same_process_alive(pid, t + 1));
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }
}
