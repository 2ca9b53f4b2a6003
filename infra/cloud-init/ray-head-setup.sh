#!/usr/bin/env bash
# Sets up and starts a Ray head node of this project (ray-rs): the cluster token,
# the cluster YAML, the `ray` installation, and `ray start --head
# --autoscaling-config=<yaml>`, after which the head's autoscaler launches the
# workers through the cloud's node provider.
#
# Plain bash, configured only by environment variables, so it runs on its own:
#
#   RAY_PROVIDER=aws RAY_REGION=us-west-2 RAY_ZONE=us-west-2a ... bash ray-head-setup.sh
#
# The Terraform modules in infra/aws and infra/gcp render head-user-data.sh.tftpl,
# a cloud-init wrapper that exports these variables and runs this file unchanged.
#
# What it reads (defaults in brackets):
#   RAY_PROVIDER          aws | gcp | fake_multinode (workers are local processes:
#                         a cluster on one machine, for trying the script out)
#   RAY_CLUSTER_NAME      [ray]
#   RAY_CLUSTER_YAML_FILE a cluster YAML to use as it is (then the RAY_* settings of
#                         the YAML below are not read, and RAY_PROVIDER only picks
#                         the metadata service for the node's address)
#   RAY_REGION, RAY_ZONE  the cloud's region and zone (aws, gcp)
#   RAY_GCP_PROJECT       the GCP project id (gcp)
#   RAY_HEAD_INSTANCE_TYPE, RAY_WORKER_INSTANCE_TYPE
#                         EC2 instance types or GCE machine types
#   RAY_MIN_WORKERS [0], RAY_MAX_WORKERS [2], RAY_IDLE_TIMEOUT_MINUTES [5]
#   RAY_HEAD_RESOURCES, RAY_WORKER_RESOURCES
#                         a JSON object, e.g. {"CPU": 2} [{}: aws fills them in
#                         from the instance type]
#   RAY_WORKER_IMAGE      the workers' AMI id (aws) or source image (gcp)
#   RAY_WORKER_DISK_GB    [64]
#   aws: RAY_SUBNET_ID, RAY_SECURITY_GROUP_ID, RAY_WORKER_INSTANCE_PROFILE_ARN,
#        RAY_KEY_NAME (optional), RAY_WORKER_SPOT [0]
#   gcp: RAY_SUBNETWORK (or RAY_NETWORK), RAY_WORKER_SERVICE_ACCOUNT,
#        RAY_NETWORK_TAG, RAY_WORKER_EXTERNAL_IP [1]
#   RAY_SSH_USER          the cluster YAML's auth.ssh_user: the account workers run
#                         Ray as [the user below]
#   RAY_USER              the account that runs Ray on this node [the current one];
#                         run as root with RAY_USER=ubuntu, it does the rest as ubuntu
#                         (through runuser; the install step's apt-get uses sudo)
#   RAY_HOME              that account's home [$HOME, or its home from passwd]
#   RAY_INSTALL_SPEC      what `pip install` installs this project from: a wheel's
#                         URL, `git+https://...`, a path (NOT `ray` from PyPI, which
#                         is another project)
#   RAY_SKIP_INSTALL      1: `ray` is already on PATH; install nothing
#   RAY_INSTALL_RUST      auto | 1 | 0 [auto: a rust toolchain unless the spec is a wheel]
#   RAY_APT_PACKAGES      what apt-get installs first, where there is apt-get [python3-venv
#                         python3-pip git curl ca-certificates, and build-essential
#                         pkg-config for a source build]; empty: nothing
#   RAY_VENV              the virtual environment [$HOME/ray-venv]
#   RAY_NODE_IP_ADDRESS   this node's address [from the cloud's metadata service:
#                         AWS IMDSv2 local-ipv4, or GCP's network-interfaces/0/ip;
#                         127.0.0.1 for fake_multinode]
#   RAY_CLUSTER_TOKEN_FILE a file holding the cluster token, or
#   RAY_CLUSTER_TOKEN     the token itself; with neither, an existing
#                         ~/.ray/auth_token is kept, else a new random one is made
#   RAY_GCS_PORT [6379], RAY_HEAD_NUM_CPUS, RAY_CLIENT_SERVER_PORT (optional)
#   RAY_LINK_BIN          make this path (e.g. /usr/local/bin/ray, with sudo when
#                         needed) a link to the installed `ray`, here and on workers
#   RAY_SKIP_START        1: write the token, the YAML and ~/.ray/env.sh only
#   AWS_EC2_METADATA_SERVICE_ENDPOINT, GCE_METADATA_HOST
#                         other metadata endpoints (as the cloud SDKs read them)
#
# What it writes, in RAY_HOME: .ray/auth_token (mode 0600; the secret never goes
# on a command line), ray_bootstrap_config.yaml, and .ray/env.sh (PATH,
# RAY_AUTH_MODE=token, RAY_ADDRESS), sourced from .bashrc.
set -euo pipefail

