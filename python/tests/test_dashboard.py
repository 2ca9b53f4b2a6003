"""The dashboard page in a real browser: headless Chromium (Debian's package),
driven over the DevTools protocol, signs in with the cluster token through the
login form and watches the node list and the autoscaler's status change when a
worker joins. Screenshots go to a folder the test prints."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import RAY, run_script

try:
    import websocket  # websocket-client: scripts/test.sh installs it
except ImportError:  # pragma: no cover - a missing dependency must fail, not skip
    websocket = None

CONFIG = """
cluster_name: dashboard
max_workers: 2
idle_timeout_minutes: 10
provider:
  type: fake_multinode
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
  cpu_worker:
    resources: {CPU: 2}
    node_config: {}
    max_workers: 2
head_node_type: ray.head.default
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1300",
]


class Browser:
    """One Chromium page over the DevTools protocol."""

    def __init__(self, profile):
        exe = shutil.which("chromium")
        if exe is None:
            pytest.fail("Debian's chromium is not installed (scripts/test.sh installs it: apt-get install chromium)")
        if websocket is None:
            pytest.fail("the websocket-client package is missing (scripts/test.sh installs it into .venv)")
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, "--user-data-dir=" + profile, "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()) and time.time() < deadline:
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        pages = json.load(urllib.request.urlopen("http://127.0.0.1:{}/json/list".format(port), timeout=10))
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError("{}: {}".format(method, msg["error"]))
                return msg.get("result", {})

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_for(self, expression, timeout=60, what=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.eval(expression):
                    return
            except RuntimeError:
                pass  # the page is navigating
            time.sleep(0.2)
        raise AssertionError("timed out waiting for {} on {}".format(what or expression, self.eval("location.href")))

    def screenshot(self, path):
        import base64

        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    b = Browser(profile)
    yield b
    b.close()


def node_rows(b):
    return b.eval("document.querySelectorAll('#nodes tbody tr').length")


def test_the_page_signs_in_and_follows_a_worker_joining(tmp_path, browser):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(CONFIG)
    out = subprocess.run(
        [RAY, "start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0",
         "--ray-client-server-port", "0", "--autoscaling-config", str(cfg)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    root = os.path.join(os.environ["RAY_TMPDIR"], "ray")
    url = open(os.path.join(root, "ray_current_dashboard")).read().strip()
    token = open(os.path.join(os.environ["HOME"], ".ray", "auth_token")).read().strip()
    shots = os.environ.get("RAY_DASHBOARD_SHOTS") or str(tmp_path / "screenshots")
    os.makedirs(shots, exist_ok=True)
    print("dashboard screenshots in", shots)

    # Without the cookie the page sends the browser to the login form.
    browser.call("Page.navigate", url=url + "/")
    browser.wait_for("location.pathname === '/login' && !!document.getElementById('token')", what="the login form")
    assert token not in browser.eval("location.href")
    browser.eval("document.getElementById('token').focus()")
    browser.call("Input.insertText", text="not-the-token")
    browser.eval("document.getElementById('sign-in').click()")
    browser.wait_for("!!document.getElementById('error')", what="the wrong token refused")
    browser.eval("document.getElementById('token').focus()")
    browser.call("Input.insertText", text=token)
    browser.eval("document.getElementById('sign-in').click()")
    browser.wait_for("location.pathname === '/' && document.querySelectorAll('#nodes tbody tr').length === 1",
                     what="the dashboard with the head node")
    assert token not in browser.eval("location.href"), "the token never goes in a URL"
    assert browser.eval("document.cookie") == "", "the login cookie is HttpOnly"
    browser.wait_for("document.getElementById('status-text').textContent.includes('Autoscaler status')")
    before = browser.eval("document.getElementById('status-text').textContent")
    assert browser.eval("document.getElementById('node-count').textContent") == "1"
    browser.screenshot(os.path.join(shots, "dashboard-head-only.png"))

    # Demand for 2 CPUs: the autoscaler launches a worker; the page follows live.
    r = run_script("import ray\nray.init(address='auto')\nfrom ray.autoscaler.sdk import request_resources\nrequest_resources(num_cpus=2)\n")
    assert r.returncode == 0, r.stderr
    t0 = time.time()
    browser.wait_for("document.getElementById('status-text').textContent.includes('cpu_worker')",
                     timeout=90, what="the autoscaler's status naming the worker type")
    browser.wait_for("document.querySelectorAll('#nodes tbody tr').length === 2 && "
                     "document.getElementById('node-count').textContent === '2'", timeout=90, what="the worker row")
    print("worker on the page {:.1f}s after the demand".format(time.time() - t0))
    after = browser.eval("document.getElementById('status-text').textContent")
    assert after != before
    assert browser.eval("[...document.querySelectorAll('#nodes tbody tr')].some(r => r.textContent.includes('cpu_worker'))")

    # A job and its logs on the page.
    out = subprocess.run([RAY, "job", "submit", "--submission-id", "page-demo", "--", sys.executable, "-c",
                          "print('hello from a submitted job')"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    browser.wait_for("document.getElementById('job-logs').textContent.includes('hello from a submitted job')",
                     what="the job's logs")
    assert "SUCCEEDED" in browser.eval("document.querySelector('#jobs tbody').textContent")
    browser.screenshot(os.path.join(shots, "dashboard-worker-joined.png"))
