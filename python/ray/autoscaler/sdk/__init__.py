"""`ray.autoscaler.sdk`: ask the autoscaler for capacity."""

from numbers import Number


def request_resources(num_cpus=None, bundles=None):
    """Asks the autoscaler to scale the cluster to fit the given resources at once.

    The cluster grows to hold them regardless of what is running; a new call
    replaces the previous request; `request_resources(num_cpus=0)` (or no arguments)
    clears it. `num_cpus=N` means N bundles of {"CPU": 1}; `bundles` adds more,
    e.g. [{"GPU": 1, "CPU": 4}].
    """
    if num_cpus is not None and not isinstance(num_cpus, int):
        raise TypeError("num_cpus should be of type int.")
    if num_cpus is not None and num_cpus < 0:
        raise ValueError("num_cpus must not be negative.")
    if bundles is not None:
        if not isinstance(bundles, list):
            raise TypeError("bundles should be of type List")
        for bundle in bundles:
            if not isinstance(bundle, dict):
                raise TypeError("each bundle should be a Dict.")
            for key, value in bundle.items():
                if not isinstance(key, str):
                    raise TypeError("each bundle key should be str.")
                if isinstance(value, bool) or not isinstance(value, Number):
                    raise TypeError("each bundle value should be a number (int or float).")
                if value < 0:
                    raise ValueError("each bundle value must not be negative.")
    import ray

    conn = ray._private.worker.global_connection()
    if conn is None:
        raise RuntimeError("Ray is not initialized yet")
    to_request = [{"CPU": 1.0} for _ in range(num_cpus or 0)]
    for bundle in bundles or []:
        to_request.append({k: float(v) for k, v in bundle.items()})
    conn.gcs.request_resources(to_request)


__all__ = ["request_resources"]
