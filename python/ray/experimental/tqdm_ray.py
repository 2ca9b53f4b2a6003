"""`ray.experimental.tqdm_ray`: tqdm progress bars for tasks and actors, shown
once, by the driver.

In a task or actor, `tqdm(...)` prints its state as one JSON line carrying
RAY_TQDM_MAGIC; the driver's output printer hands such lines to this module
(`process_log_line`) instead of printing them, and draws the bar: with the
`tqdm` package when it is installed in the driver, else as plain text lines
on stderr. In the driver itself, `tqdm(...)` draws its bar directly.

    from ray.experimental.tqdm_ray import tqdm

    @ray.remote
    def f(name):
        for x in tqdm(range(100), desc=name):
            time.sleep(0.1)
"""

import builtins
import copy
import json
import os
import sys
import threading
import time
import uuid

# Marks the printed state lines of a bar (the driver intercepts them).
RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"
# A state line starts with this (its first key is the magic token).
_STATE_PREFIX = '{"__magic_token__": "' + RAY_TQDM_MAGIC + '"'

_manager = None
_manager_lock = threading.Lock()
_print = builtins.print

_DIM, _CYAN, _RESET = "\x1b[2m", "\x1b[36m", "\x1b[0m"


def safe_print(*args, **kwargs):
    """`print` that does not garble the progress bars: the bars are cleared
    while it prints and drawn again after. Once a bar is shown, the driver's
    builtin `print` is this function (unless RAY_TQDM_PATCH_PRINT=0)."""
    if kwargs.get("file") not in (sys.stdout, sys.stderr, None):
        return _print(*args, **kwargs)
    manager = instance()
    try:
        manager.hide_bars()
        _print(*args, **kwargs)
    finally:
        manager.unhide_bars()


def _connection():
    try:
        from ray._private import worker as _worker
    except Exception:  # noqa: BLE001 - ray is shutting down
        return None
    return _worker.global_connection()


def _in_worker():
    conn = _connection()
    return conn is not None and conn.mode == "worker"


def _node():
    """(ip, node id) of this process's node."""
    conn = _connection()
    if conn is None:
        return "127.0.0.1", None
    ip = getattr(conn, "node_ip", None)
    if not ip:
        try:
            from ray._private import worker as _worker

            ip = _worker.local_ip_towards(conn.gcs_address)
        except Exception:  # noqa: BLE001
            ip = "127.0.0.1"
    try:
        node_id = conn.core.node_id
    except Exception:  # noqa: BLE001
        node_id = None
    return ip, node_id


class tqdm:
    """A progress bar usable in tasks and actors (a subset of tqdm's API:
    iterable, desc, total, unit, position; update, set_description, refresh,
    close, n, total). In a worker, its state is sent to the driver at most
    every `flush_interval_s` seconds (and when closed)."""

    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __init__(self, iterable=None, desc=None, total=None, unit=None, position=None, flush_interval_s=None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._ip, self._node_id = _node()
        self._pid = os.getpid()
        self._pos = position or 0
        self._uuid = uuid.uuid4().hex
        self._x = 0
        self._closed = False
        self._flush_interval_s = (
            self.DEFAULT_FLUSH_INTERVAL_SECONDS if flush_interval_s is None else flush_interval_s
        )
        self._last_flush_time = 0.0

    def set_description(self, desc):
        """As tqdm.tqdm.set_description."""
        self._desc = desc
        self._dump_state()

    def update(self, n=1):
        """As tqdm.tqdm.update: `n` more steps are done."""
        self._x += n
        self._dump_state()

    def close(self):
        """As tqdm.tqdm.close (always sends the final state)."""
        if self._closed:
            return
        self._closed = True
        self._dump_state(force_flush=True)

    def refresh(self):
        """As tqdm.tqdm.refresh."""
        self._dump_state()

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, total):
        self._total = total

    @property
    def n(self):
        return self._x

    @n.setter
    def n(self, n):
        self._x = n

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("No iterable provided")
        for x in iter(self._iterable):
            self.update(1)
            yield x
        # As tqdm does: a finished loop closes the bar (so the driver shows
        # its final count, whatever the flush interval held back).
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get_state(self):
        return {
            "__magic_token__": RAY_TQDM_MAGIC,
            "x": self._x,
            "pos": self._pos,
            "desc": self._desc,
            "total": self._total,
            "unit": self._unit,
            "ip": self._ip,
            "node_id": self._node_id,
            "pid": self._pid,
            "uuid": self._uuid,
            "closed": self._closed,
        }

    def _dump_state(self, force_flush=False):
        now = time.time()
        if not force_flush and now - self._last_flush_time < self._flush_interval_s:
            return
        self._last_flush_time = now
        if _in_worker():
            # One write of a whole line: it reaches the driver in one piece.
            sys.stdout.write(json.dumps(self._get_state()) + "\n")
            sys.stdout.flush()
        else:
            instance().process_state_update(copy.deepcopy(self._get_state()))


