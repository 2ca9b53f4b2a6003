"""`ray.util.inspect_serializability`: finds which part of an object cannot
be pickled (what Ray would fail to send to a task), printing what it tries on
the way in Ray's layout."""

import inspect
import sys

import cloudpickle

_RED = "\x1b[31m"
_FG_RESET = "\x1b[39m"
_BRIGHT = "\x1b[1m"
_ALL_RESET = "\x1b[0m"


class FailureTuple:
    """One object that failed to serialize: `obj`, `path` (the names from the
    inspected object down to it) and `parent` (the object that holds it)."""

    def __init__(self, obj, path, parent):
        self.obj = obj
        self.path = tuple(path)
        self.parent = parent

    @property
    def name(self):
        """The object's name (the last name of its path), or None."""
        return self.path[-1] if self.path else None

    def __repr__(self):
        names = ["unknown" if p is None else str(p) for p in self.path]
        return "FailTuple({} [path={}, obj={}, parent={}])".format(
            names[-1] if names else "unknown", " -> ".join(names), self.obj, self.parent
        )


class _Printer:
    """Writes indented lines to `file` (stdout when None); colour codes are
    left out on a terminal stream that is not a tty."""

    def __init__(self, file):
        self.file = file
        self.level = 0
        target = sys.stdout if file is None else file
        self.color = not (target in (sys.stdout, sys.stderr) and not _isatty(target))

    def line(self, text):
        print("    " * self.level + text, file=self.file)

    def paint(self, code, text, reset):
        return code + text + reset if self.color else text


def _isatty(stream):
    try:
        return stream.isatty()
    except Exception:  # noqa: BLE001 - a stream without isatty
        return False


def inspect_serializability(base_obj, name=None, depth=3, print_file=None):
    """Identifies what objects are preventing serialization.

    Args:
        base_obj: the object to check.
        name: its name (shown in the path of what fails).
        depth: how many levels of members and closure variables to look into.
        print_file: where to print (stdout when None).

    Returns:
        (serializable, set of FailureTuple): True and an empty set when the
        object can be pickled."""
    return _inspect(base_obj, name, depth, None, None, _Printer(print_file), ())


def _inspect(obj, name, depth, parent, failures, printer, path):
    top_level = failures is None
    if top_level:
        failures = set()
        header = "Checking Serializability of {}".format(obj)
        bar = "=" * min(len(header), 80)
        printer.line(bar)
        printer.line(header)
        printer.line(bar)
    else:
        printer.line("Serializing '{}' {}...".format(name, obj))
    try:
        cloudpickle.dumps(obj)
        return True, failures
    except Exception as e:  # noqa: BLE001 - any pickling failure is what we look for
        printer.line("{} serialization: {}".format(printer.paint(_RED, "!!! FAIL", _FG_RESET), e))
    here = path + ((name,) if name is not None else ())
    if depth == 0:
        failures.add(FailureTuple(obj, here, parent))
    if depth <= 0:
        return False, failures
    if inspect.isfunction(obj):
        _inspect_closure(obj, depth, failures, printer, here)
    else:
        _inspect_members(obj, depth, failures, printer, here)
    if not failures:
        failures.add(FailureTuple(obj, here, parent))
    if top_level:
        _print_summary(printer, failures, bar)
    return False, failures


def _check_all(items, depth, parent, failures, printer, path, found):
    """Inspects (name, value) pairs one level deeper until one fails."""
    for item_name, value in items:
        ok, _ = _inspect(value, item_name, depth - 1, parent, failures, printer, path)
        found = found or not ok
        if found:
            break
    return found


def _inspect_closure(func, depth, failures, printer, path):
    printer.line("Inspecting closure of '{}':".format(func.__qualname__))
    closure = inspect.getclosurevars(func)
    found = False
    for kind, variables in (("global", closure.globals), ("nonlocal", closure.nonlocals)):
        if not variables:
            continue
        printer.line("Detected {} {} variables. Checking serializability...".format(len(variables), kind))
        printer.level += 1
        try:
            found = _check_all(variables.items(), depth, func, failures, printer, path, found)
        finally:
            printer.level -= 1
    if not found:
        what = getattr(func, "__qualname__", None) or repr(func)
        printer.line(
            "WARNING: Did not find non-serializable object in {}. This may be because the object is only "
            "non-serializable when combined with other objects, or because cloudpickle and the traversal "
            "disagree on which object causes the failure. Try calling `ray.util.inspect_serializability` "
            "directly on the suspected object, or simplify the closure to isolate the cause.".format(what)
        )
    return found


def _members(obj, predicate=None):
    try:
        return inspect.getmembers(obj, predicate) if predicate else inspect.getmembers(obj)
    except Exception:  # noqa: BLE001 - objects whose attributes cannot all be read
        return []


def _inspect_members(obj, depth, failures, printer, path):
    found = False
    printer.level += 1
    try:
        found = _check_all(_members(obj, inspect.isfunction), depth, obj, failures, printer, path, found)
        others = [
            (n, v)
            for n, v in _members(obj)
            if not (n.startswith("__") and n.endswith("__")) and not inspect.isbuiltin(v)
        ]
        found = _check_all(others, depth, obj, failures, printer, path, found)
    finally:
        printer.level -= 1
    if not found:
        what = obj.__name__ if inspect.isclass(obj) else "{} instance".format(type(obj).__name__)
        printer.line(
            "WARNING: Did not find non-serializable object in {}. This may be because the object is only "
            "non-serializable when combined with other objects, or because cloudpickle and the traversal "
            "disagree. Try calling `ray.util.inspect_serializability` on individual attributes to isolate "
            "the cause.".format(what)
        )
    return found


def _print_summary(printer, failures, bar):
    printer.line(bar)
    listed = "\n".join(str(f) for f in failures)
    printer.line(
        "Variable: \n\n\t{}\n\nwas found to be non-serializable. There may be multiple other undetected "
        "variables that were non-serializable. ".format(printer.paint(_BRIGHT, listed, _ALL_RESET))
    )
    printer.line(
        "Consider either removing the instantiation/imports of these variables or moving the "
        "instantiation into the scope of the function/class. "
    )
    printer.line(bar)
    printer.line(
        "Check https://docs.ray.io/en/master/ray-core/objects/serialization.html#troubleshooting for more "
        "information."
    )
    printer.line(
        "If you have any suggestions on how to improve this error message, please reach out to the Ray "
        "developers on github.com/ray-project/ray/issues/"
    )
    printer.line(bar)
