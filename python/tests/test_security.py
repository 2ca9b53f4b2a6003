"""The cluster token with Python drivers and workers in the picture."""

import os
import stat
import subprocess

import ray


def test_a_local_ray_init_creates_a_private_token():
    token_file = os.path.join(os.environ["HOME"], ".ray", "auth_token")
    assert not os.path.exists(token_file)
    ray.init(num_cpus=1)

    @ray.remote
    def f():
        return 1

    assert ray.get(f.remote()) == 1
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert len(open(token_file).read().strip()) == 64


def test_the_token_stays_out_of_logs_and_process_listings():
    ray.init(num_cpus=1)

    @ray.remote
    def chatty():
        print("working")
        return os.getpid()

    worker_pid = ray.get(chatty.remote())
    token = open(os.path.join(os.environ["HOME"], ".ray", "auth_token")).read().strip()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert token not in ps
    assert token not in open("/proc/{}/cmdline".format(worker_pid)).read()
    session = ray._private.worker.global_connection().session_dir
    logs = os.path.join(session, "logs")
    names = os.listdir(logs)
    assert any(n.startswith("worker-") for n in names), names
    for n in names:
        with open(os.path.join(logs, n), errors="replace") as f:
            assert token not in f.read(), n


def test_a_driver_with_the_wrong_token_is_refused(tmp_path):
    from conftest import RAY, run_script

    out = subprocess.run(
        [RAY, "start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    r = run_script("import ray\nray.init(address='auto')\n", env={"RAY_AUTH_TOKEN": "wrong-token"})
    assert r.returncode != 0
    assert "token" in r.stderr and "wrong-token" not in r.stderr
