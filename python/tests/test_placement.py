"""Placement groups and scheduling strategies on a real loopback cluster of
three nodes, and a placement group as demand for the autoscaler."""

import time

import pytest

import ray
from ray.util import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import (
    In,
    NodeAffinitySchedulingStrategy,
    NodeLabelSchedulingStrategy,
    NotIn,
    PlacementGroupSchedulingStrategy,
)
from test_multinode import CONFIG as AUTOSCALING, start


def three_nodes(cpus=2):
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--labels", "zone=a")
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--labels", "zone=b,disk=ssd")
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--labels", "zone=c")
    ray.init(address="auto")
    return [n["NodeID"] for n in ray.nodes() if n["Alive"]]


@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()


def test_strict_spread_lands_on_three_nodes_and_strict_pack_on_one():
    nodes = three_nodes(cpus=3)
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert ray.get(pg.ready(), timeout=30) == pg
    table = placement_group_table(pg)
    assert table["state"] == "CREATED" and table["strategy"] == "STRICT_SPREAD"
    placed = [table["bundles_to_node_id"][i] for i in range(3)]
    assert sorted(placed) == sorted(nodes)
    # Each bundle's task runs where its bundle is.
    ran = ray.get(
        [where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)).remote() for i in range(3)],
        timeout=60,
    )
    assert ran == placed

    packed = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert packed.wait(30)
    t = placement_group_table(packed)
    assert t["bundles_to_node_id"][0] == t["bundles_to_node_id"][1]
    # 3 + 2 of the 9 CPUs are reserved now.
    free = ray.available_resources()
    assert free.get("CPU", 0) == 4, free
    remove_placement_group(pg)
    remove_placement_group(packed)
    deadline = time.time() + 10
    while ray.available_resources().get("CPU", 0) != 9 and time.time() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 9, "removed groups give their CPUs back"
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_a_group_that_fits_nowhere_stays_pending_and_ready_times_out():
    three_nodes()
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(pg.ready(), timeout=2)
    assert not pg.wait(1)
    t = placement_group_table(pg)
    assert t["state"] == "PENDING" and "waiting" in t["stats"]["scheduling_state"]
    # A group that waits holds nothing: other work runs meanwhile.
    assert len(ray.get([where.remote() for _ in range(3)], timeout=30)) == 3
    queued = where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
    remove_placement_group(pg)
    with pytest.raises(ray.exceptions.TaskUnschedulableError, match="removed"):
        ray.get(queued, timeout=30)
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError):
        placement_group([{"CPU": 0}])


def test_tasks_in_a_group_see_it_and_their_children_stay_in_it():
    three_nodes()
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD", name="workers")
    assert pg.wait(30)
    assert ray.util.get_placement_group("workers") == pg

    @ray.remote(num_cpus=1)
    def parent():
        current = ray.util.get_current_placement_group()
        child = ray.get(where.remote())
        return current.id.hex() if current else None, child, ray.get_runtime_context().get_node_id()

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    group, child_node, parent_node = ray.get(parent.options(scheduling_strategy=strategy).remote(), timeout=60)
    assert group == pg.id.hex()
    nodes = set(placement_group_table(pg)["bundles_to_node_id"].values())
    assert {child_node, parent_node} <= nodes, "the child ran in the group's other bundle"
    assert ray.util.get_current_placement_group() is None, "a driver is in no group"


def test_node_affinity_spread_and_labels_place_as_asked():
    nodes = three_nodes()
    target = nodes[1]
    ran = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(target, soft=False)).remote() for _ in range(6)], timeout=60)
    assert set(ran) == {target}
    gone = "ab" * 28
    soft = ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(gone, soft=True)).remote(), timeout=60)
    assert soft in nodes
    with pytest.raises(ray.exceptions.TaskUnschedulableError):
        ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(gone, soft=False)).remote(), timeout=60)

    @ray.remote(num_cpus=1)
    def slow():
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    time.sleep(1)  # the leases of the tasks above are returned (they linger 0.5 s)
    spread = ray.get([slow.options(scheduling_strategy="SPREAD").remote() for _ in range(3)], timeout=60)
    assert sorted(spread) == sorted(nodes), "one task per node"

    by_label = {n["NodeID"]: n["Labels"] for n in ray.nodes()}
    ssd = ray.get(where.options(scheduling_strategy=NodeLabelSchedulingStrategy({"disk": In("ssd")})).remote(), timeout=60)
    assert by_label[ssd]["disk"] == "ssd"
    not_a = ray.get(
        [where.options(scheduling_strategy=NodeLabelSchedulingStrategy({"zone": NotIn("a")}, soft={"zone": In("c")})).remote() for _ in range(2)],
        timeout=60,
    )
    assert {by_label[n]["zone"] for n in not_a} == {"c"}


def test_a_strict_spread_group_launches_exactly_two_nodes_which_go_after_it_is_removed(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(AUTOSCALING)
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--autoscaling-config", str(cfg))
    ray.init(address="auto")
    workers = lambda: [n for n in ray.nodes() if n["Alive"] and not n["IsHeadNode"]]  # noqa: E731
    pg = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_SPREAD")
    assert ray.get(pg.ready(), timeout=90) == pg
    t = placement_group_table(pg)
    assert len(set(t["bundles_to_node_id"].values())) == 2
    time.sleep(3)
    assert len(workers()) == 2, "exactly two nodes for two strictly spread bundles"
    remove_placement_group(pg)
    deadline = time.time() + 60
    while workers() and time.time() < deadline:
        time.sleep(0.5)
    assert workers() == [], "the nodes go once the group is removed and they are idle"
