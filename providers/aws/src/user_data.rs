//! Launching a worker through cloud-init (`provider.launch_via: user_data`): the
//! instance's user data is a shell script that exports what Ray's start commands
//! expect (`RAY_HEAD_IP`, `RAY_CLOUD_INSTANCE_ID` read from the instance
//! metadata service, the cluster token) and runs the node type's setup and start
//! commands, so a worker joins the head with no SSH from the head.
//!
//! The script holds the cluster token: anyone who may read the instance's user
//! data (processes on the instance through the metadata service, principals with
//! `ec2:DescribeInstanceAttribute`) can read it. ARCHITECTURE.md says so.

/// The metadata endpoint the script and the raylet's spot watcher use:
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` (as the AWS SDKs read it), else EC2's.
pub const IMDS_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The boot script of one worker. `env` is exported first (head address, token,
/// node type, resources); `commands` run in order, the first failure stops it.
/// cloud-init runs user data as root; with `run_as` (the config's `ssh_user`,
/// the account an SSH set-up would have used) the commands run as that user, from
/// a file only that user can read (it holds the token), removed afterwards.
pub fn script(env: &[(String, String)], commands: &[String], run_as: Option<&str>) -> String {
    let mut inner = String::from("set -euo pipefail\n");
    inner.push_str(&format!("IMDS=\"${{{IMDS_ENV}:-http://169.254.169.254}}\"\nIMDS=\"${{IMDS%/}}\"\n"));
    inner.push_str(
        "IMDS_TOKEN=$(curl -sf -X PUT \"$IMDS/latest/api/token\" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' || true)\n\
         export RAY_CLOUD_INSTANCE_ID=$(curl -sf -H \"X-aws-ec2-metadata-token: $IMDS_TOKEN\" \"$IMDS/latest/meta-data/instance-id\")\n",
    );
    for (k, v) in env {
        inner.push_str(&format!("export {k}={}\n", quote(v)));
    }
    for c in commands {
        inner.push_str(c);
        inner.push('\n');
    }
    let mut s = String::from("#!/bin/bash\n# Written by the ray-rs AWS provider: joins this instance to its Ray cluster.\nset -eu\n");
    s.push_str("BOOT=$(mktemp /tmp/ray-boot.XXXXXX)\ntrap 'rm -f \"$BOOT\"' EXIT\ncat > \"$BOOT\" <<'RAY_BOOT_SCRIPT_END'\n");
    s.push_str(&inner);
    s.push_str("RAY_BOOT_SCRIPT_END\n");
    match run_as.filter(|u| !u.is_empty() && *u != "root") {
        Some(user) => {
            let u = quote(user);
            s.push_str(&format!("chown {u} \"$BOOT\"\nsudo -u {u} -H --preserve-env={IMDS_ENV} bash -l \"$BOOT\"\n"));
        }
        None => s.push_str("bash -l \"$BOOT\"\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_then_runs_the_commands_in_order() {
        let env = vec![("RAY_HEAD_IP".to_string(), "10.0.0.1".to_string()), ("X".to_string(), "it's".to_string())];
        let s = script(&env, &["ray stop".into(), "ray start --address=$RAY_HEAD_IP:6379".into()], Some("ubuntu"));
        assert!(s.starts_with("#!/bin/bash\n"));
        let head = s.find("export RAY_HEAD_IP='10.0.0.1'").unwrap();
        let id = s.find("export RAY_CLOUD_INSTANCE_ID=").unwrap();
        let start = s.find("ray start --address").unwrap();
        assert!(id < head && head < s.find("ray stop").unwrap() && s.find("ray stop").unwrap() < start);
        assert!(s.contains(r"export X='it'\''s'"));
        assert!(s.contains("sudo -u 'ubuntu' -H"), "runs as the ssh user: {s}");
        assert!(!script(&env, &[], Some("root")).contains("sudo"));
    }
}
