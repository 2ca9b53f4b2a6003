"""Placement groups: bundles of resources reserved together across the cluster
(all or nothing), for tasks that must run side by side or apart. The GCS
reserves them on the raylets in two phases; a group that fits nowhere yet waits
and is demand the autoscaler launches nodes for."""

import os
import numbers

from ray._private import worker as _worker

VALID_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _conn():
    import ray

    conn = _worker.global_connection()
    if conn is None:
        ray.init()
        conn = _worker.global_connection()
    return conn


class PlacementGroupID:
    """A placement group's id (18 bytes)."""

    def __init__(self, binary):
        self._binary = binary

    def binary(self):
        return self._binary

    def hex(self):
        return self._binary.hex()

    def __eq__(self, other):
        return isinstance(other, PlacementGroupID) and other._binary == self._binary

    def __hash__(self):
        return hash(self._binary)

    def __repr__(self):
        return "PlacementGroupID({})".format(self.hex())


class PlacementGroup:
    """A handle to a placement group."""

    def __init__(self, id, bundle_cache=None):
        self.id = id
        self._bundle_cache = bundle_cache

    @property
    def bundle_specs(self):
        """The bundles, as resource dicts."""
        if self._bundle_cache is None:
            info = _conn().gcs.get_placement_group(self.id.hex())
            self._bundle_cache = [dict(info["bundles"][i]) for i in sorted(info["bundles"])] if info else []
        return list(self._bundle_cache)

    @property
    def bundle_count(self):
        return len(self.bundle_specs)

    def ready(self):
        """An ObjectRef that is ready once every bundle is reserved (it runs a
        tiny task in bundle 0): `ray.get(pg.ready(), timeout=...)`."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(self, placement_group_bundle_index=0)
        return _bundle_reservation_check().options(num_cpus=0, scheduling_strategy=strategy).remote(self)

    def wait(self, timeout_seconds=30):
        """True once every bundle is reserved; False if that did not happen
        within `timeout_seconds`."""
        if not isinstance(timeout_seconds, numbers.Number) or timeout_seconds < 0:
            raise ValueError("timeout_seconds must be a non-negative number, got {!r}.".format(timeout_seconds))
        return _conn().gcs.wait_placement_group(self.id.hex(), float(timeout_seconds))

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return "PlacementGroup(id={})".format(self.id.hex())

    def __reduce__(self):
        return (_rebuild, (self.id.binary(), self._bundle_cache))


def _rebuild(binary, bundles):
    return PlacementGroup(PlacementGroupID(binary), bundles)


_check = None


def _bundle_reservation_check():
    global _check
    if _check is None:
        import ray

        @ray.remote(num_cpus=0, max_retries=0)
        def bundle_reservation_check(placement_group):
            return placement_group

        _check = bundle_reservation_check
    return _check


def _validate_bundles(bundles):
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("placement_group: `bundles` must be a non-empty list of resource dicts, got {!r}.".format(bundles))
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict):
            raise ValueError("placement_group: bundle {} must be a dict of resource amounts, got {!r}.".format(i, b))
        clean = {}
        for k, v in b.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Number) or v < 0:
                raise ValueError(
                    "placement_group: bundle {} has {!r}: {!r}; amounts must be non-negative numbers.".format(i, k, v)
                )
            if v > 0:
                clean[k] = float(v)
        if not clean:
            raise ValueError(
                "placement_group: bundle {} is {!r}; a bundle must ask for some resource with an amount above 0.".format(i, b)
            )
        out.append(clean)
    return out


def placement_group(bundles, strategy="PACK", name="", lifetime=None, _max_cpu_fraction_per_node=None, _soft_target_node_id=None):
    """Reserves `bundles` (resource dicts) together by `strategy`: PACK (as few
    nodes as possible), SPREAD (as many as possible), STRICT_PACK (one node) or
    STRICT_SPREAD (one node per bundle). Returns at once; use `.ready()` or
    `.wait()` to wait for the reservation. `lifetime="detached"` keeps it after
    the job ends."""
    bundles = _validate_bundles(bundles)
    if strategy not in VALID_STRATEGIES:
        raise ValueError(
            "Invalid placement group strategy {!r}: expected one of {}.".format(strategy, ", ".join(VALID_STRATEGIES))
        )
    if lifetime not in (None, "detached"):
        raise ValueError("placement_group: `lifetime` must be None or \"detached\", got {!r}.".format(lifetime))
    if not isinstance(name, str):
        raise TypeError("placement_group: `name` must be a string, got {!r}.".format(name))
    conn = _conn()
    job = conn.core.job_id
    binary = os.urandom(14) + bytes.fromhex(job)
    conn.gcs.create_placement_group(
        binary.hex(), name, strategy, bundles, job, lifetime == "detached", conn.namespace()
    )
    return PlacementGroup(PlacementGroupID(binary), bundles)


def remove_placement_group(placement_group):
    """Removes the group: its bundles are given back and tasks running in it stop."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError("remove_placement_group expects a PlacementGroup, got {!r}.".format(placement_group))
    _conn().gcs.remove_placement_group(placement_group.id.hex())


def get_placement_group(placement_group_name):
    """The live placement group named `placement_group_name`."""
    conn = _conn()
    info = conn.gcs.get_placement_group("", placement_group_name, conn.namespace())
    if info is None:
        raise ValueError("Failed to look up placement group with name: {}".format(placement_group_name))
    return PlacementGroup(PlacementGroupID(bytes.fromhex(info["placement_group_id"])))


def placement_group_table(placement_group=None):
    """The state of one placement group, or of all of them by id."""
    conn = _conn()
    if placement_group is not None:
        info = conn.gcs.get_placement_group(placement_group.id.hex())
        return info or {}
    return {g["placement_group_id"]: g for g in conn.gcs.placement_groups()}


def get_current_placement_group():
    """The placement group the calling task runs in, or None (always None in a driver)."""
    conn = _worker.global_connection()
    current = getattr(conn, "current_placement_group", None) if conn is not None else None
    if not current:
        return None
    return PlacementGroup(PlacementGroupID(bytes.fromhex(current[0])))
