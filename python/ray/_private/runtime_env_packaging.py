"""Runtime environments on the driver's side: local folders named by
`working_dir` and `py_modules` are zipped (leaving out `excludes` and what
`.gitignore`/`.rayignore` files name), stored in the cluster under a content
hash (`gcs://_ray_pkg_<hash>.zip`, once per content), and the environment
handed to the raylet names those packages instead of local paths. Workers set
themselves up from that (see runtime_env_worker.py)."""

import fnmatch
import hashlib
import io
import json
import os
import zipfile

from ray.runtime_env.runtime_env import validate

# As Ray: the largest package the cluster stores.
MAX_PACKAGE_BYTES = 512 * 1024 * 1024
# Packages travel in pieces of this size (each one message to the GCS).
CHUNK_BYTES = 8 * 1024 * 1024
PKG_PREFIX = "gcs://_ray_pkg_"
_IGNORE_FILES = (".gitignore", ".rayignore")
_ALWAYS_EXCLUDED = (".git", "__pycache__")


def _mib(n):
    return "{:.2f}MiB".format(n / (1024 * 1024))


def _read_ignore_file(path):
    try:
        with open(path) as f:
            return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError:
        return []


def _matches(rel, is_dir, patterns):
    """gitignore-style matching of a path relative to the package root."""
    name = rel.rsplit("/", 1)[-1]
    for p in patterns:
        dir_only = p.endswith("/")
        pat = p.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = pat.startswith("/") or "/" in pat
        pat = pat.lstrip("/")
        if anchored:
            if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*"):
                return True
        elif fnmatch.fnmatch(name, pat):
            return True
    return False


def package_files(root, excludes):
    """(relative path, absolute path) of every file a package of `root` holds, in
    a fixed order."""
    out = []
    root = os.path.abspath(root)
    if os.path.isfile(root):
        return [(os.path.basename(root), root)]
    base_patterns = list(excludes or [])
    # Per-folder ignore files apply below their folder.
    scoped = {}

    def patterns_for(rel_dir):
        # The ignore files of this folder and of every folder above it.
        pats = list(base_patterns)
        parts = rel_dir.split("/") if rel_dir else []
        for i in range(len(parts) + 1):
            pats.extend(scoped.get("/".join(parts[:i]), []))
        return pats

    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        found = []
        for ig in _IGNORE_FILES:
            found.extend(_read_ignore_file(os.path.join(dirpath, ig)))
        if found:
            scoped[rel_dir] = found
        pats = patterns_for(rel_dir)
        keep_dirs = []
        for d in sorted(dirnames):
            rel = (rel_dir + "/" + d) if rel_dir else d
            if d in _ALWAYS_EXCLUDED or _matches(rel, True, pats):
                continue
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            rel = (rel_dir + "/" + f) if rel_dir else f
            if _matches(rel, False, pats):
                continue
            out.append((rel, os.path.join(dirpath, f)))
    return out


def make_package(path, excludes, field):
    """(uri, zip bytes) of a local folder, .py file or .zip file."""
    if os.path.isfile(path) and path.endswith(".zip"):
        with open(path, "rb") as f:
            data = f.read()
    else:
        buf = io.BytesIO()
        total = 0
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            # A py_modules folder keeps its name (it is imported by it).
            parent = os.path.basename(os.path.abspath(path)) + "/" if field == "py_modules" and os.path.isdir(path) else ""
            for rel, full in package_files(path, excludes):
                info = zipfile.ZipInfo(parent + rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    body = f.read()
                total += len(body)
                if total >= MAX_PACKAGE_BYTES:
                    raise ValueError(_too_large(field, path, total))
                z.writestr(info, body)
        data = buf.getvalue()
    if len(data) >= MAX_PACKAGE_BYTES:
        raise ValueError(_too_large(field, path, len(data)))
    digest = hashlib.sha1(data).hexdigest()[:16]
    return "{}{}.zip".format(PKG_PREFIX, digest), data


def _too_large(field, path, size):
    return (
        "runtime_env[{!r}] = {!r}: package size ({}) exceeds the maximum size of {}. To exclude large files, "
        "add them to '.gitignore' or '.rayignore' files, or use the 'excludes' option in the runtime_env.".format(
            field, path, _mib(size), _mib(MAX_PACKAGE_BYTES)
        )
    )


def _key(uri, part):
    return "{}#{}".format(uri, part).encode()


def upload(core, uri, data):
    """Stores a package in the cluster in pieces, with a header naming how many."""
    pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    for i, piece in enumerate(pieces):
        core.export_function(_key(uri, i), piece)
    core.export_function(_key(uri, "head"), json.dumps({"pieces": len(pieces), "size": len(data)}).encode())


def download(core, job_id, uri):
    """The bytes of a package stored by `upload`."""
    head = json.loads(bytes(core.fetch_function(job_id, _key(uri, "head"))).decode())
    data = b"".join(bytes(core.fetch_function(job_id, _key(uri, i))) for i in range(head["pieces"]))
    if len(data) != head["size"]:
        raise RuntimeError("package {} is incomplete ({} of {} bytes)".format(uri, len(data), head["size"]))
    return data


def merge(parent, child):
    """A child's runtime_env over its parent's (the job's, or the submitting
    task's): each field the child names replaces the parent's, except
    `env_vars`, which are merged (the child's win)."""
    out = dict(parent or {})
    for k, v in (child or {}).items():
        if k == "env_vars":
            merged = dict(out.get("env_vars") or {})
            merged.update(v)
            out[k] = merged
        else:
            out[k] = v
    return out


def resolve(conn, env, where="runtime_env"):
    """A checked runtime_env with its local folders uploaded (as a dict that
    names packages instead of local paths)."""
    env = validate(env, where)
    if not env:
        return {}
    excludes = env.pop("excludes", None)
    cache = conn.__dict__.setdefault("packages", {})

    def ship(path, field):
        if path.startswith(PKG_PREFIX):
            return path
        key = (path, tuple(excludes or ()))
        if key not in cache:
            uri, data = make_package(path, excludes, field)
            upload(conn.core, uri, data)
            cache[key] = uri
        return cache[key]

    if "working_dir" in env:
        env["working_dir"] = ship(env["working_dir"], "working_dir")
    if "py_modules" in env:
        env["py_modules"] = [ship(p, "py_modules") for p in env["py_modules"]]
    return env


def for_task(conn, options_env, where="runtime_env"):
    """The runtime env JSON a task or actor runs in ("" for none): the job's (or,
    in a worker, the one it runs in) with the task's own option over it."""
    base = getattr(conn, "runtime_env", None) or {}
    if options_env is None:
        env = base
    else:
        env = merge(base, resolve(conn, options_env, where))
    return json.dumps(env, sort_keys=True) if env else ""