log() { printf '[ray-head-setup] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- settings
PROVIDER="${RAY_PROVIDER:-}"
CLUSTER_NAME="${RAY_CLUSTER_NAME:-ray}"
GCS_PORT="${RAY_GCS_PORT:-6379}"
ME="$(id -un)"
RUN_USER="${RAY_USER:-$ME}"
if [ -n "${RAY_HOME:-}" ]; then
    RUN_HOME="$RAY_HOME"
elif [ "$RUN_USER" = "$ME" ]; then
    RUN_HOME="${HOME:?HOME is not set}"
else
    RUN_HOME="$(getent passwd "$RUN_USER" | cut -d: -f6)"
fi
[ -n "$RUN_HOME" ] || die "no home folder for user $RUN_USER (set RAY_HOME)"
VENV="${RAY_VENV:-\$HOME/ray-venv}"
YAML_PATH="$RUN_HOME/ray_bootstrap_config.yaml"
TOKEN_PATH="$RUN_HOME/.ray/auth_token"
ENV_PATH="$RUN_HOME/.ray/env.sh"

case "$PROVIDER" in
    aws | gcp | fake_multinode) ;;
    "") [ -n "${RAY_CLUSTER_YAML_FILE:-}" ] || die "RAY_PROVIDER is not set (aws, gcp or fake_multinode), nor RAY_CLUSTER_YAML_FILE" ;;
    *) die "RAY_PROVIDER=$PROVIDER: expected aws, gcp or fake_multinode" ;;
esac
[[ "$GCS_PORT" =~ ^[0-9]+$ ]] || die "RAY_GCS_PORT=$GCS_PORT is not a port number"
for v in $(compgen -v RAY_); do
    case "${!v}" in *[[:cntrl:]]*) die "$v holds a control character (a newline?)" ;; esac
done
if [ "${RAY_SKIP_INSTALL:-0}" != 1 ] && [ -z "${RAY_INSTALL_SPEC:-}" ]; then
    die "RAY_INSTALL_SPEC is not set (a wheel URL, git+https://... or a path; or set RAY_SKIP_INSTALL=1)"
fi
if [ "$RUN_USER" != "$ME" ] && [ "$(id -u)" != 0 ]; then
    die "RAY_USER=$RUN_USER: only root can set up Ray for another user"
fi

# Runs a bash command line as RUN_USER in RUN_HOME (directly when that is us).
# Only non-secret values travel on that command line.
as_user() {
    if [ "$RUN_USER" = "$ME" ]; then
        HOME="$RUN_HOME" bash -euo pipefail -c "$1"
    else
        [ "$(id -u)" = 0 ] || die "only root can run Ray as another user ($RUN_USER)"
        runuser -u "$RUN_USER" -- env HOME="$RUN_HOME" USER="$RUN_USER" LOGNAME="$RUN_USER" \
            PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            ${RAY_TMPDIR:+RAY_TMPDIR="$RAY_TMPDIR"} bash -euo pipefail -c "$1"
    fi
}

