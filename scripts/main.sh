#!/usr/bin/env bash
# The main job: `ray up` of an autoscaling cluster on this machine (the embedded
# fake_multinode provider starts each worker node as a local raylet process),
# `ray submit` of a workload that makes it grow and then shrink back to the head
# alone, and `ray down`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# A private temp root and home: this demo never touches a cluster you run in
# /tmp/ray, nor your ~/.ray token or home folder (`ray up` writes the head's config
# there, as Ray does).
export RAY_TMPDIR="$(mktemp -d -t ray-demo-XXXXXX)"
export HOME="$RAY_TMPDIR/home"
mkdir -p "$HOME"
trap 'step "ray down configs/local.yaml --yes"; ray down configs/local.yaml --yes' EXIT

step "ray up configs/local.yaml --yes (the head and its autoscaler, on this machine)"
ray up configs/local.yaml --yes

step "ray status (a head alone)"
ray status

step "ray submit configs/local.yaml examples/autoscaling_demo.py (work that makes the cluster grow, then shrink)"
ray submit configs/local.yaml examples/autoscaling_demo.py

step "ray status (after the scale-down)"
ray status

step "the autoscaler's story (ray monitor, last lines)"
ray monitor configs/local.yaml --no-follow --lines 40
