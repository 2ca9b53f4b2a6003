"""Runtime environments on the worker's side. The raylet starts a worker for one
runtime environment and hands it over in RAY_RUNTIME_ENV (never on the command
line: env_vars may hold secrets); before its first task the worker sets its
environment variables, unpacks its packages (once per node and content) and
takes `working_dir` as its current folder."""

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile

from ray._private import runtime_env_packaging as _pkg

ENV_VAR = "RAY_RUNTIME_ENV"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value):
    """`${VAR}` in a value becomes the worker's existing value of VAR (as Ray)."""
    return _REF.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _unpack(core, job_id, uri, root):
    """The folder holding package `uri`, unpacked under `root` (once per content:
    a package's name is its hash)."""
    name = uri[len("gcs://"):].rsplit(".zip", 1)[0]
    dest = os.path.join(root, name)
    if os.path.isdir(dest):
        return dest
    os.makedirs(root, exist_ok=True)
    data = _pkg.download(core, job_id, uri)
    tmp = tempfile.mkdtemp(prefix=name + ".", dir=root)
    try:
        import io

        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                target = os.path.realpath(os.path.join(tmp, info.filename))
                if not target.startswith(os.path.realpath(tmp) + os.sep):
                    raise ValueError("package {} holds a path outside its folder: {!r}".format(uri, info.filename))
                z.extract(info, tmp)
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    os.chmod(target, mode & 0o777)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another worker unpacked it first.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _pip_install(packages, root):
    """A folder with `packages` installed (pip --target), made once per node and
    list; a file lock keeps workers from installing the same list twice."""
    import fcntl
    import hashlib
    import subprocess

    name = hashlib.sha1("\n".join(sorted(packages)).encode()).hexdigest()[:16]
    dest = os.path.join(root, name)
    if os.path.isdir(dest):
        return dest
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(dest):
            return dest
        tmp = tempfile.mkdtemp(prefix=name + ".", dir=root)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", tmp, *packages]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("pip install {} failed (exit {}):\n{}".format(" ".join(packages), r.returncode, (r.stderr or r.stdout)[-4000:]))
        os.rename(tmp, dest)
    return dest


def apply(core, job_id, text, resources_dir):
    """Sets this worker up for the runtime env `text` (JSON); returns it as a dict."""
    env = json.loads(text)
    from ray.runtime_env.runtime_env import CANNOT_SET_UP

    asked = [k for k in CANNOT_SET_UP if env.get(k)]
    if asked:
        raise RuntimeError(
            "runtime_env field(s) {} cannot be set up by this Ray build: install what the job needs on the "
            "nodes (e.g. in the cluster YAML's setup_commands) or use `pip`.".format(", ".join(repr(k) for k in asked))
        )
    for k, v in (env.get("env_vars") or {}).items():
        os.environ[k] = _expand(v)
    if env.get("pip"):
        path = _pip_install(env["pip"], os.path.join(resources_dir, "pip"))
        if path not in sys.path:
            sys.path.insert(0, path)
    for uri in env.get("py_modules") or []:
        path = _unpack(core, job_id, uri, os.path.join(resources_dir, "py_modules_files"))
        if path not in sys.path:
            sys.path.insert(0, path)
    wd = env.get("working_dir")
    if wd:
        path = _unpack(core, job_id, wd, os.path.join(resources_dir, "working_dir_files"))
        os.chdir(path)
        if path not in sys.path:
            sys.path.insert(0, path)
    return env