# Makes a file or folder RUN_USER's when we are root and Ray runs as another user.
own() {
    if [ "$RUN_USER" != "$ME" ]; then chown "$RUN_USER:" "$@"; fi
}

# A double-quoted YAML (and JSON) string.
q() {
    local s="$1"
    case "$s" in *[[:cntrl:]]*) die "a control character in a value: ${s@Q}" ;; esac
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# A single-quoted shell word.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

need() { [ -n "${!1:-}" ] || die "$1 is not set (needed for provider $PROVIDER)"; }

whole() {
    [[ "${!1:-$2}" =~ ^[0-9]+$ ]] || die "$1=${!1} is not a whole number"
    printf '%s' "${!1:-$2}"
}

json_object() {
    local v="${!1:-}"
    [ -n "$v" ] || v='{}'
    [[ "$v" =~ ^[[:space:]]*\{.*\}[[:space:]]*$ ]] || die "$1 must be a JSON object, e.g. {\"CPU\": 2}"
    printf '%s' "$v"
}

# ---------------------------------------------------------------- the node's address
metadata_ip() {
    local tries=30 ip="" imds host token
    while [ $tries -gt 0 ]; do
        case "$PROVIDER" in
            aws)
                imds="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
                imds="${imds%/}"
                # IMDSv2: a session token first; it goes to curl on stdin, not argv.
                token="$(curl -sf --noproxy '*' -m 5 -X PUT "$imds/latest/api/token" \
                    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' || true)"
                if [ -n "$token" ]; then
                    ip="$(printf 'header = "X-aws-ec2-metadata-token: %s"\n' "$token" |
                        curl -sf --noproxy '*' -m 5 -K - "$imds/latest/meta-data/local-ipv4" || true)"
                fi
                ;;
            gcp)
                host="${GCE_METADATA_HOST:-metadata.google.internal}"
                ip="$(curl -sf --noproxy '*' -m 5 -H 'Metadata-Flavor: Google' \
                    "http://$host/computeMetadata/v1/instance/network-interfaces/0/ip" || true)"
                ;;
            *)
                ip=127.0.0.1
                ;;
        esac
        if [[ "$ip" =~ ^[0-9a-fA-F.:]+$ ]]; then
            printf '%s' "$ip"
            return 0
        fi
        tries=$((tries - 1))
        sleep 2
    done
    die "no address from the $PROVIDER metadata service (set RAY_NODE_IP_ADDRESS)"
}

# ---------------------------------------------------------------- installing the project
# The commands that install this project for the current user, one per line: run
# here, and listed as the workers' setup commands so workers install the same.
install_commands() {
    local spec="${RAY_INSTALL_SPEC:-}" rust="${RAY_INSTALL_RUST:-auto}"
    [ -n "$spec" ] || die "RAY_INSTALL_SPEC is not set (a wheel URL, git+https://... or a path; or set RAY_SKIP_INSTALL=1)"
    if [ "$rust" = auto ]; then
        case "$spec" in *.whl) rust=0 ;; *) rust=1 ;; esac
    fi
    local pkgs="${RAY_APT_PACKAGES-python3-venv python3-pip git curl ca-certificates}"
    if [ "$rust" = 1 ] && [ -n "$pkgs" ]; then pkgs="$pkgs build-essential pkg-config"; fi
    if [ -n "$pkgs" ]; then
        echo "if command -v apt-get >/dev/null 2>&1; then sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $pkgs; fi"
    fi
    if [ "$rust" = 1 ]; then
        echo "command -v cargo >/dev/null 2>&1 || test -x \"\$HOME/.cargo/bin/cargo\" || curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path"
    fi
    echo "test -x \"$VENV/bin/python\" || python3 -m venv \"$VENV\""
    echo "PATH=\"\$HOME/.cargo/bin:\$PATH\" \"$VENV/bin/python\" -m pip install --quiet $(sq "$spec")"
    if [ -n "${RAY_LINK_BIN:-}" ]; then
        # On PATH for every later shell (SSH sessions run each command in a new one).
        echo "ln -sf \"$VENV/bin/ray\" $(sq "$RAY_LINK_BIN") 2>/dev/null || sudo -n ln -sf \"$VENV/bin/ray\" $(sq "$RAY_LINK_BIN")"
    fi
    echo "export PATH=\"$VENV/bin:\$PATH\""
}

