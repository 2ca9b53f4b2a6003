"""A strict local stand-in for the Google Cloud REST APIs the `gcp` provider
calls, for the tests (no emulator of Compute Engine exists): Compute Engine v1
(instances, zone and global operations, networks, subnetworks, firewalls, project
metadata), IAM v1 service accounts, Resource Manager v3 project IAM policy, and
an OAuth token endpoint. What it models and what it does not is written down in
ARCHITECTURE.md ("The GCP Compute emulator").

Usage: python server.py --port P [--project ID] [--subnet REGION=CIDR ...]
       [--refresh-token T] [--provision-s S] [--op-s S] [--wait-cap-s S]

Every API call needs `Authorization: Bearer <token>` with a token from
POST /token (JSON or form: grant_type=refresh_token and the refresh token given on the
command line), as `authorized_user` credentials get one. Control endpoints for
tests (no auth): GET /_emulator/state, GET /_emulator/log, POST /_emulator/faults
(a list of {"method", "status", "reason", "message", "times", "zone",
"after"}; "after": the call takes effect and then its reply is the error),
POST /_emulator/stockouts ([{"zone", "machineType"}], "*" for any),
POST /_emulator/quota ({"region": vCPUs}), POST /_emulator/revoke (every token).
"""
import argparse
import http.server
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compute import World  # noqa: E402
from errors import ApiError  # noqa: E402
from iam import Iam  # noqa: E402

ZONES = {"us-west1-a": "us-west1", "us-west1-b": "us-west1", "us-west1-c": "us-west1",
         "us-central1-a": "us-central1", "us-central1-b": "us-central1", "us-central1-c": "us-central1", "us-central1-f": "us-central1",
         "us-east1-b": "us-east1", "us-east1-c": "us-east1", "europe-west4-a": "europe-west4"}

C = r"/compute/v1/projects/(?P<p>[^/]+)"
ROUTES = [
    ("GET", C + r"$", "projects.get"),
    ("POST", C + r"/setCommonInstanceMetadata$", "projects.setCommonInstanceMetadata"),
    ("GET", C + r"/zones/(?P<z>[^/]+)/instances$", "instances.list"),
    ("POST", C + r"/zones/(?P<z>[^/]+)/instances$", "instances.insert"),
    ("GET", C + r"/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$", "instances.get"),
    ("DELETE", C + r"/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$", "instances.delete"),
    ("POST", C + r"/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)/setLabels$", "instances.setLabels"),
    ("GET", C + r"/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)$", "zoneOperations.get"),
    ("POST", C + r"/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)/wait$", "zoneOperations.wait"),
    ("GET", C + r"/global/operations/(?P<o>[^/]+)$", "globalOperations.get"),
    ("POST", C + r"/global/operations/(?P<o>[^/]+)/wait$", "globalOperations.wait"),
    ("GET", C + r"/global/networks/(?P<n>[^/]+)$", "networks.get"),
    ("POST", C + r"/global/networks$", "networks.insert"),
    ("GET", C + r"/regions/(?P<r>[^/]+)/subnetworks$", "subnetworks.list"),
    ("GET", C + r"/global/firewalls$", "firewalls.list"),
    ("POST", C + r"/global/firewalls$", "firewalls.insert"),
    ("GET", C + r"/global/firewalls/(?P<n>[^/]+)$", "firewalls.get"),
    ("POST", r"/v1/projects/(?P<p>[^/]+)/serviceAccounts$", "serviceAccounts.create"),
    ("GET", r"/v1/projects/(?P<p>[^/]+)/serviceAccounts/(?P<n>[^/:]+)$", "serviceAccounts.get"),
    ("POST", r"/v1/projects/(?P<p>[^/]+)/serviceAccounts/(?P<n>[^/:]+):getIamPolicy$", "serviceAccounts.getIamPolicy"),
    ("POST", r"/v1/projects/(?P<p>[^/]+)/serviceAccounts/(?P<n>[^/:]+):setIamPolicy$", "serviceAccounts.setIamPolicy"),
    ("POST", r"/v3/projects/(?P<p>[^/:]+):getIamPolicy$", "projects.getIamPolicy"),
    ("POST", r"/v3/projects/(?P<p>[^/:]+):setIamPolicy$", "projects.setIamPolicy"),
]
ROUTES = [(m, re.compile(p), name) for m, p, name in ROUTES]


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.iam = Iam(args.project)
        subnets = dict(s.split("=", 1) for s in args.subnet)
        for region in set(ZONES.values()):
            subnets.setdefault(region, f"10.{128 + sorted(set(ZONES.values())).index(region)}.0.0/20")
        delays = {"provision": args.provision_s, "staging": args.provision_s, "op": args.op_s, "delete": args.op_s}
        self.world = World(args.project, ZONES, subnets, delays, self.iam)
        if args.no_default_network:
            self.world.networks.clear()
            self.world.subnets.clear()
        self.refresh_token = args.refresh_token
        self.tokens = set()
        self.faults = []
        self.log = []
        self.wait_cap = args.wait_cap_s


