"""`ray.cloudpickle`: the cloudpickle library Ray pickles functions and
classes with (`import ray.cloudpickle` / `from ray import cloudpickle` give
the `cloudpickle` module itself)."""

import sys

import cloudpickle as _cloudpickle

sys.modules[__name__] = _cloudpickle
