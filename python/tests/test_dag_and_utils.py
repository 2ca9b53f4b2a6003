"""The Ray DAG API (`.bind()` / `dag.execute()`), ray.experimental.tqdm_ray,
ray.util.inspect_serializability, ray.cloudpickle and the exception classes of
ray.exceptions, against real clusters started by ray.init()."""

import io
import re
import pickle
import threading
import time
import types
import warnings

import pytest

import ray
from conftest import run_script


pytestmark = pytest.mark.filterwarnings("ignore::ray.util.annotations.RayDeprecationWarning")


def _runs(path):
    with open(path) as f:
        return f.read().split()


# ------------------------------------------------------------------ Ray DAG


def test_function_dag_chains_and_node_kwargs(ray_2cpu):
    @ray.remote
    def add(src, inc=1):
        return src + inc

    first = add.bind(1, inc=2)
    assert ray.get(first.execute()) == 3
    second = add.bind(first, inc=3)
    assert ray.get(second.execute()) == 6
    # A node given as a keyword argument is resolved too.
    third = add.bind(second, inc=first)
    ref = third.execute()
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 9
    # .options(...).bind keeps the options: two return values.
    @ray.remote
    def pair(x):
        return x, x * 10

    refs = pair.options(num_returns=2).bind(add.bind(1)).execute()
    assert isinstance(refs, list) and ray.get(refs) == [2, 20]


def test_each_node_runs_once_per_execute_even_when_shared(ray_2cpu, tmp_path):
    log = str(tmp_path / "runs.txt")

    @ray.remote
    def source(tag):
        with open(log, "a") as f:
            f.write(tag + "\n")
        return 5

    @ray.remote
    def consume(a, b, nested, mapping):
        # Refs nested in containers arrive as refs (as in Ray); top-level ones as values.
        return a + b + sum(ray.get(nested)) + ray.get(mapping["k"])

    shared = source.bind("shared")
    dag = consume.bind(shared, shared, [shared, shared], {"k": shared})
    assert ray.get(dag.execute()) == 25
    assert _runs(log) == ["shared"]
    assert ray.get(dag.execute()) == 25
    assert _runs(log) == ["shared", "shared"]


def test_input_node_forms(ray_2cpu):
    from ray.dag import InputAttributeNode, InputNode, MultiOutputNode

    @ray.remote
    def double(x):
        return x * 2

    @ray.remote
    def inc(x):
        return x + 1

    @ray.remote
    def plus(x, y):
        return x + y

    with InputNode() as inp:
        dag = plus.bind(double.bind(inp), inc.bind(inp))
    assert ray.get(dag.execute(2)) == 7
    assert ray.get(dag.execute(3)) == 10

    with InputNode() as inp:
        first, x = inp[0], inp.x
        assert isinstance(first, InputAttributeNode) and inp[0] is first
        dag = plus.bind(first, x)
    assert ray.get(dag.execute(1, x=2)) == 3

    with InputNode() as inp:
        dag = MultiOutputNode([inc.bind(inp["x"]), inc.bind(inp["y"])])
    refs = dag.execute({"x": 1, "y": 2})
    assert isinstance(refs, list) and ray.get(refs) == [2, 3]

    assert ray.get(MultiOutputNode((plus.bind(1, 2), inc.bind(0))).execute()) == [3, 1]
    with InputNode() as inp:
        dag = plus.bind(inp[0], inp[1])
    assert ray.get(dag.execute([20, 3])) == 23
    assert ray.get(dag.execute(20, 4)) == 24
    with InputNode() as inp:
        dag = inc.bind(inp.attr)
    assert ray.get(dag.execute(types.SimpleNamespace(attr=41))) == 42


def test_actor_dag_method_calls_run_in_bind_order(ray_2cpu):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.value = start

        def add(self, x):
            self.value += x

        def get(self):
            return self.value

    @ray.remote
    def total(a, b):
        return a + b

    c1 = Counter.bind(10)
    first_get = c1.get.bind()
    assert ray.get(first_get.execute()) == 10
    c2 = Counter.bind(10)
    c1.add.bind(2)
    c1.add.bind(4)
    c2.add.bind(6)
    dag = total.bind(c1.get.bind(), c2.get.bind())
    # Each execute makes new actors and replays their bound calls in order.
    assert ray.get(dag.execute()) == 32
    assert ray.get(dag.execute()) == 32

    # Executing a ClassNode returns the new actor's handle.
    handle = Counter.options(name="made_by_dag").bind(7).execute()
    assert ray.get(handle.get.remote()) == 7
    assert ray.get(ray.get_actor("made_by_dag").get.remote()) == 7
    other = Counter.bind(1).execute()
    assert other != handle and ray.get(other.get.remote()) == 1