# ---------------------------------------------------------------- the cluster YAML
yaml_list() {
    local line
    while IFS= read -r line; do
        [ -n "$line" ] && printf '  - %s\n' "$(q "$line")"
    done
}

cluster_yaml() {
    local min max idle head_res worker_res disk ssh_user head_type worker_type
    min="$(whole RAY_MIN_WORKERS 0)"
    max="$(whole RAY_MAX_WORKERS 2)"
    idle="${RAY_IDLE_TIMEOUT_MINUTES:-5}"
    [[ "$idle" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RAY_IDLE_TIMEOUT_MINUTES=$idle is not a number"
    [ "$min" -le "$max" ] || die "RAY_MIN_WORKERS ($min) is above RAY_MAX_WORKERS ($max)"
    head_res="$(json_object RAY_HEAD_RESOURCES)"
    worker_res="$(json_object RAY_WORKER_RESOURCES)"
    disk="$(whole RAY_WORKER_DISK_GB 64)"
    ssh_user="${RAY_SSH_USER:-$RUN_USER}"
    head_type=ray.head.default
    worker_type=ray.worker.default
    if [ "$PROVIDER" = gcp ]; then
        head_type=ray_head_default
        worker_type=ray_worker_default
    fi

    echo "# Written by infra/cloud-init/ray-head-setup.sh: the autoscaler's config,"
    echo "# in Ray's cluster YAML format. Edit it and restart Ray to change the cluster."
    echo "cluster_name: $(q "$CLUSTER_NAME")"
    echo "max_workers: $max"
    echo "idle_timeout_minutes: $idle"
    echo "provider:"
    echo "  type: $PROVIDER"
    case "$PROVIDER" in
        aws)
            need RAY_REGION && need RAY_ZONE
            echo "  region: $(q "$RAY_REGION")"
            echo "  availability_zone: $(q "$RAY_ZONE")"
            ;;
        gcp)
            need RAY_REGION && need RAY_ZONE && need RAY_GCP_PROJECT
            echo "  region: $(q "$RAY_REGION")"
            echo "  availability_zone: $(q "$RAY_ZONE")"
            echo "  project_id: $(q "$RAY_GCP_PROJECT")"
            ;;
    esac
    if [ "$PROVIDER" != fake_multinode ]; then
        # The head reaches workers at their private addresses; workers start Ray
        # from their user data / startup script, so the head needs no SSH key.
        echo "  use_internal_ips: true"
        echo "  cache_stopped_nodes: false"
        echo "  launch_via: user_data"
        echo "auth:"
        echo "  ssh_user: $(q "$ssh_user")"
        if [ -n "$WORKER_SSH_PUB" ]; then echo "  ssh_private_key: $(q "~/.ssh/$SSH_KEY_NAME")"; fi
    fi
    echo "available_node_types:"
    echo "  $head_type:"
    echo "    resources: $head_res"
    case "$PROVIDER" in
        aws) need RAY_HEAD_INSTANCE_TYPE && printf '    node_config:\n      InstanceType: %s\n' "$(q "$RAY_HEAD_INSTANCE_TYPE")" ;;
        gcp) need RAY_HEAD_INSTANCE_TYPE && printf '    node_config:\n      machineType: %s\n' "$(q "$RAY_HEAD_INSTANCE_TYPE")" ;;
        *) echo "    node_config: {}" ;;
    esac
    echo "  $worker_type:"
    echo "    min_workers: $min"
    echo "    max_workers: $max"
    echo "    resources: $worker_res"
    if [ "$PROVIDER" = fake_multinode ]; then echo "    node_config: {}"; else echo "    node_config:"; fi
    case "$PROVIDER" in
        aws)
            need RAY_WORKER_INSTANCE_TYPE && need RAY_WORKER_IMAGE && need RAY_SUBNET_ID
            need RAY_SECURITY_GROUP_ID && need RAY_WORKER_INSTANCE_PROFILE_ARN
            echo "      InstanceType: $(q "$RAY_WORKER_INSTANCE_TYPE")"
            echo "      ImageId: $(q "$RAY_WORKER_IMAGE")"
            echo "      SubnetIds: [$(q "$RAY_SUBNET_ID")]"
            echo "      SecurityGroupIds: [$(q "$RAY_SECURITY_GROUP_ID")]"
            echo "      IamInstanceProfile: {Arn: $(q "$RAY_WORKER_INSTANCE_PROFILE_ARN")}"
            if [ -n "${RAY_KEY_NAME:-}" ]; then echo "      KeyName: $(q "$RAY_KEY_NAME")"; fi
            echo "      MetadataOptions: {HttpTokens: required, HttpEndpoint: enabled}"
            echo "      BlockDeviceMappings: [{DeviceName: /dev/sda1, Ebs: {VolumeSize: $disk, VolumeType: gp3, Encrypted: true}}]"
            if [ "${RAY_WORKER_SPOT:-0}" = 1 ]; then echo "      InstanceMarketOptions: {MarketType: spot}"; fi
            ;;
        gcp)
            need RAY_WORKER_INSTANCE_TYPE && need RAY_WORKER_IMAGE && need RAY_WORKER_SERVICE_ACCOUNT && need RAY_NETWORK_TAG
            [ -n "${RAY_SUBNETWORK:-}${RAY_NETWORK:-}" ] || die "RAY_SUBNETWORK or RAY_NETWORK is not set (needed for provider gcp)"
            echo "      machineType: $(q "$RAY_WORKER_INSTANCE_TYPE")"
            echo "      disks:"
            echo "        - {boot: true, autoDelete: true, type: PERSISTENT, initializeParams: {diskSizeGb: $disk, sourceImage: $(q "$RAY_WORKER_IMAGE")}}"
            echo "      networkInterfaces:"
            if [ -n "${RAY_SUBNETWORK:-}" ]; then
                echo "        - subnetwork: $(q "$RAY_SUBNETWORK")"
            else
                echo "        - network: $(q "$RAY_NETWORK")"
            fi
            if [ "${RAY_WORKER_EXTERNAL_IP:-1}" = 1 ]; then echo "          accessConfigs: [{name: External NAT, type: ONE_TO_ONE_NAT}]"; fi
            echo "      serviceAccounts:"
            echo "        - email: $(q "$RAY_WORKER_SERVICE_ACCOUNT")"
            echo "          scopes: [\"https://www.googleapis.com/auth/cloud-platform\"]"
            echo "      tags: {items: [$(q "$RAY_NETWORK_TAG")]}"
            # The head's key on every worker, for a provider that sets workers up over SSH.
            echo "      metadata:"
            echo "        items:"
            echo "          - {key: ssh-keys, value: $(q "$ssh_user:$WORKER_SSH_PUB")}"
            ;;
    esac
    echo "head_node_type: $head_type"
    if [ "$PROVIDER" != fake_multinode ]; then
        echo "file_mounts: {}"
        echo "initialization_commands: []"
        echo "setup_commands: []"
        echo "head_setup_commands: []"
        if [ -n "${RAY_INSTALL_SPEC:-}" ]; then
            echo "worker_setup_commands:"
            install_commands | yaml_list
        else
            echo "worker_setup_commands: [] # no RAY_INSTALL_SPEC: the workers' image has ray on PATH"
        fi
        echo "head_start_ray_commands:"
        printf '%s\n' "ray stop" "ulimit -n 65536; ray start --head --port=$GCS_PORT --autoscaling-config=~/ray_bootstrap_config.yaml" | yaml_list
        echo "worker_start_ray_commands:"
        printf '%s\n' "ray stop" "ulimit -n 65536 2>/dev/null || true; ray start --address=\$RAY_HEAD_IP:$GCS_PORT" | yaml_list
    fi
}

