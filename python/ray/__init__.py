"""Ray, with a Rust runtime: the cluster's Python API."""

from ray._raylet import __version__  # noqa: F401

__all__ = ["__version__"]
