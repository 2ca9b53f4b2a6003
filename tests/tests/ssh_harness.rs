//! The SSH test harness ([`SshHosts`]): real sshd servers on loopback addresses, each
//! behaving like a separate machine (own HOME, RAY_TMPDIR, PATH), that can be stopped
//! and restarted, and that leave nothing behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ray_tests::{SshHosts, wait_until};

/// A bin folder with stub `ray` and `python` executables.
fn fake_bin() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("raysshbin").tempdir().expect("tempdir");
    for name in ["ray", "python"] {
        let p = dir.path().join(name);
        fs::write(&p, format!("#!/bin/sh\necho stub {name} \"$@\"\n")).expect("stub");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|st| st != "Z"))
}

fn sshd_pid(hosts: &SshHosts, i: usize) -> u32 {
    fs::read_to_string(hosts.host_dir(i).join("sshd.pid")).expect("sshd pid file").trim().parse().expect("pid")
}

#[test]
fn each_host_has_its_own_home_tmpdir_and_the_bin_folder_first() {
    let bin = fake_bin();
    let hosts = SshHosts::start_with_bin(3, bin.path());
    assert_eq!(hosts.len(), 3);
    let (a, b) = hosts.block();
    let expected_ips: Vec<String> = (2..5).map(|d| format!("127.{a}.{b}.{d}")).collect();
    assert_eq!(hosts.ips(), expected_ips);

    for i in 0..3 {
        let out = hosts.ssh_ok(i, "echo $HOME $RAY_TMPDIR; which ray python; pwd; echo $SSH_CONNECTION; whoami");
        let lines: Vec<&str> = out.lines().collect();
        let home = hosts.home(i).display().to_string();
        let tmp = hosts.ray_tmpdir(i).display().to_string();
        assert_eq!(lines[0], format!("{home} {tmp}"), "host {i}: {out}");
        assert_eq!(lines[1], bin.path().join("ray").display().to_string(), "host {i}: {out}");
        assert_eq!(lines[2], bin.path().join("python").display().to_string(), "host {i}: {out}");
        assert_eq!(lines[3], home, "host {i}: sessions start in their HOME: {out}");
        // The session really is on host i's address (its own sshd).
        assert_eq!(lines[4].split_whitespace().nth(2), Some(hosts.ips()[i].as_str()), "host {i}: {out}");
        assert_eq!(lines[5], "root");
        // Each host's folders are its own.
        for j in (0..3).filter(|j| *j != i) {
            assert_ne!(hosts.home(i), hosts.home(j));
            assert_ne!(hosts.ray_tmpdir(i), hosts.ray_tmpdir(j));
        }
        // Login shells (Ray's command runner uses `bash --login`) keep the bin folder first,
        // although Debian's /etc/profile resets PATH.
        let login = hosts.ssh_ok(i, "bash --login -c 'echo $HOME $RAY_TMPDIR; which ray python'");
        assert_eq!(login, format!("{home} {tmp}\n{}/ray\n{}/python\n", bin.path().display(), bin.path().display()));
        // Ray's command runner style: an interactive login shell without a terminal.
        let interactive = hosts.ssh_ok(i, "bash --login -c -i 'echo $HOME; which ray'");
        assert_eq!(interactive, format!("{home}\n{}/ray\n", bin.path().display()));
        assert!(hosts.log(i).contains("Accepted publickey for root"), "host {i} log:\n{}", hosts.log(i));
    }
    // The bin folder's executables run; the remote exit status comes back.
    assert_eq!(hosts.ssh_ok(1, "ray --version"), "stub ray --version\n");
    assert_eq!(hosts.ssh(2, "exit 7").status.code(), Some(7));
}

#[test]
fn the_default_bin_folder_is_ray_bins() {
    let hosts = SshHosts::start(1);
    let ray = ray_tests::ray_bin();
    assert_eq!(hosts.bin(), ray.parent().unwrap());
    assert_eq!(hosts.ssh_ok(0, "which ray"), format!("{}\n", ray.display()));
}