# ---------------------------------------------------------------- 1. the cluster YAML (checked first)
trap 'rm -f "$YAML_PATH.new" "$TOKEN_PATH.new" "$ENV_PATH.new"' EXIT
# gcp: a key pair of the head's, its public half in the workers' ssh-keys metadata,
# so the autoscaler can also set workers up over SSH.
SSH_KEY_NAME="ray-autoscaler-$CLUSTER_NAME"
WORKER_SSH_PUB=""
if [ "$PROVIDER" = gcp ] && [ -z "${RAY_CLUSTER_YAML_FILE:-}" ]; then
    [[ "$SSH_KEY_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "RAY_CLUSTER_NAME=$CLUSTER_NAME: letters, digits, dots, dashes and underscores only"
    if [ ! -s "$RUN_HOME/.ssh/$SSH_KEY_NAME.pub" ]; then
        command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is not installed (openssh-client)"
        as_user "mkdir -p ~/.ssh && chmod 0700 ~/.ssh && ssh-keygen -q -t ed25519 -N '' -C $SSH_KEY_NAME -f ~/.ssh/$SSH_KEY_NAME" >&2
        log "made the SSH key ~/.ssh/$SSH_KEY_NAME for the workers"
    fi
    WORKER_SSH_PUB="$(tr -d '\r\n' <"$RUN_HOME/.ssh/$SSH_KEY_NAME.pub")"
fi
if [ -n "${RAY_CLUSTER_YAML_FILE:-}" ]; then
    [ -r "$RAY_CLUSTER_YAML_FILE" ] || die "RAY_CLUSTER_YAML_FILE=$RAY_CLUSTER_YAML_FILE cannot be read"
    cp "$RAY_CLUSTER_YAML_FILE" "$YAML_PATH.new"
else
    cluster_yaml >"$YAML_PATH.new"
fi
chmod 0644 "$YAML_PATH.new"
own "$YAML_PATH.new"
mv -f "$YAML_PATH.new" "$YAML_PATH"
log "wrote the cluster config to $YAML_PATH"

# ---------------------------------------------------------------- 2. folders and token
install -d -m 0700 "$RUN_HOME/.ray"
own "$RUN_HOME/.ray"
TOKEN=""
if [ -n "${RAY_CLUSTER_TOKEN_FILE:-}" ]; then
    [ -r "$RAY_CLUSTER_TOKEN_FILE" ] || die "RAY_CLUSTER_TOKEN_FILE=$RAY_CLUSTER_TOKEN_FILE cannot be read"
    TOKEN="$(tr -d ' \t\r\n' <"$RAY_CLUSTER_TOKEN_FILE")"
    [ -n "$TOKEN" ] || die "RAY_CLUSTER_TOKEN_FILE=$RAY_CLUSTER_TOKEN_FILE is empty"
elif [ -n "${RAY_CLUSTER_TOKEN:-}" ]; then
    TOKEN="$RAY_CLUSTER_TOKEN"
elif [ -s "$TOKEN_PATH" ]; then
    log "keeping the cluster token in $TOKEN_PATH"
else
    TOKEN="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    log "generated a new cluster token"
fi
unset RAY_CLUSTER_TOKEN
if [ -n "$TOKEN" ]; then
    [[ "$TOKEN" =~ ^[[:graph:]]+$ ]] || die "the cluster token may hold only printable characters without spaces"
    (
        umask 077
        printf '%s\n' "$TOKEN" >"$TOKEN_PATH.new" # printf is a builtin: no argv
    )
    own "$TOKEN_PATH.new"
    mv -f "$TOKEN_PATH.new" "$TOKEN_PATH"
    log "wrote the cluster token to $TOKEN_PATH (mode 0600)"
fi
TOKEN=""
chmod 0600 "$TOKEN_PATH"

# ---------------------------------------------------------------- 3. the node's address
NODE_IP="${RAY_NODE_IP_ADDRESS:-}"
[ -n "$NODE_IP" ] || NODE_IP="$(metadata_ip)"
log "node address: $NODE_IP"

# ---------------------------------------------------------------- 4. ~/.ray/env.sh
write_env() { # $1: the GCS address
    {
        echo "# Written by ray-head-setup.sh: this cluster's settings for shells on the head."
        [ "${RAY_SKIP_INSTALL:-0}" = 1 ] || echo "export PATH=\"$VENV/bin:\$PATH\""
        [ -z "${RAY_TMPDIR:-}" ] || echo "export RAY_TMPDIR=$(sq "$RAY_TMPDIR")"
        echo "export RAY_AUTH_MODE=token"
        echo "export RAY_ADDRESS=$(sq "$1")"
    } >"$ENV_PATH.new"
    chmod 0644 "$ENV_PATH.new"
    own "$ENV_PATH.new"
    mv -f "$ENV_PATH.new" "$ENV_PATH"
}
case "$NODE_IP" in *:*) ADDRESS="[$NODE_IP]:$GCS_PORT" ;; *) ADDRESS="$NODE_IP:$GCS_PORT" ;; esac
write_env "$ADDRESS"
BASHRC_LINE='[ -f "$HOME/.ray/env.sh" ] && . "$HOME/.ray/env.sh" # ray-head-setup'
if ! grep -qF '# ray-head-setup' "$RUN_HOME/.bashrc" 2>/dev/null; then
    printf '%s\n' "$BASHRC_LINE" >>"$RUN_HOME/.bashrc"
    own "$RUN_HOME/.bashrc"
