"""IAM service accounts (iam.googleapis.com v1) and the project's IAM policy
(cloudresourcemanager.googleapis.com v3), as far as a bootstrap uses them."""
import itertools
import re

from errors import ApiError
from compute import fingerprint

ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
MEMBER = re.compile(r"^(user|serviceAccount|group|domain):.+$")
ROLE = re.compile(r"^(roles/[A-Za-z0-9_.]+|projects/[^/]+/roles/[A-Za-z0-9_.]+)$")


def err(code, status, message):
    return ApiError(code, status.lower(), message, status=status)


class Iam:
    def __init__(self, project):
        self.project = project
        self.accounts = {}  # email -> account
        self.account_policies = {}  # email -> policy
        self.policy = {"version": 1, "bindings": [{"role": "roles/owner", "members": ["user:tester@example.com"]}]}
        self.policy["etag"] = fingerprint(self.policy["bindings"])
        self.ids = itertools.count(100000000000000000001)
        # The Compute Engine default service account every project has.
        default = "1234567890-compute@developer.gserviceaccount.com"
        self.accounts[default] = {"name": f"projects/{project}/serviceAccounts/{default}", "projectId": project,
                                  "uniqueId": "100000000000000000000", "email": default, "displayName": "Compute Engine default service account"}

    def has_account(self, email):
        return email in self.accounts

    def check_project(self, project):
        if project not in (self.project, "-"):
            raise err(404, "NOT_FOUND", f"Project {project} not found or permission denied.")

    def create_account(self, project, body):
        self.check_project(project)
        for k in body:
            if k == "name" and body[k] == f"projects/{project}":
                continue  # google-cloud-rust repeats the path's resource in the body
            if k not in ("accountId", "serviceAccount"):
                raise err(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. Unknown name \"{k}\": Cannot find field.")
        aid = body.get("accountId", "")
        if not ACCOUNT_ID.match(aid):
            raise err(400, "INVALID_ARGUMENT", f"Invalid account ID {aid!r}: it must be 6-30 characters, start with a lowercase letter, and contain lowercase letters, digits and hyphens.")
        email = f"{aid}@{self.project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise err(409, "ALREADY_EXISTS", f"Service account {aid} already exists within project projects/{self.project}.")
        sa = body.get("serviceAccount") or {}
        acct = {"name": f"projects/{self.project}/serviceAccounts/{email}", "projectId": self.project, "uniqueId": str(next(self.ids)),
                "email": email, "displayName": sa.get("displayName", ""), "description": sa.get("description", ""),
                "etag": "MDEwMjE5MjA=", "oauth2ClientId": str(next(self.ids))}
        self.accounts[email] = acct
        return acct

    def get_account(self, project, key):
        self.check_project(project)
        for acct in self.accounts.values():
            if key in (acct["email"], acct["uniqueId"]):
                return acct
        raise err(404, "NOT_FOUND", f"Unknown service account")

    def check_policy(self, policy):
        for b in policy.get("bindings") or []:
            if not ROLE.match(str(b.get("role", ""))):
                raise err(400, "INVALID_ARGUMENT", f"Role {b.get('role')!r} is not supported.")
            for m in b.get("members") or []:
                if not MEMBER.match(m):
                    raise err(400, "INVALID_ARGUMENT", f"Invalid member {m!r}.")
                if m.startswith("serviceAccount:") and m.endswith(f"@{self.project}.iam.gserviceaccount.com") and not self.has_account(m.split(":", 1)[1]):
                    raise err(400, "INVALID_ARGUMENT", f"Service account {m.split(':', 1)[1]} does not exist.")

    def get_policy(self, project):
        self.check_project(project)
        return self.policy

    def set_policy(self, project, body):
        self.check_project(project)
        policy = body.get("policy")
        if not isinstance(policy, dict):
            raise err(400, "INVALID_ARGUMENT", "Request contains an invalid argument: policy is required.")
        if policy.get("etag") != self.policy["etag"]:
            raise err(409, "ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.")
        self.check_policy(policy)
        bindings = [{"role": b["role"], "members": sorted(set(b["members"]))} for b in policy.get("bindings") or [] if b.get("members")]
        self.policy = {"version": policy.get("version", 1), "bindings": bindings, "etag": fingerprint(bindings)}
        return self.policy

    def account_policy(self, project, email):
        self.get_account(project, email)
        pol = self.account_policies.get(email) or {"version": 1, "bindings": []}
        pol.setdefault("etag", fingerprint(pol["bindings"]))
        return pol

    def set_account_policy(self, project, email, body):
        current = self.account_policy(project, email)
        policy = body.get("policy") or {}
        if policy.get("etag") not in (None, current["etag"]):
            raise err(409, "ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.")
        self.check_policy(policy)
        bindings = [{"role": b["role"], "members": sorted(set(b["members"]))} for b in policy.get("bindings") or [] if b.get("members")]
        self.account_policies[email] = {"version": 1, "bindings": bindings, "etag": fingerprint(bindings)}
        return self.account_policies[email]