def process_log_line(line):
    """Applies a bar state line a worker printed (the text after the printer's
    prefix, e.g. "(f pid=1) {...}"); returns False when it holds no state."""
    start = line.find(_STATE_PREFIX)
    if start < 0:
        start = line.find("{")
    if start < 0:
        return False
    try:
        state, _ = json.JSONDecoder().raw_decode(line[start:])
        if not isinstance(state, dict) or state.get("__magic_token__") != RAY_TQDM_MAGIC:
            return False
        instance().process_state_update(state)
        return True
    except Exception:  # noqa: BLE001 - a garbled line must not stop the printer
        return False


def hide_bars():
    """Clears the bars (if any) before other output is printed."""
    if _manager is not None:
        _manager.hide_bars()


def unhide_bars():
    """Draws the bars again after hide_bars()."""
    if _manager is not None:
        _manager.unhide_bars()


def instance():
    """The driver's bar manager (made on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = _BarManager()
            if os.environ.get("RAY_TQDM_PATCH_PRINT", "1").lower() not in ("0", "false"):
                builtins.print = safe_print
        return _manager


def _real_tqdm():
    try:
        import tqdm.auto as real
    except ImportError:
        return None
    return real


class _BarManager:
    """The driver's bars, grouped by the process that makes them; each
    process's group takes as many rows as its highest bar position needs, so
    bars of different processes never share a row."""

    def __init__(self):
        self.ip, self.node_id = _node()
        self.pid = os.getpid()
        self.groups = {}  # (ip, pid) -> {uuid: bar}, in order of arrival
        self.offsets = {}
        self.lock = threading.RLock()
        self.hidden = False
        self.real = _real_tqdm()

    def _prefix(self, state, colorize):
        same_node = state.get("ip") == self.ip or (
            state.get("node_id") is not None and state.get("node_id") == self.node_id
        )
        if same_node and state.get("pid") == self.pid:
            return ""
        if same_node:
            text = "(pid={}) ".format(state.get("pid"))
        else:
            text = "(pid={}, ip={}) ".format(state.get("pid"), state.get("ip"))
        return _DIM + _CYAN + text + _RESET if colorize else text

    def process_state_update(self, state):
        with self.lock:
            colorize = self.real is not None or _isatty(sys.stderr)
            state = dict(state)
            state["desc"] = self._prefix(state, colorize) + (state.get("desc") or "")
            key = (state.get("ip"), state.get("pid"))
            group = self.groups.setdefault(key, {})
            bar = group.get(state["uuid"])
            if bar is None:
                if state.get("closed"):
                    # Opened and closed between two flushes: show its end.
                    self.offsets[key] = self._offset_of(key)
                    self._new_bar(state, self.offsets[key]).close()
                    return
                self.offsets[key] = self._offset_of(key)
                group[state["uuid"]] = self._new_bar(state, self.offsets[key])
                self._relayout()
                return
            bar.update(state)
            if state.get("closed"):
                bar.close()
                del group[state["uuid"]]
                self._relayout()

    def _new_bar(self, state, offset):
        if self.real is not None:
            return _TqdmBar(self.real, state, offset)
        return _TextBar(state, offset)

    @staticmethod
    def _rows(group):
        return 1 + max(b.state.get("pos", 0) for b in group.values()) if group else 0

    def _offset_of(self, key):
        offset = 0
        for k, group in self.groups.items():
            if k == key:
                break
            offset += self._rows(group)
        return offset

    def _relayout(self):
        offset = 0
        for key, group in self.groups.items():
            if self.offsets.get(key) != offset:
                self.offsets[key] = offset
                for bar in group.values():
                    bar.move(offset)
            offset += self._rows(group)

    def hide_bars(self):
        with self.lock:
            if not self.hidden:
                self.hidden = True
                for group in self.groups.values():
                    for bar in group.values():
                        bar.hide()

    def unhide_bars(self):
        with self.lock:
            if self.hidden:
                self.hidden = False
                for group in self.groups.values():
                    for bar in group.values():
                        bar.show()


def _isatty(stream):
    try:
        return stream.isatty()
    except Exception:  # noqa: BLE001
        return False


class _TqdmBar:
    """A bar drawn by the tqdm package."""

    def __init__(self, real, state, offset):
        self.state = state
        self.offset = offset
        self.bar = real.tqdm(
            desc=state["desc"],
            total=state.get("total"),
            unit=state.get("unit") or "it",
            position=offset + state.get("pos", 0),
            dynamic_ncols=True,
            unit_scale=True,
        )
        if state.get("x"):
            self.bar.update(state["x"])

    def update(self, state):
        if state["desc"] != self.state["desc"]:
            self.bar.set_description(state["desc"])
        if state.get("total") != self.state.get("total"):
            self.bar.total = state.get("total")
        delta = state.get("x", 0) - self.state.get("x", 0)
        if delta:
            self.bar.update(delta)
        self.bar.refresh()
        self.state = state

    def close(self):
        self.bar.close()

    def move(self, offset):
        self.offset = offset
        self.bar.clear()
        self.bar.pos = -(offset + self.state.get("pos", 0))
        self.bar.refresh()

    def hide(self):
        self.bar.clear()

    def show(self):
        self.bar.refresh()


class _TextBar:
    """A bar as plain text (tqdm is not installed): one line on stderr each
    time the state changes (workers send it at most once a second)."""

    WIDTH = 10

    def __init__(self, state, offset):
        self.state = state
        self.offset = offset
        self.start = time.time()
        self.shown = None
        self._draw()

    def _line(self):
        s = self.state
        n, total, unit = s.get("x", 0), s.get("total"), s.get("unit") or "it"
        elapsed = time.time() - self.start
        # The driver sees the bar from its first state on: no rate until a
        # little time has passed.
        rate = n / elapsed if elapsed >= 0.05 and n else None
        speed = "?{}/s".format(unit) if rate is None else "{:.2f}{}/s".format(rate, unit)
        desc = s.get("desc") or ""
        head = desc + ": " if desc else ""
        if total:
            frac = min(max(n / total, 0.0), 1.0)
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + " " * (self.WIDTH - filled)
            left = "?" if rate is None else _clock((total - n) / rate)
            return "{}{:3.0f}%|{}| {}/{} [{}<{}, {}]".format(head, frac * 100, bar, n, total, _clock(elapsed), left, speed)
        return "{}{}{} [{}, {}]".format(head, n, unit, _clock(elapsed), speed)

    def _draw(self):
        key = (self.state.get("x"), self.state.get("total"), self.state.get("desc"))
        if key == self.shown:
            return
        self.shown = key
        try:
            sys.stderr.write(self._line() + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a closed stream
            pass

    def update(self, state):
        self.state = state
        self._draw()

    def close(self):
        self._draw()

    def move(self, offset):
        self.offset = offset

    def hide(self):
        pass

    def show(self):
        pass


def _clock(seconds):
    seconds = int(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return "{:d}:{:02d}:{:02d}".format(hours, minutes, seconds)
    return "{:02d}:{:02d}".format(minutes, seconds)