def test_actor_handle_bind_reuses_the_actor(ray_2cpu):
    from ray.dag import ClassMethodNode, InputNode, MultiOutputNode

    @ray.remote
    class Worker:
        def __init__(self):
            self.forwarded = 0

        def forward(self, x):
            self.forwarded += 1
            return x + 1

        @ray.method(num_returns=2)
        def split(self, x):
            return x, -x

        def count(self):
            return self.forwarded

    worker = Worker.remote()
    with InputNode() as inp:
        dag = MultiOutputNode([worker.forward.bind(inp)])
    assert ray.get(dag.execute(1)) == [2]
    assert ray.get(dag.execute(2)) == [3]
    assert ray.get(dag.execute(3)) == [4]
    assert ray.get(worker.count.remote()) == 3

    with InputNode() as inp:
        outs = worker.split.bind(inp)
        assert isinstance(outs, tuple) and len(outs) == 2
        assert all(isinstance(o, ClassMethodNode) and o.is_class_method_output for o in outs)
        dag = MultiOutputNode(list(outs))
    assert ray.get(dag.execute(5)) == [5, -5]


def test_dag_errors_and_node_api(ray_2cpu):
    from ray.dag import ClassNode, DAGNode, FunctionNode, InputNode
    from ray.util.annotations import RayDeprecationWarning

    @ray.remote
    def f(x):
        if x < 0:
            raise ValueError("negative input")
        return x

    @ray.remote
    class A:
        def m(self, x):
            return x

    node = f.bind(1)
    assert isinstance(node, FunctionNode) and isinstance(node, DAGNode) and isinstance(A.bind(), ClassNode)
    assert node.get_args() == (1,) and node.get_kwargs() == {} and len(node.get_stable_uuid()) == 32
    assert "FunctionNode" in str(node)
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used"):
        node.remote()
    with pytest.raises(AttributeError, match=r"\.bind\(\) cannot be used again"):
        node.bind()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        A.bind().nope
    with pytest.raises(AttributeError, match=r"\.remote\(\) cannot be used on ClassMethodNodes"):
        A.bind().m.remote
    with pytest.warns(RayDeprecationWarning, match=r"DAGNode.execute\(\) is deprecated"):
        node.execute()
    with pytest.raises(ValueError, match="should not take any args"):
        InputNode(1)
    with pytest.raises(ValueError, match="cannot be used as args"):
        with InputNode() as inp:
            A.bind(inp)
    outside = InputNode()
    with pytest.raises(AssertionError, match="context manager"):
        f.bind(outside).execute(1)
    with InputNode() as a, InputNode() as b:
        two = f.bind(f.bind(a), f.bind(b))
    with pytest.raises(AssertionError, match="only have one unique InputNode"):
        two.execute(1)
    with pytest.raises(ValueError, match="Invalid input type"):
        ray.dag.MultiOutputNode(node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="negative input"):
            ray.get(f.bind(-1).execute())
    # apply_recursive walks children first, each node once; deep chains do
    # not hit the recursion limit.
    deep = f.bind(0)
    for _ in range(1500):
        deep = FunctionNode(lambda x: x, [deep], {}, {})
    depth = deep.apply_recursive(lambda n: 1 + max([0] + [a for a in n.get_args() if isinstance(a, int)]))
    assert depth == 1501


def test_execute_warns_once_per_module_as_ray_does():
    code = """
import ray
ray.init(num_cpus=1)

@ray.remote
def f(x):
    return x + 1

node = f.bind(1)
assert ray.get(node.execute()) == 2
assert ray.get(f.bind(node).execute()) == 3
print(ray.get(f.bind(f.bind(node)).execute()))
"""
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "4\n"
    warned = [l for l in r.stderr.splitlines() if "RayDeprecationWarning" in l]
    assert len(warned) == 1, r.stderr
    assert warned[0].endswith(
        ":10: RayDeprecationWarning: DAGNode.execute() is deprecated and will be removed in a future release."
    )


# ------------------------------------------------------------ tqdm_ray

TQDM_DRIVER = """
import time
import ray
from ray.experimental.tqdm_ray import tqdm

ray.init(num_cpus=2)

@ray.remote
def f(name):
    for x in tqdm(range(12), desc=name, flush_interval_s=0.05):
        time.sleep(0.05)
    print("done", name)

@ray.remote
class Loader:
    def load(self):
        bar = tqdm(total=4, desc="loading")
        for _ in range(4):
            bar.update(1)
        bar.close()
        return 4

ray.get([f.remote("task 1"), f.remote("task 2")])
assert ray.get(Loader.remote().load.remote()) == 4
local = tqdm(range(3), desc="driver bar")
for _ in local:
    pass
print("finished")
"""


