"""The Terraform under infra/ (a Ray head node on AWS and on GCP) and its cloud-init
script: the files are formatted; the modules are wired as they must be (parsed
with python-hcl2); the user data, rendered with Terraform's own templatefile(),
runs and writes a cluster YAML that this project's config loader reads; and the
setup script on its own brings up a head whose autoscaler launches a worker, which
`ray stop` then ends."""

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import zipfile
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hcl2  # python-hcl2 (scripts/test.sh installs it); its absence fails the run
import pytest

import ray
from conftest import RAY, VENV_BIN

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCRIPT = INFRA / "cloud-init" / "ray-head-setup.sh"
TEMPLATE = INFRA / "cloud-init" / "head-user-data.sh.tftpl"
TEMPLATE_ARGS = {"env", "cluster_token", "setup_script", "setup_dir", "setup_log"}


def terraform_bin():
    path = shutil.which("terraform") or "/usr/local/bin/terraform"
    assert os.access(path, os.X_OK), "terraform is not installed (needed: `terraform fmt` and `terraform console`)"
    return path


def terraform(*args, cwd, stdin=None):
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [terraform_bin(), *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


# ---------------------------------------------------------------- parsing the modules


def _unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def _norm(v):
    if isinstance(v, dict):
        return {_unquote(k): _norm(x) for k, x in v.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def load_module(name):
    """Every block of infra/<name>/*.tf, merged: resource[type][name], data[type][name],
    variable[name], output[name], locals[name], provider[name], terraform[...]; and
    the raw text of all files."""
    m = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "provider": {}, "terraform": []}
    text = ""
    files = sorted((INFRA / name).glob("*.tf"))
    assert files, "no .tf files in infra/" + name
    for f in files:
        text += f.read_text() + "\n"
        with open(f) as fh:
            doc = _norm(hcl2.load(fh))
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for typ, by_name in block.items():
                    for n, body in by_name.items():
                        assert n not in m[kind].get(typ, {}), "{} {}.{} declared twice".format(kind, typ, n)
                        m[kind].setdefault(typ, {})[n] = body
        for kind in ("variable", "output", "provider"):
            for block in doc.get(kind, []):
                m[kind].update(block)
        for block in doc.get("locals", []):
            m["locals"].update(block)
        m["terraform"] += doc.get("terraform", [])
    m["text"] = text
    return m


def one(blocks):
    assert isinstance(blocks, list) and len(blocks) == 1, blocks
    return blocks[0]


def s(v):
    return json.dumps(v)


def templatefile_call(expr):
    """The arguments of the templatefile() call in `expr`, as the text between its
    parentheses; asserts it renders the shared cloud-init template."""
    assert "templatefile(" in expr, expr
    assert '"${path.module}/../cloud-init/head-user-data.sh.tftpl"' in expr, expr
    assert 'file("${path.module}/../cloud-init/ray-head-setup.sh")' in expr, expr
    return expr[expr.index("templatefile(") :]


def passed_args(call):
    """The top-level keys of the object passed to templatefile()."""
    obj = call[call.index('.tftpl", {') + len('.tftpl", ') :]
    depth, keys, cur = 0, [], ""
    for ch in obj:
        if ch in "{([":
            depth += 1
            if depth == 1:
                continue
        elif ch in "})]":
            depth -= 1
        if depth == 1 and ch == ",":
            cur = ""
            continue
        if depth == 1:
            cur += ch
            if cur.strip().endswith("=") and "=" not in cur.strip()[:-1]:
                keys.append(cur.strip()[:-1].strip())
        if depth == 0:
            break
    return set(keys)


def test_terraform_fmt_check_passes_on_all_of_infra():
    out = terraform("fmt", "-check", "-recursive", "-diff", "infra", cwd=ROOT)
    assert out.returncode == 0, "terraform fmt -check -recursive infra:\n" + out.stdout + out.stderr
    assert {"aws", "gcp"} <= {p.name for p in INFRA.iterdir() if p.is_dir()}


def test_required_providers_are_pinned():
    for name, cloud, version in (("aws", "aws", "~> 5"), ("gcp", "google", "~> 6")):
        m = load_module(name)
        req = one(one(m["terraform"])["required_providers"])
        assert _unquote(req[cloud]["source"]) == "hashicorp/" + cloud
        assert _unquote(req[cloud]["version"]).startswith(version), req
        assert _unquote(req["random"]["version"]).startswith("~> 3"), req
        assert "random_password" in m["resource"], "the cluster token is made with random_password"
        assert m["resource"]["random_password"]["cluster_token"]["length"] >= 32


def test_every_declared_variable_is_used():
    for name in ("aws", "gcp"):
        m = load_module(name)
        body = re.sub(r'variable "[^"]+" \{.*?\n\}\n', "", m["text"], flags=re.S)
        for v in m["variable"]:
            assert re.search(r"\bvar\.{}\b".format(v), body), "infra/{}: variable {} is declared but never used".format(
                name, v
            )
        for v in (
            "cluster_name", "region", "zone", "head_instance_type", "worker_instance_type", "min_workers",
            "max_workers", "image", "ssh_public_key", "install_spec", "ssh_cidrs", "dashboard_cidrs", "cluster_token",
        ):  # fmt: skip
            assert v in m["variable"], "infra/{} has no variable {}".format(name, v)
        assert "default" not in m["variable"]["ssh_cidrs"], "who may SSH in is the user's choice"
        assert m["variable"]["dashboard_cidrs"]["default"] == [], "the dashboard is closed by default"
        for out in ("head_public_ip", "head_private_ip", "ray_address", "ssh_command", "ray_status_command"):
            assert out in m["output"], "infra/{} has no output {}".format(name, out)
        commands = m["output"]["ray_commands"]["value"]
        for piece in ("ssh", "export RAY_ADDRESS=${local.gcs_addr}", "ray status", "ray monitor", "ray down"):
            assert piece in commands, piece
        assert "ray status" in m["output"]["ray_status_command"]["value"]
        assert "sensitive" in m["output"]["cluster_token"] and m["output"]["cluster_token"]["sensitive"] is True
        assert (INFRA / name / "README.md").is_file()


def env_map(m):
    env = m["locals"]["head_env"]
    assert isinstance(env, dict) and env, "locals.head_env: the settings the setup script reads"
    return env


def test_aws_module_is_wired():
    m = load_module("aws")
    res, env = m["resource"], env_map(m)
    assert m["provider"]["aws"]["region"] == "${var.region}"

    head = res["aws_instance"]["head"]
    call = templatefile_call(head["user_data_base64"])
    assert passed_args(call) == TEMPLATE_ARGS, call
    assert "env = local.head_env" in call
    assert head["instance_type"] == "${var.head_instance_type}"
    assert head["ami"] == "${local.image_id}" and "var.image" in m["locals"]["image_id"]
    assert head["iam_instance_profile"] == "${aws_iam_instance_profile.head.name}"
    assert head["vpc_security_group_ids"] == ["${aws_security_group.ray.id}"]
    assert head["subnet_id"] == "${local.subnet_id}" and "var.subnet_id" in m["locals"]["subnet_id"]
    assert "local.key_name" in head["key_name"]
    assert "var.key_name" in m["locals"]["key_name"] and "aws_key_pair.ray" in m["locals"]["key_name"]
    assert res["aws_key_pair"]["ray"]["public_key"] == "${var.ssh_public_key}"
    assert _unquote(one(head["metadata_options"])["http_tokens"]) == "required", "IMDSv2 only"
    assert "ray-cluster-name" not in s(head["tags"]), "the autoscaler's role must not be able to end the head"

    # The settings reach the template (and from there the cluster YAML).
    expect = {
        "RAY_PROVIDER": '"aws"', "RAY_CLUSTER_NAME": "var.cluster_name", "RAY_REGION": "var.region",
        "RAY_ZONE": "local.zone", "RAY_HEAD_INSTANCE_TYPE": "var.head_instance_type",
        "RAY_WORKER_INSTANCE_TYPE": "var.worker_instance_type", "RAY_MIN_WORKERS": "var.min_workers",
        "RAY_MAX_WORKERS": "var.max_workers", "RAY_WORKER_IMAGE": "local.image_id",
        "RAY_SUBNET_ID": "local.subnet_id", "RAY_SECURITY_GROUP_ID": "aws_security_group.ray.id",
        "RAY_WORKER_INSTANCE_PROFILE_ARN": "aws_iam_instance_profile.worker.arn", "RAY_KEY_NAME": "local.key_name",
        "RAY_INSTALL_SPEC": "var.install_spec", "RAY_USER": "var.ssh_user",
    }  # fmt: skip
    for k, ref in expect.items():
        assert ref in env.get(k, ""), "head_env.{} should come from {}: {}".format(k, ref, env.get(k))
    assert "var.zone" in res["aws_subnet"]["ray"]["availability_zone"]
    assert "aws_subnet.ray" in m["locals"]["zone"] and "data.aws_subnet.existing" in m["locals"]["zone"]

    # The network: made only when no subnet is given.
    for typ in ("aws_vpc", "aws_subnet", "aws_internet_gateway", "aws_route_table", "aws_route_table_association"):
        assert res[typ]["ray"]["count"] == '${var.subnet_id == "" ? 1 : 0}', typ
    assert m["data"]["aws_subnet"]["existing"]["id"] == "${var.subnet_id}"

    # The security group: all traffic between members, SSH from ssh_cidrs, 8265 only from dashboard_cidrs.
    sg = res["aws_security_group"]["ray"]
    assert "ingress" not in sg and "egress" not in sg, "rules are separate resources"
    rules = res["aws_vpc_security_group_ingress_rule"]
    self_rule = rules["intra_cluster"]
    assert self_rule["security_group_id"] == self_rule["referenced_security_group_id"] == "${aws_security_group.ray.id}"
    assert _unquote(self_rule["ip_protocol"]) == "-1"
    ssh = rules["ssh"]
    assert ssh["for_each"] == "${toset(var.ssh_cidrs)}" and ssh["cidr_ipv4"] == "${each.value}"
    assert (ssh["from_port"], ssh["to_port"], _unquote(ssh["ip_protocol"])) == (22, 22, "tcp")
    dash = rules["dashboard"]
    assert dash["for_each"] == "${toset(var.dashboard_cidrs)}" and dash["cidr_ipv4"] == "${each.value}"
    assert (dash["from_port"], dash["to_port"]) == (8265, 8265)
    for n, r in rules.items():
        if n != "dashboard":
            assert "8265" not in s(r) and r.get("from_port") != 8265, n
        assert "0.0.0.0/0" not in s(r), "no ingress from everywhere: " + n
        assert r["security_group_id"] == "${aws_security_group.ray.id}"
    assert "8265" not in s(sg)

    # IAM: the head's role and profile, with the EC2 actions; PassRole only on the workers' role.
    assert "ec2.amazonaws.com" in m["locals"]["ec2_trust"]
    assert res["aws_iam_role"]["head"]["assume_role_policy"] == "${local.ec2_trust}"
    assert res["aws_iam_role"]["worker"]["assume_role_policy"] == "${local.ec2_trust}"
    policy = res["aws_iam_role_policy"]["head_autoscaler"]
    assert policy["role"] == "${aws_iam_role.head.id}"
    p = policy["policy"]
    for action in (
        "ec2:RunInstances", "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:CreateTags",
        "ec2:DescribeInstances", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeImages",
        "iam:PassRole",
    ):  # fmt: skip
        assert '"{}"'.format(action) in p, action
    assert not re.search(r'"(ec2|iam):\*"|Action = "\*"', p), "no wildcard actions"
    statements = {sid: body for sid, body in re.findall(r'Sid = "(\w+)"(.*?)(?=Sid = "|\Z)', p, flags=re.S)}
    assert "Resource = aws_iam_role.worker.arn" in statements["PassWorkerRole"]
    assert "iam:PassedToService" in statements["PassWorkerRole"]
    assert 'Resource = "*"' in statements["Read"] and "Describe" in statements["Read"]
    assert "RunInstances" not in statements["Read"] and "Terminate" not in statements["Read"]
    manage = statements["ManageClusterInstances"]
    assert "ec2:TerminateInstances" in manage and "ec2:ResourceTag/${local.cluster_tag}" in manage
    assert "var.cluster_name" in manage and 'Resource = "*"' not in manage
    assert "aws:RequestTag/${local.cluster_tag}" in statements["LaunchClusterInstances"]
    assert "subnet/${local.subnet_id}" in statements["LaunchInto"]
    assert "security-group/${aws_security_group.ray.id}" in statements["LaunchInto"]
    assert m["locals"]["cluster_tag"] == '"ray-cluster-name"'
    assert res["aws_iam_instance_profile"]["head"]["role"] == "${aws_iam_role.head.name}"
    assert res["aws_iam_instance_profile"]["worker"]["role"] == "${aws_iam_role.worker.name}"
    assert set(res["aws_iam_role_policy"]) == {"head_autoscaler"}, "the workers' role gets no inline policy"
    assert res["aws_iam_role_policy_attachment"]["worker"]["for_each"] == "${toset(var.worker_policy_arns)}"
    assert m["variable"]["worker_policy_arns"]["default"] == []


def test_gcp_module_is_wired():
    m = load_module("gcp")
    res, env = m["resource"], env_map(m)
    provider = m["provider"]["google"]
    assert provider["project"] == "${var.project_id}" and provider["region"] == "${var.region}"

    head = res["google_compute_instance"]["head"]
    metadata = head["metadata"]
    assert "startup-script = templatefile(" in metadata, metadata
    call = templatefile_call(metadata)
    assert passed_args(call) == TEMPLATE_ARGS, call
    assert "env = local.head_env" in call
    assert "var.ssh_public_key" in metadata and "ssh-keys" in metadata
    assert head["machine_type"] == "${var.head_instance_type}"
    assert head["zone"] == "${local.zone}" and "var.zone" in m["locals"]["zone"]
    assert one(one(head["boot_disk"])["initialize_params"])["image"] == "${var.image}"
    sa = one(head["service_account"])
    assert sa["email"] == "${google_service_account.head.email}"
    assert head["tags"] == ["${local.network_tag}"]
    nic = one(head["network_interface"])
    assert "local.subnetwork_id" in nic["subnetwork"] and "local.network_id" in nic["network"]
    assert "ray-cluster-name" not in s(head.get("labels"))

    expect = {
        "RAY_PROVIDER": '"gcp"', "RAY_CLUSTER_NAME": "var.cluster_name", "RAY_REGION": "var.region",
        "RAY_ZONE": "local.zone", "RAY_GCP_PROJECT": "var.project_id",
        "RAY_HEAD_INSTANCE_TYPE": "var.head_instance_type", "RAY_WORKER_INSTANCE_TYPE": "var.worker_instance_type",
        "RAY_MIN_WORKERS": "var.min_workers", "RAY_MAX_WORKERS": "var.max_workers", "RAY_WORKER_IMAGE": "var.image",
        "RAY_WORKER_SERVICE_ACCOUNT": "google_service_account.worker.email", "RAY_NETWORK_TAG": "local.network_tag",
        "RAY_SUBNETWORK": "local.subnetwork_id", "RAY_NETWORK": "local.network_id",
        "RAY_INSTALL_SPEC": "var.install_spec", "RAY_USER": "var.ssh_user",
        "RAY_WORKER_RESOURCES": "var.worker_resources",
    }  # fmt: skip
    for k, ref in expect.items():
        assert ref in env.get(k, ""), "head_env.{} should come from {}: {}".format(k, ref, env.get(k))

    # The network: made only when no network is given.
    assert res["google_compute_network"]["ray"]["count"] == '${var.network == "" ? 1 : 0}'
    assert res["google_compute_subnetwork"]["ray"]["count"] == '${var.network == "" ? 1 : 0}'
    assert m["data"]["google_compute_network"]["existing"]["name"] == "${var.network}"
    assert "var.network" in m["locals"]["network_id"]

    # Firewall rules on the cluster's tag.
    fw = res["google_compute_firewall"]
    internal = fw["internal"]
    assert internal["source_tags"] == internal["target_tags"] == ["${local.network_tag}"]
    assert "source_ranges" not in internal
    assert {_unquote(a["protocol"]) for a in internal["allow"]} >= {"tcp", "udp"}
    ssh = fw["ssh"]
    assert ssh["count"] == "${length(var.ssh_cidrs) > 0 ? 1 : 0}", "no rule without sources (it would admit everyone)"
    assert ssh["source_ranges"] == "${var.ssh_cidrs}" and ssh["target_tags"] == ["${local.network_tag}"]
    assert [_unquote(p) for p in one(ssh["allow"])["ports"]] == ["22"]
    dash = fw["dashboard"]
    assert dash["count"] == "${length(var.dashboard_cidrs) > 0 ? 1 : 0}"
    assert dash["source_ranges"] == "${var.dashboard_cidrs}"
    assert [_unquote(p) for p in one(dash["allow"])["ports"]] == ["8265"]
    for n, r in fw.items():
        if n != "dashboard":
            assert "8265" not in s(r), n
        assert "0.0.0.0/0" not in s(r), n
        assert r["network"] == "${local.network_id}", n

    # IAM: instanceAdmin on the project; serviceAccountUser on the workers' account only.
    assert set(res["google_service_account"]) == {"head", "worker"}
    admin = res["google_project_iam_member"]["head_compute"]
    assert admin["role"] == "${var.head_compute_role}"
    assert _unquote(m["variable"]["head_compute_role"]["default"]) == "roles/compute.instanceAdmin.v1"
    assert admin["member"] == '"serviceAccount:${google_service_account.head.email}"'
    assert admin["project"] == "${var.project_id}"
    act_as = res["google_service_account_iam_member"]["head_acts_as_worker"]
    assert act_as["service_account_id"] == "${google_service_account.worker.name}"
    assert _unquote(act_as["role"]) == "roles/iam.serviceAccountUser"
    assert act_as["member"] == '"serviceAccount:${google_service_account.head.email}"'
    project_roles = {n: r["role"] for n, r in res["google_project_iam_member"].items()}
    assert project_roles == {"head_compute": "${var.head_compute_role}", "worker": "${each.value}"}, project_roles
    assert res["google_project_iam_member"]["worker"]["for_each"] == "${toset(var.worker_roles)}"
    assert m["variable"]["worker_roles"]["default"] == []
    assert "serviceAccountUser" not in s(res["google_project_iam_member"]), "actAs is never project-wide"


def test_the_modules_pass_only_settings_the_script_reads():
    script = SCRIPT.read_text()
    read = set(re.findall(r"\b(RAY_[A-Z0-9_]+)\b", script))
    for name in ("aws", "gcp"):
        keys = set(env_map(load_module(name)))
        assert keys <= read, "infra/{}: the script never reads {}".format(name, sorted(keys - read))
    assert "RAY_HEAD_SETUP_SCRIPT_END" not in script, "the template embeds the script in a heredoc of that name"
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


# ---------------------------------------------------------------- rendering and running the user data


def hcl_str(v):
    return json.dumps(v).replace("${", "$${").replace("%{", "%%{")


def render_user_data(tmp_path, env, token):
    """The user data exactly as the modules' templatefile() call renders it, by
    `terraform console` (which needs no providers, so no `terraform init`)."""
    env_obj = "{" + ", ".join("{} = {}".format(k, hcl_str(v)) for k, v in env.items()) + "}"
    args = "{env = %s, cluster_token = %s, setup_script = file(%s), " % (env_obj, hcl_str(token), hcl_str(str(SCRIPT)))
    args += 'setup_dir = "/var/lib/ray-setup", setup_log = "/var/log/ray-head-setup.log"}'
    expr = "base64encode(templatefile(%s, %s))" % (hcl_str(str(TEMPLATE)), args)
    work = tmp_path / "tf-console"
    work.mkdir()
    out = terraform("console", cwd=work, stdin=expr + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    rendered = base64.b64decode(json.loads(out.stdout.strip().splitlines()[-1])).decode()
    assert rendered.startswith("#!/bin/bash\n")
    assert SCRIPT.read_text().rstrip("\n") in rendered, "the setup script is embedded unchanged"
    path = tmp_path / "user-data.sh"
    path.write_text(rendered)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    return path, rendered


class FakeMetadata(ThreadingHTTPServer):
    """AWS IMDSv2 (a token from PUT /latest/api/token, then local-ipv4 with it) and
    the GCP metadata server (with Metadata-Flavor: Google) on a loopback port."""

    def __init__(self, ip):
        self.ip, self.token, self.asked = ip, "imds-session-token", []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body=""):
                self.send_response(code)
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self):
                me.asked.append(("PUT", self.path))
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.reply(200, me.token)
                self.reply(400)

            def do_GET(self):
                me.asked.append(("GET", self.path))
                if self.path == "/latest/meta-data/local-ipv4":
                    ok = self.headers.get("X-aws-ec2-metadata-token") == me.token
                    return self.reply(200, me.ip) if ok else self.reply(401)
                if self.path == "/computeMetadata/v1/instance/network-interfaces/0/ip":
                    ok = self.headers.get("Metadata-Flavor") == "Google"
                    return self.reply(200, me.ip) if ok else self.reply(403)
                self.reply(404)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def hostport(self):
        return "127.0.0.1:{}".format(self.server_address[1])


