"""The Compute Engine state of one project and the calls the provider makes on it.

Time moves on its own: an operation finishes, and an instance goes from
PROVISIONING through STAGING to RUNNING, when enough wall time has passed
(checked on every request; no background threads).
"""
import base64
import hashlib
import ipaddress
import itertools
import json
import time

import filters
from errors import BASE, METADATA_KEY, NAME, UUID, ApiError, check_labels, invalid, last, not_found, strip_base

# The machine types every zone offers: guestCpus, memoryMb, built-in GPUs.
MACHINE_TYPES = {
    "e2-micro": (2, 1024, 0), "e2-small": (2, 2048, 0), "e2-medium": (2, 4096, 0),
    "e2-standard-2": (2, 8192, 0), "e2-standard-4": (4, 16384, 0), "e2-standard-8": (8, 32768, 0),
    "n1-standard-1": (1, 3840, 0), "n1-standard-2": (2, 7680, 0), "n1-standard-4": (4, 15360, 0),
    "n1-standard-8": (8, 30720, 0), "n1-standard-16": (16, 61440, 0), "n1-highmem-8": (8, 53248, 0),
    "n2-standard-2": (2, 8192, 0), "n2-standard-4": (4, 16384, 0), "n2-standard-8": (8, 32768, 0),
    "n2-standard-16": (16, 65536, 0), "c2-standard-4": (4, 16384, 0),
    "a2-highgpu-1g": (12, 87040, 1), "g2-standard-4": (4, 16384, 1),
}
ACCELERATOR_TYPES = {"nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-k80", "nvidia-tesla-p100", "nvidia-l4", "nvidia-tesla-a100"}

INSTANCE_FIELDS = {
    "advancedMachineFeatures", "canIpForward", "confidentialInstanceConfig", "deletionProtection", "description",
    "disks", "displayDevice", "guestAccelerators", "hostname", "instanceEncryptionKey", "keyRevocationActionType",
    "labels", "machineType", "metadata", "minCpuPlatform", "name", "networkInterfaces", "networkPerformanceConfig",
    "params", "reservationAffinity", "resourcePolicies", "scheduling", "serviceAccounts", "shieldedInstanceConfig",
    "sourceMachineImage", "tags",
}
SCHEDULING_FIELDS = {"automaticRestart", "instanceTerminationAction", "onHostMaintenance", "preemptible", "provisioningModel", "maxRunDuration", "nodeAffinities", "minNodeCpus", "localSsdRecoveryTimeout"}
LIST_FIELDS = {"name", "status", "labels", "machineType", "zone", "id", "cpuPlatform", "creationTimestamp"}


