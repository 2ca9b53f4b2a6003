"""The autoscaler's Python API."""

from ray.autoscaler import sdk
from ray.autoscaler.sdk import request_resources

__all__ = ["sdk", "request_resources"]
