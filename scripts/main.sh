#!/usr/bin/env bash
# The main job: an autoscaling cluster on this machine (the embedded fake_multinode
# provider starts each worker node as a local raylet process) and a workload that
# makes it grow and then shrink back to the head alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# A private temp root: this demo never touches a cluster you run in /tmp/ray.
export RAY_TMPDIR="$(mktemp -d -t ray-demo-XXXXXX)"
trap 'step "ray stop"; ray stop' EXIT

step "ray start --head --num-cpus 0 --autoscaling-config configs/local.yaml"
ray start --head --port 0 --node-ip-address 127.0.0.1 --num-cpus 0 --autoscaling-config configs/local.yaml

step "ray status (a head alone)"
ray status

step "the workload (examples/autoscaling_demo.py)"
python examples/autoscaling_demo.py

step "ray status (after the scale-down)"
ray status

step "the autoscaler's story (ray monitor, last lines)"
ray monitor --no-follow --lines 40
