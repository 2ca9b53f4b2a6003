"""Google's error bodies and the Compute resources' naming rules."""
import re

BASE = "https://www.googleapis.com/compute/v1/"

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
}

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
METADATA_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ApiError(Exception):
    """An error the API answers with: HTTP status, `errors[].reason`, message."""

    def __init__(self, code, reason, message, status=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.headers = headers or {}

    def body(self):
        return {"error": {"code": self.code, "message": self.message, "status": self.status,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


def invalid(field, value, why):
    return ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. {why}")


def not_found(path):
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def check_labels(labels, field):
    if not isinstance(labels, dict):
        raise invalid(field, labels, "Labels must be a map of strings.")
    if len(labels) > 64:
        raise invalid(field, len(labels), "A resource can have at most 64 labels.")
    for k, v in labels.items():
        if not isinstance(k, str) or not LABEL_KEY.match(k):
            raise invalid(f"{field}", k, "Label keys must start with a lowercase letter and contain only lowercase letters, digits, '_' and '-' (at most 63 characters).")
        if not isinstance(v, str) or not LABEL_VALUE.match(v):
            raise invalid(f"{field}.{k}", v, "Label values may contain only lowercase letters, digits, '_' and '-' (at most 63 characters).")


def last(url_or_path):
    """`zones/us-west1-a/machineTypes/n1-standard-2` (or a full URL) -> its last segment."""
    return str(url_or_path).rstrip("/").rsplit("/", 1)[-1]


def strip_base(url):
    """A resource reference as a path: full URLs lose the API base, `projects/...` stays."""
    url = str(url)
    for prefix in (BASE, "https://compute.googleapis.com/compute/v1/"):
        if url.startswith(prefix):
            return url[len(prefix):]
    return url