fi

# ---------------------------------------------------------------- 5. installing
if [ "${RAY_SKIP_INSTALL:-0}" = 1 ]; then
    log "RAY_SKIP_INSTALL=1: using the ray on PATH"
else
    MARK="$(install_commands | sha256sum | cut -c1-16)"
    if as_user "test -x \"$VENV/bin/ray\" && grep -qx $MARK \"$VENV/.ray-head-setup\"" 2>/dev/null; then
        log "already installed from ${RAY_INSTALL_SPEC}"
    else
        log "installing from ${RAY_INSTALL_SPEC} (a source build takes several minutes)"
        as_user "$(install_commands)
ray --version
echo $MARK >\"$VENV/.ray-head-setup\""
    fi
fi

# ---------------------------------------------------------------- 6. starting the head
if [ "${RAY_SKIP_START:-0}" = 1 ]; then
    log "RAY_SKIP_START=1: not starting Ray"
    exit 0
fi
START="ray start --head --port=$GCS_PORT --node-ip-address=$(sq "$NODE_IP") --autoscaling-config=$(sq "$YAML_PATH")"
[ -z "${RAY_HEAD_NUM_CPUS:-}" ] || START="$START --num-cpus=$(whole RAY_HEAD_NUM_CPUS 0)"
[ -z "${RAY_CLIENT_SERVER_PORT:-}" ] || START="$START --ray-client-server-port=$(whole RAY_CLIENT_SERVER_PORT 0)"
OUT="$(as_user ". \"\$HOME/.ray/env.sh\"
unset RAY_ADDRESS
ray stop >/dev/null 2>&1 || true
ulimit -n 65536 2>/dev/null || true
$START 2>&1")" || {
    printf '%s\n' "$OUT" >&2
    die "ray start failed"
}
printf '%s\n' "$OUT" >&2
# With RAY_GCS_PORT=0 the GCS picked its port: keep the real address.
STARTED="$(printf '%s\n' "$OUT" | sed -n "s/.*ray start --address='\([^']*\)'.*/\1/p" | head -n 1)"
if [ -n "$STARTED" ] && [ "$STARTED" != "$ADDRESS" ]; then
    write_env "$STARTED"
    ADDRESS="$STARTED"
fi
log "Ray head started at $ADDRESS; its autoscaler follows $YAML_PATH"
log "on this node: source ~/.ray/env.sh && ray status"