def handle(state, method, name, m, query, body):
    w, iam = state.world, state.iam
    p = m.group("p")
    g = m.groupdict()
    if name.startswith(("projects.get", "projects.set")) and "Iam" in name:
        iam.check_project(p)
        return iam.get_policy(p) if name == "projects.getIamPolicy" else iam.set_policy(p, body)
    if name.startswith("serviceAccounts."):
        if name == "serviceAccounts.create":
            return iam.create_account(p, body)
        if name == "serviceAccounts.get":
            return iam.get_account(p, g["n"])
        if name == "serviceAccounts.getIamPolicy":
            return iam.account_policy(p, g["n"])
        return iam.set_account_policy(p, g["n"], body)
    w.check_project(p)
    rid = query.get("requestId")
    if name == "projects.get":
        return w.project_view()
    if name == "projects.setCommonInstanceMetadata":
        return w.set_common_metadata(body, rid)
    if name == "instances.list":
        return w.list_instances(g["z"], query)
    if name == "instances.insert":
        return w.insert_instance(g["z"], body, rid)
    if name == "instances.get":
        return w.view(w.instance(g["z"], g["n"]))
    if name == "instances.delete":
        return w.delete_instance(g["z"], g["n"], rid)
    if name == "instances.setLabels":
        return w.set_labels(g["z"], g["n"], body, rid)
    if name in ("zoneOperations.get", "globalOperations.get", "zoneOperations.wait", "globalOperations.wait"):
        zone = g.get("z")
        if zone:
            w.check_zone(zone)
        op = w.operation(zone, g["o"])
        if name.endswith(".wait"):
            deadline = time.time() + state.wait_cap
            while op["status"] != "DONE" and time.time() < deadline:
                state.lock.release()
                try:
                    time.sleep(0.02)
                finally:
                    state.lock.acquire()
                w.tick()
        return op
    if name == "networks.get":
        return w.network(g["n"])
    if name == "networks.insert":
        return w.insert_network(body, rid)
    if name == "subnetworks.list":
        return w.subnetworks(g["r"], query)
    if name == "firewalls.list":
        return w.list_firewalls(query)
    if name == "firewalls.insert":
        return w.insert_firewall(body, rid)
    if name == "firewalls.get":
        if g["n"] not in w.firewalls:
            raise ApiError(404, "notFound", f"The resource 'projects/{p}/global/firewalls/{g['n']}' was not found")
        return w.firewalls[g["n"]]
    raise ApiError(404, "notFound", "Not Found")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, *a):
        pass

    def reply(self, code, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.serve("GET")

    def do_POST(self):
        self.serve("POST")

    def do_DELETE(self):
        self.serve("DELETE")

    def do_PATCH(self):
        self.serve("PATCH")

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def serve(self, method):
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        raw = self.read_body()
        with st.lock:
            if path.startswith("/_emulator/"):
                return self.control(method, path, raw)
            if path == "/token" and method == "POST":
                return self.token(raw)
            route = next(((name, m) for mm, rx, name in ROUTES if mm == method for m in [rx.match(path)] if m), None)
            if route is None:
                st.log.append(f"{method} {path} -> 404")
                return self.reply(404, ApiError(404, "notFound", f"The requested URL {path} was not found on this server.").body())
            name, m = route
            try:
                code, obj = 200, self.api(name, m, query, raw)
            except ApiError as e:
                code, obj = e.code, e.body()
                st.log.append(f"{name} {path} {url.query} -> {e.code} {e.reason}")
                return self.reply(e.code, obj, e.headers)
            st.log.append(f"{name} {path} {url.query} -> 200")
            self.reply(code, obj)

    def api(self, name, m, query, raw):
        st = self.state
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in st.tokens:
            raise ApiError(401, "authError", "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                           status="UNAUTHENTICATED", headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        zone = m.groupdict().get("z")
        fault = None
        for f in st.faults:
            if f.get("method") == name and f.get("zone") in (None, zone) and f.get("times", -1) != 0:
                if f.get("times", -1) > 0:
                    f["times"] -= 1
                fault = ApiError(f["status"], f["reason"], f.get("message", f["reason"]), status=f.get("statusName"))
                if not f.get("after"):
                    raise fault
                break
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(400, "parseError", "Invalid JSON payload received.")
        st.world.tick()
        out = handle(st, None, name, m, query, body)
        if fault:
            raise fault  # "after": the call took effect, but its reply is lost
        return out

    def token(self, raw):
        st = self.state
        # google-cloud-auth posts JSON; OAuth clients in general post a form.
        try:
            form = json.loads(raw) if raw.strip().startswith(b"{") else dict(urllib.parse.parse_qsl(raw.decode()))
        except ValueError:
            form = {}
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != st.refresh_token or not form.get("client_id"):
            st.log.append("token -> 400 invalid_grant")
            return self.reply(400, {"error": "invalid_grant", "error_description": "Bad Request"})
        tok = "ya29.emulator-" + secrets.token_hex(12)
        st.tokens.add(tok)
        st.log.append("token -> 200")
        self.reply(200, {"access_token": tok, "expires_in": 3599, "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/cloud-platform"})

    def control(self, method, path, raw):
        st = self.state
        w = st.world
        w.tick()
        what = path[len("/_emulator/"):]
        body = json.loads(raw) if raw else None
        if what == "state":
            return self.reply(200, {
                "instances": [dict(w.view(r), zoneName=z) for (z, _), r in sorted(w.instances.items())],
                "firewalls": list(w.firewalls.values()), "networks": list(w.networks.values()),
                "subnetworks": [dict(s) for s in w.subnets.values()], "projectMetadata": w.metadata,
                "serviceAccounts": list(st.iam.accounts.values()), "policy": st.iam.policy,
                "accountPolicies": st.iam.account_policies, "operations": len(w.ops),
            })
        if what == "log":
            return self.reply(200, st.log)
        if what == "faults" and method == "POST":
            st.faults = body or []
        elif what == "stockouts" and method == "POST":
            w.stockouts = body or []
        elif what == "quota" and method == "POST":
            w.cpu_quota = body or {}
        elif what == "revoke" and method == "POST":
            st.tokens.clear()
        elif what == "forget-request-ids" and method == "POST":
            w.request_ids.clear()
        else:
            return self.reply(404, {"error": f"no control endpoint {method} {what}"})
        self.reply(200, {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--project", default="ray-test-project")
    ap.add_argument("--subnet", action="append", default=[], help="REGION=CIDR of the default network's subnetwork")
    ap.add_argument("--no-default-network", action="store_true", help="start the project without its default network")
    ap.add_argument("--refresh-token", default="emulator-refresh-token")
    ap.add_argument("--provision-s", type=float, default=0.2)
    ap.add_argument("--op-s", type=float, default=0.2)
    ap.add_argument("--wait-cap-s", type=float, default=120.0)
    args = ap.parse_args()
    Handler.state = State(args)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