def dry_run(yaml_path):
    """`ray up --dry-run`: the YAML through this project's config loader."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GCE_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return subprocess.run([RAY, "up", str(yaml_path), "--dry-run"], capture_output=True, text=True, timeout=60, env=env)


def resolved_config(out):
    m = re.search(r"Resolved config[^\n]*\n(.*?)\n\nWhat `ray up` would do", out.stdout, flags=re.S)
    assert m, out.stdout + out.stderr
    return json.loads(m.group(1))


# What the test gives each setting the modules pass (the cloud's values are fakes:
# nothing here reaches a cloud).
QUOTED_SPEC = "ray @ git+https://example.com/o'brien/ray-rs.git@v1 $(touch pwned) \"x\""
FAKES = {
    "RAY_CLUSTER_NAME": "tf-demo", "RAY_REGION": "us-west-2", "RAY_ZONE": "us-west-2b",
    "RAY_GCP_PROJECT": "my-project", "RAY_HEAD_INSTANCE_TYPE": "m5.large", "RAY_WORKER_INSTANCE_TYPE": "c5.xlarge",
    "RAY_MIN_WORKERS": "1", "RAY_MAX_WORKERS": "3", "RAY_IDLE_TIMEOUT_MINUTES": "7", "RAY_HEAD_RESOURCES": "{}",
    "RAY_WORKER_RESOURCES": "{}", "RAY_WORKER_IMAGE": "ami-0123456789abcdef0", "RAY_WORKER_DISK_GB": "80",
    "RAY_WORKER_SPOT": "0", "RAY_SUBNET_ID": "subnet-0abc", "RAY_SECURITY_GROUP_ID": "sg-0abc",
    "RAY_WORKER_INSTANCE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/ray-tf-demo-worker",
    "RAY_KEY_NAME": "my-key", "RAY_SSH_USER": "ubuntu", "RAY_INSTALL_SPEC": QUOTED_SPEC,
    "RAY_NETWORK": "projects/my-project/global/networks/ray-tf-demo",
    "RAY_SUBNETWORK": "projects/my-project/regions/us-central1/subnetworks/ray-tf-demo",
    "RAY_NETWORK_TAG": "ray-tf-demo", "RAY_WORKER_SERVICE_ACCOUNT": "ray-tf-demo-worker@my-project.iam.gserviceaccount.com",
    "RAY_WORKER_EXTERNAL_IP": "1",
}  # fmt: skip


def module_env_with_fakes(name, tmp_path, **overrides):
    keys = env_map(load_module(name))
    env = {}
    for k, v in keys.items():
        if k == "RAY_PROVIDER":
            env[k] = _unquote(v)
        elif k == "RAY_USER":
            env[k] = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()  # Ray runs as us here
        elif k == "RAY_LINK_BIN":
            env[k] = str(tmp_path / "ray-link")
        else:
            assert k in FAKES, "the test has no value for {} (infra/{}): add one to FAKES".format(k, name)
            env[k] = FAKES[k]
    env.update(overrides)
    return env


def run_rendered(path, tmp_path, **extra):
    setup = tmp_path / "setup"
    env = script_env(RAY_SETUP_DIR=str(setup), RAY_SETUP_LOG=str(tmp_path / "setup.log"), **extra)
    env.update(RAY_SKIP_INSTALL="1", RAY_SKIP_START="1")
    out = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert stat.S_IMODE(os.stat(setup).st_mode) == 0o700
    return out, setup


def check_common_files(home, node_ip):
    token_file = home / ".ray" / "auth_token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / ".ray").st_mode) == 0o700
    env_sh = (home / ".ray" / "env.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in env_sh
    assert "export RAY_ADDRESS='{}:6379'".format(node_ip) in env_sh, env_sh
    assert ". \"$HOME/.ray/env.sh\"" in (home / ".bashrc").read_text()
    return token_file.read_text().strip()


def test_terraform_renders_the_aws_user_data_and_it_writes_a_config_the_loader_reads(tmp_path):
    token = "tf-token-" + "a1" * 20
    path, rendered = render_user_data(tmp_path, module_env_with_fakes("aws", tmp_path), token)
    assert "export RAY_INSTALL_SPEC='ray @ git+https://example.com/o'\\''brien/ray-rs.git@v1 $(touch pwned)" in rendered
    imds = FakeMetadata("10.1.2.3")
    try:
        out, setup = run_rendered(path, tmp_path, AWS_EC2_METADATA_SERVICE_ENDPOINT="http://" + imds.hostport)
    finally:
        imds.shutdown()
    assert ("PUT", "/latest/api/token") in imds.asked and ("GET", "/latest/meta-data/local-ipv4") in imds.asked
    home = Path(os.environ["HOME"])
    assert check_common_files(home, "10.1.2.3") == token, "the token Terraform made is the cluster's"
    assert stat.S_IMODE(os.stat(setup / "cluster_token").st_mode) == 0o600
    assert token not in out.stdout + out.stderr + (tmp_path / "setup.log").read_text()
    assert not (tmp_path / "pwned").exists() and not (home / "pwned").exists(), "values are never run"
    assert "wrote the cluster config" in (tmp_path / "setup.log").read_text()
    assert (setup / "run.sh").exists() and (setup / "ray-head-setup.sh").read_text() == SCRIPT.read_text()

    dr = dry_run(home / "ray_bootstrap_config.yaml")
    assert dr.returncode == 0, dr.stdout + dr.stderr
    cfg = resolved_config(dr)
    assert cfg["cluster_name"] == "tf-demo" and cfg["max_workers"] == 3 and cfg["idle_timeout_minutes"] == 7
    p = cfg["provider"]
    assert (p["type"], p["region"], p["availability_zone"]) == ("aws", "us-west-2", "us-west-2b")
    assert p["launch_via"] == "user_data" and p["use_internal_ips"] is True
    assert cfg["head_node_type"] == "ray.head.default"
    assert cfg["available_node_types"]["ray.head.default"]["node_config"] == {"InstanceType": "m5.large"}
    w = cfg["available_node_types"]["ray.worker.default"]
    assert (w["min_workers"], w["max_workers"]) == (1, 3)
    nc = w["node_config"]
    assert nc["InstanceType"] == "c5.xlarge" and nc["ImageId"] == "ami-0123456789abcdef0"
    assert nc["SubnetIds"] == ["subnet-0abc"] and nc["SecurityGroupIds"] == ["sg-0abc"]
    assert nc["IamInstanceProfile"] == {"Arn": FAKES["RAY_WORKER_INSTANCE_PROFILE_ARN"]}
    assert nc["KeyName"] == "my-key" and nc["MetadataOptions"]["HttpTokens"] == "required"
    assert nc["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 80
    assert w["resources"]["CPU"] == 4, "resources filled in from c5.xlarge"
    assert cfg["auth"]["ssh_user"] == "ubuntu"
    setup_cmds = "\n".join(cfg["worker_setup_commands"])
    assert "-m pip install --quiet 'ray @ git+https://example.com/o'\\''brien/ray-rs.git@v1 $(touch pwned) \"x\"'" in setup_cmds
    assert "sh.rustup.rs" in setup_cmds, "a git spec is a source build"
    assert "ln -sf \"$HOME/ray-venv/bin/ray\" '{}'".format(tmp_path / "ray-link") in setup_cmds, "ray on every shell's PATH"
    assert cfg["worker_start_ray_commands"][-1].endswith("ray start --address=$RAY_HEAD_IP:6379")


def test_terraform_renders_the_gcp_user_data_and_the_head_makes_its_own_token(tmp_path):
    gcp = dict(
        RAY_REGION="us-central1", RAY_ZONE="us-central1-c", RAY_WORKER_INSTANCE_TYPE="n2-standard-4",
        RAY_HEAD_INSTANCE_TYPE="n2-standard-2", RAY_WORKER_IMAGE="projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts",
        RAY_WORKER_RESOURCES='{"CPU": 4}',
    )  # fmt: skip
    path, rendered = render_user_data(tmp_path, module_env_with_fakes("gcp", tmp_path, **gcp), "")
    assert "RAY_CLUSTER_TOKEN" not in rendered.split("RAY_HEAD_SETUP_SCRIPT_END")[0], "no token from Terraform"
    gce = FakeMetadata("10.128.0.7")
    try:
        out, setup = run_rendered(path, tmp_path, GCE_METADATA_HOST=gce.hostport)
    finally:
        gce.shutdown()
    assert ("GET", "/computeMetadata/v1/instance/network-interfaces/0/ip") in gce.asked
    home = Path(os.environ["HOME"])
    token = check_common_files(home, "10.128.0.7")
    assert re.fullmatch(r"[0-9a-f]{64}", token), "made on the VM from /dev/urandom"
    assert not (setup / "cluster_token").exists()
    assert token not in out.stdout + out.stderr

    yaml_path = home / "ray_bootstrap_config.yaml"
    text = yaml_path.read_text()
    for piece in (
        "  type: gcp\n", '  region: "us-central1"\n', '  availability_zone: "us-central1-c"\n',
        '  project_id: "my-project"\n', "  launch_via: user_data\n", "head_node_type: ray_head_default\n",
        '      machineType: "n2-standard-2"\n', '      machineType: "n2-standard-4"\n',
        '    resources: {"CPU": 4}\n', "        - subnetwork: \"{}\"\n".format(FAKES["RAY_SUBNETWORK"]),
        "accessConfigs: [{name: External NAT, type: ONE_TO_ONE_NAT}]",
        '        - email: "{}"\n'.format(FAKES["RAY_WORKER_SERVICE_ACCOUNT"]),
        '      tags: {items: ["ray-tf-demo"]}\n', 'sourceImage: "{}"'.format(gcp["RAY_WORKER_IMAGE"]),
        '  ssh_private_key: "~/.ssh/ray-autoscaler-tf-demo"\n',
    ):  # fmt: skip
        assert piece in text, piece + "\n" + text
    # The head's own key pair: its public half in the workers' ssh-keys metadata.
    key = home / ".ssh" / "ray-autoscaler-tf-demo"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    pub = (home / ".ssh" / "ray-autoscaler-tf-demo.pub").read_text().strip()
    assert '- {key: ssh-keys, value: "ubuntu:' + pub + '"}' in text
    check_gcp_yaml_loads(yaml_path, tmp_path)


def check_gcp_yaml_loads(yaml_path, tmp_path):
    """The loader reads the YAML and the gcp provider accepts its provider section."""
    dr = dry_run(yaml_path)
    assert dr.returncode == 0, dr.stdout + dr.stderr
    cfg = resolved_config(dr)
    assert cfg["provider"]["type"] == "gcp" and cfg["provider"]["project_id"] == "my-project"
    w = cfg["available_node_types"]["ray_worker_default"]
    assert (w["min_workers"], w["max_workers"]) == (1, 3)
    assert w["node_config"]["serviceAccounts"][0]["email"] == FAKES["RAY_WORKER_SERVICE_ACCOUNT"]
    # The dry run shows the config as the head gets it: its key copied to the bootstrap key path.
    assert cfg["auth"]["ssh_private_key"] == "~/ray_bootstrap_key.pem"


# ---------------------------------------------------------------- the script on its own


def script_env(**settings):
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ["PATH"], "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for k in [k for k in env if k.startswith("RAY_") and k != "RAY_TMPDIR"]:
        del env[k]
    env.update(settings)
    return env


def run_script(timeout=180, **settings):
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout, env=script_env(**settings))


def test_the_script_refuses_incomplete_settings():
    out = run_script(RAY_NODE_IP_ADDRESS="127.0.0.1", RAY_SKIP_INSTALL="1")
    assert out.returncode != 0 and "RAY_PROVIDER is not set" in out.stderr, out.stderr
    base = {k: FAKES[k] for k in ("RAY_REGION", "RAY_ZONE", "RAY_HEAD_INSTANCE_TYPE", "RAY_WORKER_INSTANCE_TYPE")}
    out = run_script(RAY_PROVIDER="aws", RAY_NODE_IP_ADDRESS="10.0.0.1", RAY_SKIP_INSTALL="1", **base)
    assert out.returncode != 0 and "RAY_WORKER_IMAGE is not set" in out.stderr, out.stderr
    out = run_script(RAY_PROVIDER="fake_multinode", RAY_MIN_WORKERS="3", RAY_MAX_WORKERS="2", RAY_SKIP_INSTALL="1")
    assert out.returncode != 0 and "above RAY_MAX_WORKERS" in out.stderr, out.stderr
    out = run_script(RAY_PROVIDER="fake_multinode", RAY_SKIP_START="1")
    assert out.returncode != 0 and "RAY_INSTALL_SPEC is not set" in out.stderr, out.stderr
    out = run_script(RAY_PROVIDER="fake_multinode", RAY_SKIP_INSTALL="1", RAY_CLUSTER_NAME="a\nhead_node_type: x")
    assert out.returncode != 0 and "RAY_CLUSTER_NAME holds a control character" in out.stderr, out.stderr
    home = Path(os.environ["HOME"])
    assert not (home / "ray_bootstrap_config.yaml").exists(), "a refused config is never left in place"
    assert not (home / ".ray" / "auth_token").exists(), "the settings are checked before anything is written"
    assert list(home.iterdir()) == [], list(home.iterdir())


def fake_wheel(folder):
    """A tiny wheel whose `ray` console script prints a version: what the install
    step does with a real wheel, offline and in seconds."""
    name = "fake_ray_cli-0.1-py3-none-any.whl"
    files = {
        "fake_ray_cli/__init__.py": "def main():\n    print('fake ray 0.1')\n",
        "fake_ray_cli-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: fake-ray-cli\nVersion: 0.1\n",
        "fake_ray_cli-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "fake_ray_cli-0.1.dist-info/entry_points.txt": "[console_scripts]\nray = fake_ray_cli:main\n",
    }
    record = ""
    for path, body in files.items():
        digest = base64.urlsafe_b64encode(sha256(body.encode()).digest()).rstrip(b"=").decode()
        record += "{},sha256={},{}\n".format(path, digest, len(body.encode()))
    record += "fake_ray_cli-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / name, "w") as z:
        for path, body in files.items():
            z.writestr(path, body)
        z.writestr("fake_ray_cli-0.1.dist-info/RECORD", record)
    return folder / name


def test_the_script_installs_the_project_from_install_spec(tmp_path):
    wheel = fake_wheel(tmp_path)
    link = tmp_path / "bin" / "ray"
    link.parent.mkdir()
    settings = dict(
        RAY_PROVIDER="fake_multinode", RAY_INSTALL_SPEC=str(wheel), RAY_APT_PACKAGES="", RAY_SKIP_START="1",
        RAY_NODE_IP_ADDRESS="127.0.0.1", RAY_LINK_BIN=str(link),
    )  # fmt: skip
    out = run_script(**settings)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "installing from " + str(wheel) in out.stderr and "rustup" not in out.stderr, "a wheel needs no Rust"
    home = Path(os.environ["HOME"])
    venv_ray = home / "ray-venv" / "bin" / "ray"
    assert venv_ray.exists() and os.readlink(link) == str(venv_ray)
    assert subprocess.run([str(link)], capture_output=True, text=True).stdout.strip() == "fake ray 0.1"
    assert 'export PATH="$HOME/ray-venv/bin:$PATH"' in (home / ".ray" / "env.sh").read_text()
    again = run_script(**settings)
    assert again.returncode == 0 and "already installed from " + str(wheel) in again.stderr, again.stderr


def our_processes(home):
    """Processes (other than this one) whose HOME is the test's scratch home."""
    found, want = [], b"HOME=" + str(home).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/{}/environ".format(pid), "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if want in env:
            found.append("{} {}".format(pid, cmd))
    return found


