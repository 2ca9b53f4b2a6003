"""A fault-injecting HTTP proxy in front of a moto server, for the AWS provider's
tests: EC2/IAM query-protocol requests pass through unchanged unless a rule
matches, in which case the proxy answers with an EC2 error document instead
(the faults moto cannot produce: no capacity, quotas, throttling, auth).

Usage: python fault_proxy.py PORT UPSTREAM RULES_JSON LOG
RULES_JSON is re-read on every request: a list of
  {"action": "RunInstances", "match": {"SubnetId": "subnet-1"}, "code": "...",
   "status": 500, "times": 2}
("times" absent or -1: every time). Each request appends one line to LOG:
  "<Action> <param>=<value> ... -> forwarded|<code>".
"""
import http.client
import http.server
import json
import sys
import threading
import urllib.parse

PORT, UPSTREAM, RULES, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
LOCK = threading.Lock()
USED = {}


def rule_for(params):
    try:
        with open(RULES) as f:
            rules = json.load(f)
    except (OSError, ValueError):
        rules = []
    for i, r in enumerate(rules):
        if r.get("action") != params.get("Action"):
            continue
        if any(params.get(k) != v for k, v in r.get("match", {}).items()):
            continue
        times = r.get("times", -1)
        key = (i, json.dumps(r, sort_keys=True))
        if times >= 0 and USED.get(key, 0) >= times:
            continue
        USED[key] = USED.get(key, 0) + 1
        return r
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        with LOCK:
            rule = rule_for(params) if params.get("Action") else None
            shown = " ".join(f"{k}={params[k]}" for k in ("InstanceType", "SubnetId", "InstanceMarketOptions.MarketType") if k in params)
            with open(LOG, "a") as f:
                f.write(f"{params.get('Action', method)} {shown} -> {rule['code'] if rule else 'forwarded'}\n")
        if rule:
            doc = (
                f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{rule['code']}</Code>"
                f"<Message>{rule.get('message', 'injected by the test proxy')}</Message></Error></Errors>"
                f"<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
            ).encode()
            self.send_response(rule.get("status", 400))
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)
            return
        conn = http.client.HTTPConnection(UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        conn.request(method, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    def do_POST(self):
        self.handle_one("POST")

    def do_GET(self):
        self.handle_one("GET")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
