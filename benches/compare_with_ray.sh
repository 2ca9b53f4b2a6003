#!/usr/bin/env bash
# Runs benches/workload.py and benches/multinode.py on this package (.venv) and on Ray from PyPI (a venv of
# its own, .bench/ray-venv), one after the other in one run, and prints a table.
#   bash benches/compare_with_ray.sh [--quick]   (RAY_PYPI_VERSION=2.60.0 to pin)
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS="${1:-}"
[ -x .venv/bin/python ] || { echo "run the README's set-up first (.venv is missing)" >&2; exit 1; }
.venv/bin/python -m pip install --quiet numpy
if [ ! -x .bench/ray-venv/bin/python ]; then
    echo "==> creating .bench/ray-venv with ray ${RAY_PYPI_VERSION:-latest} from PyPI"
    python3 -m venv .bench/ray-venv
    .bench/ray-venv/bin/python -m pip install --quiet --upgrade pip
    .bench/ray-venv/bin/python -m pip install --quiet "ray${RAY_PYPI_VERSION:+==$RAY_PYPI_VERSION}" numpy
fi
tmp=$(mktemp -d)
# Each side gets its own temp root and home (its own cluster token), so neither
# sees the other's clusters.
mkdir -p "$tmp/home-ours" "$tmp/home-theirs" "$tmp/home-theirs-multi"
echo "==> this package"
HOME="$tmp/home-ours" RAY_TMPDIR="$tmp/ours" .venv/bin/python benches/workload.py $ARGS > "$tmp/ours.json"
echo "==> this package, several nodes (three nodes on this machine, then the autoscaler)"
HOME="$tmp/home-ours" RAY_TMPDIR="$tmp/ours" .venv/bin/python benches/multinode.py $ARGS > "$tmp/ours-multi.json"
echo "==> ray from PyPI"
HOME="$tmp/home-theirs" RAY_TMPDIR="$tmp/theirs" RAY_USAGE_STATS_ENABLED=0 .bench/ray-venv/bin/python benches/workload.py $ARGS > "$tmp/theirs.json" 2> "$tmp/theirs.err" || { cat "$tmp/theirs.err" >&2; exit 1; }
echo "==> ray from PyPI, several nodes"
# A home of its own: Ray's ray.init above leaves an ~/.ray/auth_token there that
# Ray's GCS then requires while its `ray start --address` does not send it.
HOME="$tmp/home-theirs-multi" RAY_TMPDIR="$tmp/theirs" RAY_USAGE_STATS_ENABLED=0 .bench/ray-venv/bin/python benches/multinode.py $ARGS > "$tmp/theirs-multi.json" 2> "$tmp/theirs.err" || { cat "$tmp/theirs.err" >&2; exit 1; }
.venv/bin/python - "$tmp/ours.json" "$tmp/theirs.json" "$tmp/ours-multi.json" "$tmp/theirs-multi.json" <<'PY'
import json, sys
# The figures are each run's last line (Ray prints its autoscaler's events too).
ours, theirs, ours_multi, theirs_multi = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:5])
ours.update(ours_multi)
theirs.update(theirs_multi)
rows = [
    ("seed example, whole script (s)", "seed_example_s", False),
    ("sync no-op tasks per second", "sync_noop_tasks_per_s", True),
    ("async no-op tasks per second", "async_noop_tasks_per_s", True),
    ("1 KB put+get per second", "put_get_1kb_per_s", True),
    ("100 MB numpy put (GB/s)", "put_100mb_gb_per_s", True),
    ("100 MB numpy get (GB/s)", "get_100mb_gb_per_s", True),
    ("100 MB bytes put (GB/s)", "put_100mb_bytes_gb_per_s", True),
    ("task round trip p50 (ms)", "task_roundtrip_p50_ms", False),
    ("task round trip p99 (ms)", "task_roundtrip_p99_ms", False),
    ("cross-node get of 100 MB (GB/s)", "cross_node_get_100mb_gb_per_s", True),
    ("small objects read across nodes per second", "cross_node_small_objects_per_s", True),
    ("first queued task to running on a new node (s)", "first_task_on_new_node_s", False),
    ("actor calls per second (sync loop)", "actor_sync_calls_per_s", True),
    ("actor calls per second (batch of calls in flight)", "actor_batch_calls_per_s", True),
    ("async actor calls per second (batch of calls in flight)", "actor_async_calls_per_s", True),
    ("streaming generator items per second (small values)", "streaming_items_per_s", True),
    ("streaming generator items per second (100 KiB values)", "streaming_100kb_items_per_s", True),
    ("actor creations per second (created and first call answered)", "actor_creations_per_s", True),
]
print()
print("| workload | this package | ray %s | ratio (ours vs ray, >1 is better) |" % theirs.get("ray_version"))
print("|---|---:|---:|---:|")
for name, key, higher in rows:
    a, b = ours[key], theirs[key]
    ratio = a / b if higher else b / a
    print("| %s | %.3g | %.3g | %.2fx |" % (name, a, b, ratio))
PY
rm -rf "$tmp"