def test_the_script_alone_brings_up_a_head_whose_autoscaler_launches_a_worker():
    home = Path(os.environ["HOME"])
    temp_root = Path(os.environ["RAY_TMPDIR"]) / "ray"
    out = run_script(
        RAY_PROVIDER="fake_multinode", RAY_CLUSTER_NAME="infra-e2e", RAY_MIN_WORKERS="1", RAY_MAX_WORKERS="2",
        RAY_WORKER_RESOURCES='{"CPU": 1}', RAY_HEAD_NUM_CPUS="0", RAY_NODE_IP_ADDRESS="127.0.0.1",
        RAY_GCS_PORT="0", RAY_CLIENT_SERVER_PORT="0", RAY_SKIP_INSTALL="1",
    )  # fmt: skip
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Ray runtime started" in out.stderr
        token = check_token_and_env(home)
        assert token not in out.stdout + out.stderr
        yaml_text = (home / "ray_bootstrap_config.yaml").read_text()
        assert "  type: fake_multinode\n" in yaml_text and "    min_workers: 1\n" in yaml_text
        address = re.search(r"export RAY_ADDRESS='(127\.0\.0\.1:\d+)'", (home / ".ray" / "env.sh").read_text())
        assert address and not address.group(1).endswith(":0"), "the GCS's real port is kept"

        # `ray status`, from a shell that sources ~/.ray/env.sh as a login on the head would.
        status = wait_for_worker()
        assert "ray.head.default" in status
        monitor_log = (temp_root / "session_latest" / "logs" / "monitor.log").read_text()
        assert "Started cluster=infra-e2e" in monitor_log, monitor_log[-2000:]
        assert re.search(r"Adding 1 node\(s\) of type ray\.worker\.default", monitor_log), monitor_log[-2000:]

        ray.init(address=address.group(1))
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sum(n["IsHeadNode"] for n in alive) == 1, alive
        ray.shutdown()
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert token not in ps, "the token is on no command line"
        assert our_processes(home), "the head's processes run with its HOME"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop = subprocess.run([RAY, "stop"], capture_output=True, text=True, timeout=120, env=script_env())
    assert stop.returncode == 0, stop.stdout + stop.stderr
    deadline = time.time() + 30
    while our_processes(home) and time.time() < deadline:
        time.sleep(0.5)
    assert our_processes(home) == [], "ray stop left processes behind"


def check_token_and_env(home):
    token_file = home / ".ray" / "auth_token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = token_file.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token), "a new random token"
    assert "export RAY_AUTH_MODE=token" in (home / ".ray" / "env.sh").read_text()
    return token


def wait_for_worker(timeout=90):
    deadline, status = time.time() + timeout, None
    while time.time() < deadline:
        status = subprocess.run(
            ["bash", "-c", '. "$HOME/.ray/env.sh" && ray status'], capture_output=True, text=True, timeout=60, env=script_env()
        )
        assert status.returncode == 0, status.stdout + status.stderr
        nodes = status.stdout.split("Pending:")[0]
        if re.search(r"^ 1 ray\.worker\.default$", nodes, flags=re.M):
            return status.stdout
        time.sleep(1)
    pytest.fail("no worker joined within {} s; last `ray status`:\n{}".format(timeout, status and status.stdout))