def _tqdm_installed():
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


# Runs the driver as if the tqdm package were not installed.
WITHOUT_TQDM = "import sys\nsys.modules['tqdm'] = None\nsys.modules['tqdm.auto'] = None\n"


@pytest.mark.parametrize("tqdm_package", ["as installed", "missing"])
def test_tqdm_ray_bars_are_drawn_by_the_driver(tqdm_package):
    with_tqdm = tqdm_package == "as installed" and _tqdm_installed()
    r = run_script(TQDM_DRIVER if tqdm_package == "as installed" else WITHOUT_TQDM + TQDM_DRIVER, timeout=120)
    assert r.returncode == 0, r.stderr
    # The state lines never reach the output: the driver draws them.
    assert "__ray_tqdm_magic_token__" not in r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "(f pid=" in r.stdout and any(l.endswith("done task 1") for l in out)
    assert out[-1] == "finished"
    err = r.stderr
    for desc in ("task 1", "task 2", "loading"):
        assert desc in err, err
    assert "(pid=" in err and "driver bar" in err
    if with_tqdm:
        # tqdm's own bars, each drawn up to its end.
        for desc in ("task 1", "task 2", "loading", "driver bar"):
            assert re.search(re.escape(desc) + r": 100%\|", err), err
    else:
        # The plain-text bar: one line per state, the last one complete.
        lines = [l for l in err.splitlines() if "task 1" in l]
        assert lines[-1].startswith("(pid=") and "100%|##########| 12/12" in lines[-1], lines
        assert any("loading: 100%|##########| 4/4" in l for l in err.splitlines())
        assert any(l.startswith("driver bar: 100%") for l in err.splitlines())


def test_tqdm_ray_safe_print_and_state_lines(capsys, monkeypatch):
    import builtins

    from ray.experimental import tqdm_ray

    # The bar manager replaces builtins.print (as Ray's does): undone after the test.
    monkeypatch.setattr(builtins, "print", builtins.print)
    monkeypatch.setattr(tqdm_ray, "_manager", None)

    bar = tqdm_ray.tqdm(total=5, desc="local", flush_interval_s=0)
    bar.update(2)
    assert bar.n == 2 and bar.total == 5
    bar.total = 6
    tqdm_ray.safe_print("between bars")
    line = '1(f pid=7) {"__magic_token__": "__ray_tqdm_magic_token__", "x": 3, "pos": 0, "desc": "remote",' \
        ' "total": 3, "unit": "it", "ip": "10.9.9.9", "pid": 7, "uuid": "u1", "closed": true}'
    assert tqdm_ray.process_log_line(line[1:])
    assert not tqdm_ray.process_log_line("(f pid=7) just text")
    bar.close()
    captured = capsys.readouterr()
    assert "between bars" in captured.out
    assert "remote" in captured.err and "(pid=7, ip=10.9.9.9)" in captured.err


# ------------------------------------------- inspect_serializability, cloudpickle

GLOBAL_LOCK = threading.Lock()


def test_inspect_serializability_reports_the_culprit():
    from ray.util import inspect_serializability
    from ray.util.check_serialize import FailureTuple

    ok, failures = inspect_serializability(5, print_file=io.StringIO())
    assert ok is True and failures == set()

    # A function local to the test is pickled by value, with the globals it uses.
    def _uses_global_lock():
        return GLOBAL_LOCK

    out = io.StringIO()
    ok, failures = inspect_serializability(_uses_global_lock, name="fn", print_file=out)
    assert ok is False
    (failure,) = failures
    assert isinstance(failure, FailureTuple)
    assert failure.obj is GLOBAL_LOCK and failure.path == ("fn", "GLOBAL_LOCK") and failure.parent is _uses_global_lock
    lines = out.getvalue().splitlines()
    header = "Checking Serializability of {}".format(_uses_global_lock)
    assert lines[:3] == ["=" * min(len(header), 80), header, "=" * min(len(header), 80)]
    assert lines[3] == "\x1b[31m!!! FAIL\x1b[39m serialization: cannot pickle '_thread.lock' object"
    assert lines[4] == "Inspecting closure of '{}':".format(_uses_global_lock.__qualname__)
    assert lines[5] == "Detected 1 global variables. Checking serializability..."
    assert lines[6] == "    Serializing 'GLOBAL_LOCK' {}...".format(GLOBAL_LOCK)
    assert lines[8].startswith("    WARNING: Did not find non-serializable object in lock instance.")
    assert "\t\x1b[1mFailTuple(GLOBAL_LOCK [path=fn -> GLOBAL_LOCK, obj={}".format(GLOBAL_LOCK) in out.getvalue()
    assert lines[-1] == lines[0] and "was found to be non-serializable" in out.getvalue()

    class Holder:
        def __init__(self):
            self.fine = 1
            self.lock = threading.Lock()

    ok, failures = inspect_serializability(Holder(), name="holder", print_file=io.StringIO())
    assert not ok and [f.path for f in failures] == [("holder", "lock")]
    ok, failures = inspect_serializability(threading.Lock(), depth=0, print_file=io.StringIO())
    assert not ok and repr(list(failures)[0]).startswith("FailTuple(unknown [path=, obj=")


