//! Real `sshd` servers on loopback addresses, one per simulated machine, for the
//! cluster launcher's tests (Ray's `local` provider: `head_ip`, `worker_ips`, SSH).
//!
//! [`SshHosts::start`] starts N `sshd -D -e -f <config>` processes, each listening on
//! port 22 of its own loopback address, and makes each address behave like a separate
//! machine for Ray:
//!
//! - **HOME, RAY_TMPDIR, PATH, RAY_NODE_IP_ADDRESS**: `SetEnv` in that host's sshd
//!   config gives every session on the address its own `HOME` and `RAY_TMPDIR`
//!   (folders under the harness's temp folder), a `PATH` with the given bin folder
//!   (where `ray` and `python` live) first, and the host's address as the node IP
//!   `ray start` and drivers use (on a real machine that is its own address; here
//!   every host shares the loopback interface, whose default source is 127.0.0.1). `SetEnv` overrides `HOME` (checked on OpenSSH 9.2, Debian 12; the tests check
//!   it on every run).
//! - **Working directory**: sshd always starts sessions in the user's passwd home
//!   (`/root`), whatever `HOME` says, so relative paths (`rsync f host:f`,
//!   `touch f`) would land in one folder shared by every host. A `ForceCommand`
//!   wrapper (`session.sh`) therefore does `cd "$HOME"` and then runs the client's
//!   command exactly as sshd would (`$SHELL -c "$SSH_ORIGINAL_COMMAND"`, or a login
//!   shell when there is none; the sftp subsystem is the external `sftp-server`, so
//!   it runs through the wrapper too).
//! - **Login shells**: Debian's `/etc/profile` resets `PATH`, so `bash --login`
//!   (which Ray's command runner uses) would lose the bin folder. Each host's HOME has
//!   a `.profile` that puts the bin folder first again, as the profile of a machine
//!   with Ray installed would.
//! - **Authentication**: user `root`, one ed25519 client key (no passphrase; made by
//!   `ssh-keygen` in the temp folder) in an `authorized_keys` file, no passwords, no
//!   PAM, `StrictModes no`; one host key shared by all hosts (clients use
//!   `StrictHostKeyChecking=no`, `UserKnownHostsFile=/dev/null`).
//! - **Debugging**: each host has its own folder with its config, `PidFile` and
//!   `sshd.log` (sshd's `-e` output at `LogLevel VERBOSE`; see [`SshHosts::log`]).
//!
//! # Addresses
//!
//! Each `SshHosts` takes a /24 of its own, `127.A.B.0/24` with `A` in 100..=163 (16384
//! blocks; the rest of the project only uses 127.0.0.1), and its hosts are
//! `127.A.B.2` ... `127.A.B.(N+1)` (at most 253 hosts). Linux routes all of 127/8 to
//! `lo`, so nothing needs configuring. A block is claimed by binding the *abstract*
//! Unix socket `@ray-rs-ssh-hosts/127.A.B` for the lifetime of the `SshHosts`: the
//! name is unique per network namespace, so two `SshHosts` (in one test process or in
//! parallel nextest processes) never hold the same block, and the kernel frees it when
//! the process ends, even if it is killed. The search starts at a block derived from
//! the pid and a per-process counter and moves on to the next block when the claim is
//! taken, when port 22 of one of the addresses cannot be bound (probe-bind) or when an
//! sshd fails with "Address already in use" (someone outside this scheme).
//!
//! # Lifetime
//!
//! Construction returns once every sshd accepts TCP connections. [`SshHosts::stop`]
//! kills one host's sshd and its open connections (new connections are then refused,
//! like an unreachable machine's); [`SshHosts::restart`] starts it again on the same
//! address. Drop kills every sshd with its connections, then every process still
//! running with that host's `HOME` in its environment (what sessions left behind, such
//! as daemons started over ssh), and removes the temp folder.
//!
//! # Requirements
//!
//! Root (port 22, `root` login), `/usr/sbin/sshd`, `ssh`, `ssh-keygen` and `rsync`:
//! `scripts/test.sh` installs them. A missing tool is a panic, never a skipped test.
//!
//! ```no_run
//! use ray_tests::ssh::SshHosts;
//! let hosts = SshHosts::start(3); // `ray`/`python`: the folder of `ray_bin()`
//! let out = hosts.ssh_ok(1, "echo $HOME; ray --version");
//! assert!(out.starts_with(hosts.home(1).to_str().unwrap()));
//! let yaml = hosts.provider_yaml(); // provider: {type: local, head_ip: <host 0>, worker_ips: [...]}, auth: {...}
//! # let _ = yaml;
//! ```

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The user every host accepts (with the harness's key only).
pub const SSH_USER: &str = "root";

/// First value of the second octet of the claimed blocks (127.A.B.0/24).
const FIRST_A: u32 = 100;
/// Number of claimable /24 blocks: A in 100..=163, B in 0..=255.
const BLOCKS: u32 = 64 * 256;
/// Blocks tried before giving up.
const MAX_BLOCK_TRIES: u32 = 64;
/// How long an sshd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs every session's command from the host's own HOME (see the module docs).
const SESSION_WRAPPER: &str = r#"#!/bin/sh
# ForceCommand of the test sshds: sshd starts sessions in the passwd home (/root); start
# them in $HOME (this host's own home, set by SetEnv) instead, then run what the client
# asked for as sshd would have: `$SHELL -c COMMAND`, or a login shell when there is none.
cd "$HOME" || exit 1
if [ -n "${SSH_ORIGINAL_COMMAND:-}" ]; then
    cmd=$SSH_ORIGINAL_COMMAND
    unset SSH_ORIGINAL_COMMAND
    exec "$SHELL" -c "$cmd"
fi
exec "$SHELL" -l
"#;

/// `PATH` after the bin folder (Debian's default for root).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One simulated machine: an sshd on its own loopback address.
struct Host {
    ip: Ipv4Addr,
    dir: PathBuf,
    home: PathBuf,
    ray_tmpdir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    sshd: Option<Child>,
}

/// N real sshd servers on loopback addresses of a /24 of their own; see the module docs.
pub struct SshHosts {
    hosts: Vec<Host>,
    sshd: PathBuf,
    key: PathBuf,
    bin: PathBuf,
    block: (u8, u8),
    // Dropped (in this order) after the sshds are killed, see Drop.
    tmp: Option<tempfile::TempDir>,
    claim: Option<UnixListener>,
}

/// Why one host's sshd did not come up.
enum StartError {
    AddrInUse,
    Other(String),
}

impl SshHosts {
    /// `n` hosts whose sessions find `ray` and `python` in the folder of
    /// [`crate::ray_bin`] (the repository's `.venv/bin`, or `$RAY_BIN`'s folder).
    pub fn start(n: usize) -> Self {
        let ray = crate::ray_bin();
        Self::start_with_bin(n, ray.parent().expect("ray_bin() has a parent folder"))
    }

    /// `n` hosts (1..=253) whose sessions have `bin` first in `PATH`.
    pub fn start_with_bin(n: usize, bin: impl AsRef<Path>) -> Self {
        assert!((1..=253).contains(&n), "SshHosts: 1 to 253 hosts, not {n}");
        let bin = std::path::absolute(bin.as_ref()).expect("absolute bin folder");
        let sshd = require_tool("sshd");
        require_tool("ssh");
        require_tool("rsync");
        let keygen = require_tool("ssh-keygen");
        // sshd's privilege separation folder (scripts/test.sh creates it too).
        fs::create_dir_all("/run/sshd").expect("cannot create /run/sshd (the SSH tests run as root)");

        let tmp = tempfile::Builder::new().prefix("raysshd").tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let key = root.join("id_ed25519");
        let host_key = root.join("ssh_host_ed25519_key");
        keygen_ed25519(&keygen, &key, "ray-tests-client");
        keygen_ed25519(&keygen, &host_key, "ray-tests-host");
        fs::copy(key.with_extension("pub"), root.join("authorized_keys")).expect("authorized_keys");
        let wrapper = root.join("session.sh");
        fs::write(&wrapper, SESSION_WRAPPER).expect("session wrapper");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod session wrapper");

        let mut me = SshHosts { hosts: Vec::new(), sshd, key, bin, block: (0, 0), tmp: Some(tmp), claim: None };
        let first = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(97));
        let mut skipped = Vec::new();
        for attempt in 0..MAX_BLOCK_TRIES {
            let idx = first.wrapping_add(attempt) % BLOCKS;
            let block = ((FIRST_A + idx / 256) as u8, (idx % 256) as u8);
            let Some(claim) = claim_block(block) else { continue };
            let ips: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(127, block.0, block.1, i as u8 + 2)).collect();
            if let Some((ip, e)) = ips.iter().find_map(|ip| probe_port_22(*ip).err().map(|e| (*ip, e))) {
                skipped.push(format!("{ip}:22: {e}"));
                continue;
            }
            me.claim = Some(claim);
            me.block = block;
            me.hosts = ips.iter().enumerate().map(|(i, ip)| me.write_host(i, *ip, &host_key, &wrapper)).collect();
            match me.start_all() {
                Ok(()) => return me,
                Err(StartError::AddrInUse) => {
                    skipped.push(format!("127.{}.{}.0/24: sshd: Address already in use", block.0, block.1));
                    for i in 0..n {
                        me.stop(i);
                    }
                    me.hosts.clear();
                    me.claim = None;
                }
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "SshHosts: no free 127.A.B.0/24 block for {n} sshd servers after {MAX_BLOCK_TRIES} tries (is a system sshd \
             listening on *:22? it takes port 22 of every loopback address; stop it). Skipped ({}): {:?}",
            skipped.len(),
            &skipped[..skipped.len().min(3)]
        );
    }

    /// Writes host `i`'s folders, `.profile` and sshd config.
    fn write_host(&self, i: usize, ip: Ipv4Addr, host_key: &Path, wrapper: &Path) -> Host {
        let root = self.dir();
        let dir = root.join(format!("host{i}"));
        let home = dir.join("home");
        let ray_tmpdir = dir.join("tmp");
        fs::create_dir_all(&home).expect("host home");
        fs::create_dir_all(&ray_tmpdir).expect("host RAY_TMPDIR");
        let bin = self.bin.display();
        fs::write(
            home.join(".profile"),
            format!(
                "# Login shells: Debian's /etc/profile resets PATH; this host's `ray` and `python` come first.\n\
                 case \":$PATH:\" in *\":{bin}:\"*) ;; *) PATH=\"{bin}:$PATH\" ;; esac\nexport PATH\n"
            ),
        )
        .expect("host .profile");
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        let q = |p: &Path| format!("\"{}\"", p.display());
        let text = format!(
            "# sshd of test host {i} ({ip}), written by ray-tests' SshHosts.\n\
             ListenAddress {ip}:22\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {auth}\n\
             PermitRootLogin prohibit-password\n\
             AuthenticationMethods publickey\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             LogLevel VERBOSE\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             AllowAgentForwarding no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             SetEnv \"HOME={home}\" \"RAY_TMPDIR={tmp}\" \"PATH={bin}:{SYSTEM_PATH}\" \"RAY_NODE_IP_ADDRESS={ip}\"\n\
             ForceCommand {wrapper}\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            host_key = q(host_key),
            pid = q(&dir.join("sshd.pid")),
            auth = q(&root.join("authorized_keys")),
            home = home.display(),
            tmp = ray_tmpdir.display(),
            wrapper = q(wrapper),
        );
        fs::write(&config, text).expect("sshd config");
        Host { ip, dir, home, ray_tmpdir, config, log, sshd: None }
    }

    /// Spawns every host's sshd, then waits for all of them.
    fn start_all(&mut self) -> Result<(), StartError> {
        for i in 0..self.hosts.len() {
            self.spawn(i);
        }
        for i in 0..self.hosts.len() {
            self.wait_ready(i)?;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let log = OpenOptions::new().create(true).append(true).open(&h.log).expect("sshd log");
        let child = Command::new(&self.sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&h.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("sshd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.sshd.display()));
        h.sshd = Some(child);
    }

    /// Waits until host `i`'s sshd accepts TCP connections on port 22.
    fn wait_ready(&mut self, i: usize) -> Result<(), StartError> {
        let h = &mut self.hosts[i];
        let addr = SocketAddr::from((h.ip, 22));
        let start = Instant::now();
        loop {
            let child = h.sshd.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                h.sshd = None;
                let log = fs::read_to_string(&h.log).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(StartError::AddrInUse);
                }
                return Err(StartError::Other(format!(
                    "sshd of test host {i} ({}) exited ({status}) before accepting connections; config {}, log:\n{log}",
                    h.ip,
                    h.config.display()
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(StartError::Other(format!(
                    "sshd of test host {i} ({}) did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                    h.ip,
                    fs::read_to_string(&h.log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Always false: there is at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i`'s address (`127.A.B.(i+2)`).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].ip
    }

    /// Every host's address, as strings, in order.
    pub fn ips(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.ip.to_string()).collect()
    }

    /// The claimed block: hosts are `127.A.B.2` ... (`(A, B)`).
    pub fn block(&self) -> (u8, u8) {
        self.block
    }

    /// `root@<address of host i>`.
    pub fn destination(&self, i: usize) -> String {
        format!("{SSH_USER}@{}", self.hosts[i].ip)
    }

    /// The ssh user every host accepts (`root`).
    pub fn user(&self) -> &'static str {
        SSH_USER
    }

    /// The client's private key (ed25519, no passphrase).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The bin folder first in every session's `PATH`.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The harness's temp folder (keys, `session.sh`, and one `host<i>` folder per host).
    pub fn dir(&self) -> &Path {
        self.tmp.as_ref().expect("temp folder").path()
    }

    /// Host `i`'s folder (`sshd_config`, `sshd.pid`, `sshd.log`, `home/`, `tmp/`).
    pub fn host_dir(&self, i: usize) -> &Path {
        &self.hosts[i].dir
    }

    /// `HOME` of sessions on host `i` (also their working directory).
    pub fn home(&self, i: usize) -> &Path {
        &self.hosts[i].home
    }

    /// `RAY_TMPDIR` of sessions on host `i`.
    pub fn ray_tmpdir(&self, i: usize) -> &Path {
        &self.hosts[i].ray_tmpdir
    }

    /// Host `i`'s sshd log file.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.hosts[i].log
    }

    /// Host `i`'s sshd log so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    /// The client options: `-i KEY -o StrictHostKeyChecking=no -o
    /// UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o
    /// LogLevel=ERROR -o ConnectTimeout=10`.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut v = vec!["-i".to_string(), self.key.display().to_string()];
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "ConnectTimeout=10",
        ] {
            v.push("-o".to_string());
            v.push(o.to_string());
        }
        v
    }

    /// `ssh` and [`Self::ssh_options`] as one shell-quoted line (for `rsync -e`).
    pub fn ssh_command_line(&self) -> String {
        let mut words = vec!["ssh".to_string()];
        words.extend(self.ssh_options());
        words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
    }

    /// `ssh OPTIONS root@HOST -- CMD` (not started; stdin is null). The remote shell
    /// (bash) runs `cmd` from host `i`'s HOME.
    pub fn ssh_command(&self, i: usize, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_options()).arg(self.destination(i)).arg("--").arg(cmd).stdin(Stdio::null());
        c
    }

    /// Runs `cmd` on host `i` over ssh (exit status 255: ssh itself failed).
    pub fn ssh(&self, i: usize, cmd: &str) -> Output {
        self.ssh_command(i, cmd).output().expect("cannot run ssh")
    }

    /// Runs `cmd` on host `i`, asserting success; returns stdout.
    pub fn ssh_ok(&self, i: usize, cmd: &str) -> String {
        let out = self.ssh(i, cmd);
        assert!(
            out.status.success(),
            "ssh to test host {i} ({}) `{cmd}` failed ({}):\nstdout:\n{}\nstderr:\n{}\nsshd log:\n{}",
            self.hosts[i].ip,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log(i)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rsync -a -e "<ssh command line>" LOCAL root@HOST:REMOTE` (`~/...` and relative
    /// `REMOTE` paths are in host `i`'s HOME).
    pub fn rsync_up(&self, i: usize, local: &Path, remote: &str) -> Output {
        Command::new("rsync")
            .arg("-a")
            .arg("-e")
            .arg(self.ssh_command_line())
            .arg(local)
            .arg(format!("{}:{remote}", self.destination(i)))
            .stdin(Stdio::null())
            .output()
            .expect("cannot run rsync")
    }

    /// The `provider` and `auth` sections of a cluster config for Ray's `local`
    /// provider: host 0 is the head, the others are the workers.
    pub fn provider_yaml(&self) -> String {
        let ips = self.ips();
        format!(
            "provider:\n  type: local\n  head_ip: {}\n  worker_ips: [{}]\nauth:\n  ssh_user: {SSH_USER}\n  ssh_private_key: {}\n",
            ips[0],
            ips[1..].join(", "),
            self.key.display()
        )
    }

    /// Ray processes still alive on host `i` (as its own `ray stop` would find them).
    pub fn live_ray_processes(&self, i: usize) -> Vec<String> {
        let root = self.ray_tmpdir(i).join("ray");
        ray_common::session::list_processes(&root)
            .into_iter()
            .filter(|r| ray_common::process::is_same_process_alive(r.pid, r.start_ticks))
            .map(|r| format!("{} (pid {})", r.name, r.pid))
            .collect()
    }

    /// Whether host `i`'s sshd is running (not [stopped](Self::stop)).
    pub fn is_running(&mut self, i: usize) -> bool {
        let h = &mut self.hosts[i];
        match h.sshd.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                h.sshd = None;
                false
            }
            None => false,
        }
    }

    /// Kills host `i`'s sshd and its open connections: connecting to the address is
    /// then refused, like an unreachable machine's. Processes that sessions started and
    /// that outlive them stay (see [`Self::kill_processes`]). No-op when stopped.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.hosts[i].sshd.take() else { return };
        let pid = child.id();
        // Frozen, the listener forks no new connection while its children are collected.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let children = descendants(pid);
        let _ = child.kill();
        let _ = child.wait();
        for p in children {
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }

    /// Starts host `i`'s sshd again (same address, config, keys and folders) and waits
    /// until it accepts connections. No-op when running.
    pub fn restart(&mut self, i: usize) {
        if self.is_running(i) {
            return;
        }
        self.spawn(i);
        match self.wait_ready(i) {
            Ok(()) => {}
            Err(StartError::AddrInUse) => panic!("restarting test host {i}: port 22 of {} is taken", self.hosts[i].ip),
            Err(StartError::Other(msg)) => panic!("restarting test host {i}: {msg}"),
        }
    }

    /// Kills (SIGKILL) every process whose environment has host `i`'s `HOME`: what its
    /// sessions started (e.g. daemons), as if the machine went down. Returns their pids.
    pub fn kill_processes(&self, i: usize) -> Vec<u32> {
        let marker = format!("HOME={}", self.hosts[i].home.display()).into_bytes();
        let pids = pids_with_env(&marker);
        for p in &pids {
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        crate::wait_until(Duration::from_secs(5), || pids_with_env(&marker).is_empty());
        pids
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop(i);
        }
        for i in 0..self.hosts.len() {
            self.kill_processes(i);
        }
        drop(self.tmp.take());
        drop(self.claim.take());
    }
}

/// The path of a tool the harness needs; panics (never skips) when it is missing.
fn require_tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    // sshd needs an absolute path (it re-executes itself) and lives in /usr/sbin.
    let fallback = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    dirs.iter()
        .chain(fallback.iter())
        .map(|d| d.join(name))
        .find(|p| p.is_absolute() && p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is missing: the SSH tests need openssh-server, openssh-client and rsync; run scripts/test.sh \
                 (it installs them) or `apt-get install -y --no-install-recommends openssh-server rsync`"
            )
        })
}

fn keygen_ed25519(keygen: &Path, path: &Path, comment: &str) {
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// `word` quoted for a POSIX shell (unchanged when it only has safe characters).
fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Claims `127.A.B.0/24` for this `SshHosts` (None: someone holds it).
fn claim_block((a, b): (u8, u8)) -> Option<UnixListener> {
    let name = format!("ray-rs-ssh-hosts/127.{a}.{b}");
    let addr = UnixSocketAddr::from_abstract_name(name.as_bytes()).expect("abstract socket name");
    match UnixListener::bind_addr(&addr) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == ErrorKind::AddrInUse => None,
        Err(e) => panic!("cannot bind the abstract socket @{name}: {e}"),
    }
}

/// Whether port 22 of `ip` can be bound (bound, then released at once).
fn probe_port_22(ip: Ipv4Addr) -> std::io::Result<()> {
    TcpListener::bind((ip, 22)).map(drop)
}

/// Every process below `pid` (by parent pid, from /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (p, stat) in proc_entries().filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok().map(|s| (p, s))) {
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}

/// Processes (not this one) with `entry` (`NAME=VALUE`) in their initial environment.
fn pids_with_env(entry: &[u8]) -> Vec<u32> {
    let me = std::process::id();
    proc_entries()
        .filter(|p| *p != me)
        .filter(|p| fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry)))
        .collect()
}

fn proc_entries() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok())
}