def fingerprint(obj):
    # Web-safe base64, as Google encodes `bytes` fields in JSON (the client decodes that alphabet).
    return base64.urlsafe_b64encode(hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).digest()[:8]).decode()


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def unknown_field(name, where):
    return ApiError(400, "badRequest", f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")


class World:
    def __init__(self, project, zones, subnets, delays, iam):
        self.project = project
        self.zones = zones  # zone -> region
        self.iam = iam
        self.delays = delays  # provision, staging, op, delete (seconds)
        self.ids = itertools.count(4_000_000_000_000_000_000 + int(time.time()) % 1000 * 1000)
        self.instances = {}  # (zone, name) -> record
        self.ops = {}  # name -> op
        self.due = []  # (time, op name, effect)
        self.request_ids = {}  # requestId -> op name
        self.networks = {"default": {"kind": "compute#network", "id": str(next(self.ids)), "name": "default",
                                     "autoCreateSubnetworks": True, "selfLink": f"{BASE}projects/{project}/global/networks/default"}}
        self.subnets = {}
        for region, cidr in subnets.items():
            self.subnets[(region, "default")] = {
                "kind": "compute#subnetwork", "id": str(next(self.ids)), "name": "default", "region": f"{BASE}projects/{project}/regions/{region}",
                "network": self.networks["default"]["selfLink"], "ipCidrRange": cidr,
                "selfLink": f"{BASE}projects/{project}/regions/{region}/subnetworks/default"}
        self.firewalls = {}
        self.metadata = {"kind": "compute#metadata", "items": []}
        self.metadata["fingerprint"] = fingerprint(self.metadata["items"])
        self.stockouts = []  # [{"zone": z|"*", "machineType": t|"*"}]
        self.cpu_quota = {}  # region -> vCPUs
        self.used_ips = set()
        self.nat = itertools.count(2)

    # ---- time ----------------------------------------------------------------------
    def tick(self):
        t = time.time()
        ready = [d for d in self.due if d[0] <= t]
        self.due = [d for d in self.due if d[0] > t]
        for _, name, effect in sorted(ready, key=lambda d: d[0]):
            op = self.ops[name]
            error = effect()
            op.update(status="DONE", progress=100, endTime=now_rfc3339())
            if error:
                code, message, http = error
                op["error"] = {"errors": [{"code": code, "message": message}]}
                op["httpErrorStatusCode"] = http
                op["httpErrorMessage"] = {403: "FORBIDDEN", 503: "SERVICE UNAVAILABLE", 409: "CONFLICT"}.get(http, "BAD REQUEST")

    def new_op(self, kind, target, zone, effect, delay):
        name = f"operation-{int(time.time() * 1000)}-{next(self.ids):x}"
        scope = f"projects/{self.project}/zones/{zone}" if zone else f"projects/{self.project}/global"
        op = {"kind": "compute#operation", "id": str(next(self.ids)), "name": name, "operationType": kind,
              "targetLink": f"{BASE}{target}", "status": "RUNNING", "progress": 0, "user": "tester@example.com",
              "insertTime": now_rfc3339(), "startTime": now_rfc3339(), "selfLink": f"{BASE}{scope}/operations/{name}"}
        if zone:
            op["zone"] = f"{BASE}projects/{self.project}/zones/{zone}"
        self.ops[name] = op
        self.due.append((time.time() + delay, name, effect))
        return op

    def operation(self, zone, name):
        op = self.ops.get(name)
        if op is None or (op.get("zone", "").rsplit("/", 1)[-1] or None) != zone:
            where = f"zones/{zone}" if zone else "global"
            raise not_found(f"projects/{self.project}/{where}/operations/{name}")
        return op

    def with_request_id(self, request_id, make):
        if request_id is None:
            return make()
        if not UUID.match(request_id) or request_id == "00000000-0000-0000-0000-000000000000":
            raise invalid("requestId", request_id, "Must be a valid UUID (the zero UUID is not supported).")
        if request_id in self.request_ids:
            return self.ops[self.request_ids[request_id]]
        op = make()
        self.request_ids[request_id] = op["name"]
        return op

    # ---- checks --------------------------------------------------------------------
    def check_project(self, project):
        if project != self.project:
            raise not_found(f"projects/{project}")

    def check_zone(self, zone):
        if zone not in self.zones:
            raise not_found(f"projects/{self.project}/zones/{zone}")
        return self.zones[zone]

    def check_instance(self, zone, body):
        if not isinstance(body, dict):
            raise ApiError(400, "badRequest", "Invalid JSON payload received. Expected an object for 'resource'.")
        for k in body:
            if k not in INSTANCE_FIELDS:
                raise unknown_field(k, "resource")
        name = body.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise invalid("resource.name", name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        mt = body.get("machineType")
        if not mt:
            raise ApiError(400, "required", "Required field 'resource.machineType' not specified")
        path = strip_base(mt)
        parts = path.split("/")
        if "machineTypes" not in parts or parts[parts.index("machineTypes") - 1] != zone or last(path) not in MACHINE_TYPES:
            raise invalid("resource.machineType", mt, f"Machine type with name '{last(path)}' does not exist in zone '{zone}'.")
        disks = body.get("disks")
        if not isinstance(disks, list) or not disks:
            raise ApiError(400, "required", "Required field 'resource.disks' not specified")
        for i, d in enumerate(disks):
            if not isinstance(d, dict):
                raise invalid(f"resource.disks[{i}]", d, "Expected an object.")
            ip = d.get("initializeParams") or {}
            if i == 0 and not d.get("boot"):
                raise invalid("resource.disks[0].boot", d.get("boot"), "The first disk must be the boot disk.")
            if i > 0 and d.get("boot"):
                raise invalid(f"resource.disks[{i}].boot", True, "Only one boot disk is allowed.")
            if d.get("boot") and not (ip.get("sourceImage") or d.get("source")):
                raise ApiError(400, "required", f"Required field 'resource.disks[{i}].initializeParams.sourceImage' not specified")
            img = ip.get("sourceImage")
            if img and "/global/images/" not in strip_base(img):
                raise invalid(f"resource.disks[{i}].initializeParams.sourceImage", img, "Expected projects/{project}/global/images/{image} or .../images/family/{family}.")
            size = ip.get("diskSizeGb")
            if size is not None:
                try:
                    n = int(size)
                except (TypeError, ValueError):
                    raise invalid(f"resource.disks[{i}].initializeParams.diskSizeGb", size, "Expected an integer.")
                if n < 10:
                    raise invalid(f"resource.disks[{i}].initializeParams.diskSizeGb", size, "Disks must be at least 10 GB.")
        nics = body.get("networkInterfaces")
        if not isinstance(nics, list) or not nics:
            raise invalid("resource.networkInterfaces", "", "At least one network interface is required.")
        for i, nic in enumerate(nics):
            net = last(nic.get("network", "default"))
            if nic.get("network") and net not in self.networks:
                raise not_found(f"projects/{self.project}/global/networks/{net}")
            if nic.get("subnetwork"):
                sp = strip_base(nic["subnetwork"]).split("/")
                region = sp[sp.index("regions") + 1] if "regions" in sp else self.zones[zone]
                if region != self.zones[zone]:
                    raise invalid(f"resource.networkInterfaces[{i}].subnetwork", nic["subnetwork"], f"Subnetwork must be in the instance's region {self.zones[zone]}.")
                if (region, sp[-1]) not in self.subnets:
                    raise not_found(f"projects/{self.project}/regions/{region}/subnetworks/{sp[-1]}")
        sched = body.get("scheduling", {})
        if not isinstance(sched, dict):
            raise ApiError(400, "badRequest", "Invalid JSON payload received. Proto field is not repeating, cannot start list. (at 'resource.scheduling')")
        for k in sched:
            if k not in SCHEDULING_FIELDS:
                raise unknown_field(k, "resource.scheduling")
        spot = sched.get("preemptible") is True or sched.get("provisioningModel") == "SPOT"
        if sched.get("provisioningModel") not in (None, "SPOT", "STANDARD"):
            raise invalid("resource.scheduling.provisioningModel", sched["provisioningModel"], "Expected SPOT or STANDARD.")
        if spot and (sched.get("automaticRestart") is True or sched.get("onHostMaintenance") == "MIGRATE"):
            raise invalid("resource.scheduling", "", "Preemptible and Spot instances must have automaticRestart false and onHostMaintenance TERMINATE.")
        gas = body.get("guestAccelerators") or []
        for i, g in enumerate(gas):
            at = strip_base(g.get("acceleratorType", ""))
            ap = at.split("/")
            if last(at) not in ACCELERATOR_TYPES or "acceleratorTypes" not in ap or ap[ap.index("acceleratorTypes") - 1] != zone:
                raise invalid(f"resource.guestAccelerators[{i}].acceleratorType", g.get("acceleratorType"), f"Accelerator type does not exist in zone '{zone}'.")
            if not isinstance(g.get("acceleratorCount"), int) or g["acceleratorCount"] < 1:
                raise invalid(f"resource.guestAccelerators[{i}].acceleratorCount", g.get("acceleratorCount"), "Expected a positive integer.")
        if gas and sched.get("onHostMaintenance") != "TERMINATE":
            raise ApiError(400, "badRequest", "Instances with guest accelerators do not support live migration.")
        md = body.get("metadata") or {}
        keys = set()
        for i, item in enumerate(md.get("items") or []):
            k = item.get("key")
            if not isinstance(k, str) or not METADATA_KEY.match(k):
                raise invalid(f"resource.metadata.items[{i}].key", k, "Metadata keys may contain letters, digits, '-' and '_' (1-128 characters).")
            if k in keys:
                raise invalid(f"resource.metadata.items[{i}].key", k, "Duplicate metadata key.")
            keys.add(k)
            if not isinstance(item.get("value", ""), str):
                raise invalid(f"resource.metadata.items[{i}].value", item.get("value"), "Expected a string.")
        if len(json.dumps(md)) > 512 * 1024:
            raise invalid("resource.metadata", "", "Metadata is larger than 512 KB.")
        check_labels(body.get("labels", {}), "resource.labels")
        for i, sa in enumerate(body.get("serviceAccounts") or []):
            email = sa.get("email")
            if email != "default" and not self.iam.has_account(email):
                raise invalid(f"resource.serviceAccounts[{i}].email", email, f"The user does not have access to service account '{email}'.")

    # ---- instances -----------------------------------------------------------------
    def ip_for(self, region, subnet="default"):
        sub = self.subnets.get((region, subnet))
        net = ipaddress.ip_network(sub["ipCidrRange"]) if sub else ipaddress.ip_network("10.128.0.0/20")
        for n, host in enumerate(net.hosts()):
            if n == 0:
                continue  # .1 is the gateway
            if str(host) not in self.used_ips:
                self.used_ips.add(str(host))
                return str(host)
        raise ApiError(503, "resourceExhausted", f"IP space of the subnetwork in {region} is exhausted.")

    def view(self, rec):
        i = dict(rec["body"])
        t = time.time() - rec["t0"]
        provision, staging = self.delays["provision"], self.delays["staging"]
        status = rec.get("status") or ("PROVISIONING" if t < provision else "STAGING" if t < provision + staging else "RUNNING")
        i["status"] = status
        return i

    def insert_instance(self, zone, body, request_id):
        region = self.check_zone(zone)
        self.check_instance(zone, body)

        def make():
            name = body["name"]
            if (zone, name) in self.instances:
                raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists")
            mt = last(body["machineType"])
            record = self.make_record(zone, region, body)
            self.instances[(zone, name)] = record
            target = f"projects/{self.project}/zones/{zone}/instances/{name}"

            def finish():
                blocked = next((s for s in self.stockouts if s.get("zone") in ("*", zone) and s.get("machineType") in ("*", mt)), None)
                used = sum(MACHINE_TYPES[last(r["body"]["machineType"])][0] for (z, n), r in self.instances.items()
                           if self.zones[z] == region and n != name)
                limit = self.cpu_quota.get(region)
                error = None
                if blocked:
                    error = ("ZONE_RESOURCE_POOL_EXHAUSTED", f"The zone 'projects/{self.project}/zones/{zone}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later.", 503)
                elif limit is not None and used + MACHINE_TYPES[mt][0] > limit:
                    error = ("QUOTA_EXCEEDED", f"Quota 'CPUS' exceeded.  Limit: {float(limit)} in region {region}.", 403)
                if error:
                    self.instances.pop((zone, name), None)
                    self.used_ips.discard(record["body"]["networkInterfaces"][0].get("networkIP"))
                return error

            op = self.new_op("insert", target, zone, finish, self.delays["op"])
            op["targetId"] = record["body"]["id"]
            return op

        return self.with_request_id(request_id, make)

    def make_record(self, zone, region, body):
        body = json.loads(json.dumps(body))
        iid = str(next(self.ids))
        mt = last(body["machineType"])
        body.update(kind="compute#instance", id=iid, creationTimestamp=now_rfc3339(),
                    machineType=f"{BASE}projects/{self.project}/zones/{zone}/machineTypes/{mt}",
                    zone=f"{BASE}projects/{self.project}/zones/{zone}",
                    selfLink=f"{BASE}projects/{self.project}/zones/{zone}/instances/{body['name']}",
                    labels=body.get("labels", {}), cpuPlatform="Intel Cascade Lake")
        body["labelFingerprint"] = fingerprint(body["labels"])
        for n, nic in enumerate(body["networkInterfaces"]):
            nic["name"] = f"nic{n}"
            nic["network"] = f"{BASE}projects/{self.project}/global/networks/{last(nic.get('network', 'default'))}"
            nic["subnetwork"] = f"{BASE}projects/{self.project}/regions/{region}/subnetworks/{last(nic.get('subnetwork', 'default'))}"
            nic["networkIP"] = self.ip_for(region, last(nic["subnetwork"])) if n == 0 else f"10.200.{n}.{next(self.nat) % 250}"
            for ac in nic.get("accessConfigs") or []:
                ac.setdefault("type", "ONE_TO_ONE_NAT")
                ac.setdefault("name", "External NAT")
                ac["natIP"] = f"198.51.100.{next(self.nat) % 250 + 2}"
        for d in body["disks"]:
            d.setdefault("type", "PERSISTENT")
            d.setdefault("autoDelete", True)
        return {"body": body, "t0": time.time(), "status": None}

    def instance(self, zone, name):
        self.check_zone(zone)
        rec = self.instances.get((zone, name))
        if rec is None:
            raise not_found(f"projects/{self.project}/zones/{zone}/instances/{name}")
        return rec

    def list_instances(self, zone, query):
        self.check_zone(zone)
        try:
            parsed = filters.parse(query.get("filter"))
            items = [self.view(r) for (z, _), r in sorted(self.instances.items()) if z == zone]
            items = [i for i in items if filters.matches(parsed, i, LIST_FIELDS)]
        except filters.FilterError as e:
            raise invalid("filter", query.get("filter"), f"Invalid list filter expression: {e}")
        return self.page(items, query, "compute#instanceList", f"projects/{self.project}/zones/{zone}/instances")

    def page(self, items, query, kind, path):
        if "orderBy" in query and query["orderBy"] not in ("name", "creationTimestamp desc"):
            raise invalid("orderBy", query["orderBy"], "Only 'name' and 'creationTimestamp desc' are supported.")
        try:
            size = int(query.get("maxResults", 500))
        except ValueError:
            raise invalid("maxResults", query.get("maxResults"), "Expected an integer.")
        if not 0 <= size <= 500:
            raise invalid("maxResults", size, "Must be between 0 and 500.")
        size = size or 500
        start = 0
        if query.get("pageToken"):
            try:
                start = int(base64.b64decode(query["pageToken"]).decode().split(":")[1])
            except (ValueError, IndexError):
                raise invalid("pageToken", query["pageToken"], "Invalid page token.")
        out = {"kind": kind, "id": path, "selfLink": f"{BASE}{path}"}
        chunk = items[start:start + size]
        if chunk:
            out["items"] = chunk
        if start + size < len(items):
            out["nextPageToken"] = base64.b64encode(f"offset:{start + size}".encode()).decode()
        return out

    def delete_instance(self, zone, name, request_id):
        def make():
            rec = self.instance(zone, name)
            if rec.get("status") == "STOPPING":
                raise ApiError(400, "resourceNotReady", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' is not ready")
            rec["status"] = "STOPPING"

            def finish():
                gone = self.instances.pop((zone, name), None)
                if gone:
                    self.used_ips.discard(gone["body"]["networkInterfaces"][0].get("networkIP"))

            op = self.new_op("delete", f"projects/{self.project}/zones/{zone}/instances/{name}", zone, finish, self.delays["delete"])
            op["targetId"] = rec["body"]["id"]
            return op

        return self.with_request_id(request_id, make)

    def set_labels(self, zone, name, body, request_id):
        rec = self.instance(zone, name)
        for k in body:
            if k not in ("labels", "labelFingerprint"):
                raise unknown_field(k, "resource")
        labels = body.get("labels") or {}
        check_labels(labels, "resource.labels")
        if body.get("labelFingerprint") != rec["body"]["labelFingerprint"]:
            raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")

        def make():
            rec["body"]["labels"] = dict(labels)
            rec["body"]["labelFingerprint"] = fingerprint(labels)
            return self.new_op("setLabels", f"projects/{self.project}/zones/{zone}/instances/{name}", zone, lambda: None, 0)

        return self.with_request_id(request_id, make)

    # ---- networks, firewalls, project metadata -------------------------------------------
    def network(self, name):
        if name not in self.networks:
            raise not_found(f"projects/{self.project}/global/networks/{name}")
        return self.networks[name]

    def insert_network(self, body, request_id):
        for k in body:
            if k not in ("name", "description", "autoCreateSubnetworks", "routingConfig", "mtu"):
                raise unknown_field(k, "resource")
        name = body.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise invalid("resource.name", name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")

        def make():
            if name in self.networks:
                raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/global/networks/{name}' already exists")
            link = f"{BASE}projects/{self.project}/global/networks/{name}"

            def finish():
                self.networks[name] = {"kind": "compute#network", "id": str(next(self.ids)), "name": name,
                                       "autoCreateSubnetworks": bool(body.get("autoCreateSubnetworks")), "selfLink": link}
                if body.get("autoCreateSubnetworks"):
                    for n, region in enumerate(sorted(set(self.zones.values()))):
                        self.subnets[(region, name)] = {
                            "kind": "compute#subnetwork", "id": str(next(self.ids)), "name": name, "network": link,
                            "region": f"{BASE}projects/{self.project}/regions/{region}", "ipCidrRange": f"10.{128 + n}.0.0/20",
                            "selfLink": f"{BASE}projects/{self.project}/regions/{region}/subnetworks/{name}"}

            return self.new_op("insert", f"projects/{self.project}/global/networks/{name}", None, finish, self.delays["op"])

        return self.with_request_id(request_id, make)

    def subnetworks(self, region, query):
        if region not in set(self.zones.values()):
            raise not_found(f"projects/{self.project}/regions/{region}")
        items = [s for (r, _), s in sorted(self.subnets.items()) if r == region]
        return self.page(items, query, "compute#subnetworkList", f"projects/{self.project}/regions/{region}/subnetworks")

    def insert_firewall(self, body, request_id):
        for k in body:
            if k not in ("name", "description", "network", "priority", "sourceRanges", "destinationRanges", "sourceTags", "targetTags",
                         "sourceServiceAccounts", "targetServiceAccounts", "allowed", "denied", "direction", "disabled", "logConfig"):
                raise unknown_field(k, "resource")
        name = body.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise invalid("resource.name", name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        self.network(last(body.get("network", "default")))
        allowed = body.get("allowed") or []
        if not allowed and not body.get("denied"):
            raise ApiError(400, "required", "Required field 'resource.allowed' not specified")
        for i, a in enumerate(allowed):
            if a.get("IPProtocol") not in ("tcp", "udp", "icmp", "all", "esp", "ah", "sctp", "ipip"):
                raise invalid(f"resource.allowed[{i}].IPProtocol", a.get("IPProtocol"), "Unknown protocol.")
            for p in a.get("ports") or []:
                lo, _, hi = str(p).partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()) or not 0 <= int(lo) <= 65535 or (hi and int(hi) > 65535):
                    raise invalid(f"resource.allowed[{i}].ports", p, "Expected a port or a range of ports.")
        for i, r in enumerate(body.get("sourceRanges") or []):
            try:
                ipaddress.ip_network(r)
            except ValueError:
                raise invalid(f"resource.sourceRanges[{i}]", r, "Expected a CIDR range.")
        if body.get("direction", "INGRESS") == "INGRESS" and not (body.get("sourceRanges") or body.get("sourceTags") or body.get("sourceServiceAccounts")):
            raise ApiError(400, "required", "An ingress rule needs sourceRanges, sourceTags or sourceServiceAccounts.")

        def make():
            if name in self.firewalls:
                raise ApiError(409, "alreadyExists", f"The resource 'projects/{self.project}/global/firewalls/{name}' already exists")
            fw = dict(body, kind="compute#firewall", id=str(next(self.ids)), direction=body.get("direction", "INGRESS"),
                      priority=body.get("priority", 1000), network=f"{BASE}projects/{self.project}/global/networks/{last(body.get('network', 'default'))}",
                      selfLink=f"{BASE}projects/{self.project}/global/firewalls/{name}", creationTimestamp=now_rfc3339())
            self.firewalls[name] = fw
            return self.new_op("insert", f"projects/{self.project}/global/firewalls/{name}", None, lambda: None, self.delays["op"])

        return self.with_request_id(request_id, make)

    def list_firewalls(self, query):
        try:
            parsed = filters.parse(query.get("filter"))
            items = [f for _, f in sorted(self.firewalls.items()) if filters.matches(parsed, f, {"name", "network", "direction", "priority"})]
        except filters.FilterError as e:
            raise invalid("filter", query.get("filter"), f"Invalid list filter expression: {e}")
        return self.page(items, query, "compute#firewallList", f"projects/{self.project}/global/firewalls")

    def project_view(self):
        return {"kind": "compute#project", "name": self.project, "id": "1234567890", "commonInstanceMetadata": self.metadata,
                "defaultServiceAccount": f"1234567890-compute@developer.gserviceaccount.com",
                "selfLink": f"{BASE}projects/{self.project}"}

    def set_common_metadata(self, body, request_id):
        for k in body:
            if k not in ("fingerprint", "items", "kind"):
                raise unknown_field(k, "resource")
        if body.get("fingerprint") != self.metadata["fingerprint"]:
            raise ApiError(412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint.")
        items = body.get("items") or []
        for i, item in enumerate(items):
            if not METADATA_KEY.match(str(item.get("key", ""))):
                raise invalid(f"resource.items[{i}].key", item.get("key"), "Metadata keys may contain letters, digits, '-' and '_'.")

        def make():
            self.metadata = {"kind": "compute#metadata", "items": items, "fingerprint": fingerprint(items)}
            return self.new_op("setMetadata", f"projects/{self.project}", None, lambda: None, self.delays["op"])

        return self.with_request_id(request_id, make)