def test_ray_cloudpickle_is_the_cloudpickle_module():
    import cloudpickle

    import ray.cloudpickle
    from ray import cloudpickle as cp

    assert ray.cloudpickle is cloudpickle and cp is cloudpickle
    f = lambda x: x + 1  # noqa: E731
    assert pickle.loads(cp.dumps(f))(1) == 2


# ---------------------------------------------------------------- exceptions


def test_exception_classes_have_rays_bases_and_fields():
    ex = ray.exceptions
    bases = {
        "OutOfMemoryError": ex.RayError,
        "NodeDiedError": ex.RayError,
        "ObjectFetchTimedOutError": ex.ObjectLostError,
        "ReferenceCountingAssertionError": AssertionError,
        "ObjectFreedError": ex.ObjectLostError,
        "OutOfDiskError": ex.RayError,
        "RuntimeEnvSetupError": ex.RayError,
        "CrossLanguageError": ex.RayError,
        "LocalRayletDiedError": ex.RayError,
        "PendingCallsLimitExceeded": ex.RayError,
        "AsyncioActorExit": ex.RayError,
        "RayChannelError": ex.RaySystemError,
        "RayChannelTimeoutError": TimeoutError,
        "ActorAlreadyExistsError": ValueError,
        "ActorUnschedulableError": ex.RayError,
        "UnserializableException": ex.RayError,
    }
    for name, base in bases.items():
        assert issubclass(getattr(ex, name), base), name
        assert issubclass(getattr(ex, name), ex.RayError), name
    assert all(issubclass(t, BaseException) for t in ex.RAY_EXCEPTION_TYPES)

    lost = ex.ObjectFetchTimedOutError("ab" * 28, None, "")
    assert lost.object_ref_hex == "ab" * 28 and "timed out because no locations were found" in str(lost)
    assert "RAY_record_ref_creation_sites=1" in str(lost)
    sysd = ex.RaySystemError("boom", "tb")
    assert (sysd.client_exc, sysd.traceback_str, str(sysd)) == ("boom", "tb", "System error: boom\ntraceback: tb")
    actor = ex.RayActorError("ab" * 16, "it died", True, True)
    assert (actor.actor_id, actor.error_msg, actor.actor_init_failed, actor.preempted) == ("ab" * 16, "it died", True, True)
    assert str(ex.RuntimeEnvSetupError("pip failed")) == "Failed to set up runtime environment.\npip failed"
    assert str(ex.ActorUnschedulableError("no node")) == "The actor is not schedulable: no node"
    assert ex.OutOfMemoryError("killed").message == "killed" and ex.RpcError("x", rpc_code=14).rpc_code == 14
    # Every error survives pickling (errors travel between processes).
    for err in (lost, sysd, actor, ex.TaskCancelledError("TaskID(ab)", "stop"), ex.ObjectFreedError("ab" * 28, None, "x.py:3"),
                ex.ActorUnavailableError("restarting", b"\x01" * 16), ex.NodeDiedError("gone")):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err)
    # The runtime's own errors are still made from a message alone.
    assert str(ex.system_error("ObjectLostError", "value is gone")) == "value is gone"
    assert str(ex.system_error("ActorDiedError", "killed by `ray.kill`")) == "killed by `ray.kill`"
    assert "Task: TaskID(ab) was cancelled. stop" == str(ex.TaskCancelledError("TaskID(ab)", "stop"))


def test_runtime_errors_are_still_rays_classes(ray_1cpu):
    @ray.remote
    class A:
        def __init__(self):
            raise ValueError("bad config")

        def m(self):
            return 1

    a = A.remote()
    with pytest.raises(ray.exceptions.ActorDiedError) as e:
        ray.get(a.m.remote())
    assert isinstance(e.value, ray.exceptions.RayActorError) and e.value.actor_init_failed

    @ray.remote
    def slow():
        time.sleep(10)

    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(slow.remote(), timeout=0.1)