#[test]
fn rsync_lands_only_in_that_hosts_home() {
    let hosts = SshHosts::start_with_bin(3, fake_bin().path());
    let src = tempfile::tempdir().expect("tempdir");
    let name = format!("payload-{}.txt", std::process::id());
    let file = src.path().join(&name);
    fs::write(&file, "hello host 1\n").expect("write");

    // As the launcher would: rsync -e "ssh -i KEY -o ..." FILE root@HOST:~/
    let out = Command::new("rsync")
        .arg("-e")
        .arg(hosts.ssh_command_line())
        .arg(&file)
        .arg(format!("{}:~/", hosts.destination(1)))
        .stdin(Stdio::null())
        .output()
        .expect("rsync");
    assert!(out.status.success(), "rsync: {}\nlog:\n{}", stderr(&out), hosts.log(1));
    assert_eq!(fs::read_to_string(hosts.home(1).join(&name)).unwrap(), "hello host 1\n");
    for i in [0, 2] {
        assert!(!hosts.home(i).join(&name).exists(), "the file reached host {i}");
    }
    assert!(!Path::new("/root").join(&name).exists(), "the file reached root's real home");
    assert_eq!(hosts.ssh_ok(1, &format!("cat ~/{name}")), "hello host 1\n");
    assert_eq!(hosts.ssh(0, &format!("cat ~/{name}")).status.code(), Some(1));

    // Relative remote paths are in the host's HOME too (sessions start there), for rsync
    // and for scp (the sftp subsystem).
    let out = hosts.rsync_up(2, &file, "relative.txt");
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    assert!(hosts.home(2).join("relative.txt").exists());
    let out = Command::new("scp")
        .args(hosts.ssh_options())
        .arg(&file)
        .arg(format!("{}:by-scp.txt", hosts.destination(0)))
        .stdin(Stdio::null())
        .output()
        .expect("scp");
    assert!(out.status.success(), "scp: {}\nlog:\n{}", stderr(&out), hosts.log(0));
    assert!(hosts.home(0).join("by-scp.txt").exists());
    for p in ["relative.txt", "by-scp.txt"] {
        assert!(!Path::new("/root").join(p).exists(), "{p} reached root's real home");
    }
}

#[test]
fn a_stopped_host_refuses_connections_and_works_again_after_a_restart() {
    let mut hosts = SshHosts::start_with_bin(3, fake_bin().path());
    hosts.ssh_ok(1, "echo kept > ~/kept.txt");
    // An open session on the host.
    let mut session = hosts.ssh_command(1, "sleep 600").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ssh");
    let sshd = sshd_pid(&hosts, 1);
    assert!(wait_until(Duration::from_secs(10), || hosts.log(1).contains("Accepted publickey")));

    hosts.stop(1);
    assert!(!hosts.is_running(1));
    assert!(!pid_alive(sshd));
    let out = hosts.ssh(1, "echo hi");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("Connection refused"), "{}", stderr(&out));
    // Its open connection went with it.
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || session.try_wait().expect("try_wait").is_some()),
        "the open session survived the stop"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // The other hosts are unaffected.
    assert_eq!(hosts.ssh_ok(0, "echo up"), "up\n");
    assert_eq!(hosts.ssh_ok(2, "echo up"), "up\n");
    hosts.stop(1); // no-op

    hosts.restart(1);
    assert!(hosts.is_running(1));
    assert_eq!(hosts.ssh_ok(1, "cat kept.txt; echo $HOME"), format!("kept\n{}\n", hosts.home(1).display()));
    hosts.restart(1); // no-op
    assert_eq!(hosts.ssh_ok(1, "echo again"), "again\n");
}

#[test]
fn two_harnesses_at_once_use_different_addresses() {
    let bin = fake_bin();
    // Started concurrently, as parallel tests would.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| SshHosts::start_with_bin(2, bin.path()));
        let b = s.spawn(|| SshHosts::start_with_bin(2, bin.path()));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.block(), b.block());
    for ip in a.ips() {
        assert!(!b.ips().contains(&ip));
    }
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.key(), b.key());
    for i in 0..2 {
        assert_eq!(a.ssh_ok(i, "echo $HOME"), format!("{}\n", a.home(i).display()));
        assert_eq!(b.ssh_ok(i, "echo $HOME"), format!("{}\n", b.home(i).display()));
    }
    // One harness's key is not the other's.
    let out = Command::new("ssh")
        .args(a.ssh_options())
        .arg(b.destination(0))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert_eq!(out.status.code(), Some(255), "a's key logged in on b: {}", stderr(&out));
}

#[test]
fn drop_kills_every_sshd_and_what_sessions_left_and_removes_the_folder() {
    let hosts = SshHosts::start_with_bin(2, fake_bin().path());
    let dir: PathBuf = hosts.dir().to_path_buf();
    let sshds: Vec<u32> = (0..2).map(|i| sshd_pid(&hosts, i)).collect();
    // A daemon a session left behind, and a session still open.
    let daemon: u32 = hosts
        .ssh_ok(0, "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")
        .trim()
        .parse()
        .expect("daemon pid");
    let mut session = hosts.ssh_command(1, "sleep 600").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("ssh");
    assert!(wait_until(Duration::from_secs(10), || hosts.log(1).contains("Accepted publickey")));
    assert!(pid_alive(daemon));
    let ips: Vec<std::net::Ipv4Addr> = (0..2).map(|i| hosts.ip(i)).collect();

    drop(hosts);
    for p in sshds.iter().chain([&daemon]) {
        assert!(wait_until(Duration::from_secs(5), || !pid_alive(*p)), "pid {p} outlived the harness");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(wait_until(Duration::from_secs(10), || session.try_wait().expect("try_wait").is_some()));
    // Port 22 of its addresses is free again.
    for ip in ips {
        std::net::TcpListener::bind((ip, 22)).unwrap_or_else(|e| panic!("{ip}:22 still taken: {e}"));
    }
}
