"""`RuntimeEnv`: a checked runtime environment (a dict, as in Ray)."""

import os
import types

# Fields this build sets up on the workers.
SUPPORTED = ("env_vars", "working_dir", "py_modules", "excludes", "pip", "config")
# Ray's fields this build cannot set up: accepted here, and every task or actor
# that asks for one fails with RuntimeEnvSetupError naming it (as Ray's do when
# the node cannot set them up, e.g. without conda); never silently ignored.
CANNOT_SET_UP = ("conda", "uv", "container", "image_uri")
# Ray's other fields: refused at once with a clear error.
NOT_YET = ("java_jars", "nsight", "mpi", "py_executable", "worker_process_setup_hook", "_inject_current_ray")
_REMOTE_URI = ("s3://", "gs://", "gcs://", "http://", "https://", "file://", "azure://", "abfss://")


class RuntimeEnvConfig(dict):
    """Settings of a runtime environment: `setup_timeout_seconds` (how long a
    worker may take to set it up; -1 = no limit) and `eager_install`."""

    def __init__(self, setup_timeout_seconds=600, eager_install=True, log_files=None):
        if not isinstance(setup_timeout_seconds, int) or isinstance(setup_timeout_seconds, bool):
            raise TypeError("setup_timeout_seconds must be of type int, got {!r}.".format(type(setup_timeout_seconds).__name__))
        if setup_timeout_seconds <= 0 and setup_timeout_seconds != -1:
            raise ValueError("setup_timeout_seconds must be greater than zero or equal to -1, got {}.".format(setup_timeout_seconds))
        if not isinstance(eager_install, bool):
            raise TypeError("eager_install must be a boolean, got {!r}.".format(type(eager_install).__name__))
        super().__init__(setup_timeout_seconds=setup_timeout_seconds, eager_install=eager_install)
        if log_files is not None:
            self["log_files"] = list(log_files)

    @staticmethod
    def parse_and_validate_runtime_env_config(config):
        if isinstance(config, RuntimeEnvConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError("runtime_env['config'] must be a dict or RuntimeEnvConfig, got {!r}.".format(type(config).__name__))
        unknown = set(config) - {"setup_timeout_seconds", "eager_install", "log_files"}
        if unknown:
            raise ValueError("Unknown field(s) {} in runtime_env['config']; expected setup_timeout_seconds, eager_install.".format(sorted(unknown)))
        return RuntimeEnvConfig(**config)


class RuntimeEnv(dict):
    """A runtime environment for a job, task or actor:

        RuntimeEnv(env_vars={"A": "1"}, working_dir="./project", py_modules=[my_module],
                   excludes=["*.log"])

    - `env_vars`: dict of str to str, set in the workers' environment;
      `${VAR}` in a value expands to the worker's existing value of VAR.
    - `working_dir`: a local folder (or .zip file) shipped to every worker, which
      runs with it as its current folder and on its import path.
    - `py_modules`: local folders, .py files or imported modules shipped to the
      workers and put on their import path.
    - `excludes`: patterns (gitignore style) of files to leave out of
      `working_dir` and `py_modules`; `.gitignore` and `.rayignore` files are
      honoured too.
    - `pip`: packages (a list of requirement strings, a requirements.txt path,
      or {"packages": [...]}) installed for the workers (once per node and
      list) and put on their import path.
    - `config`: a RuntimeEnvConfig.

    `conda`, `uv`, `container` and `image_uri` cannot be set up by this build:
    a task or actor that asks for one fails with RuntimeEnvSetupError naming it,
    rather than run without what it asks for.
    """

    def __init__(self, *, env_vars=None, working_dir=None, py_modules=None, excludes=None, config=None, _validate=True, **kwargs):
        super().__init__()
        given = dict(kwargs)
        for k, v in (("env_vars", env_vars), ("working_dir", working_dir), ("py_modules", py_modules), ("excludes", excludes), ("config", config)):
            if v is not None:
                given[k] = v
        if _validate:
            given = validate(given)
        self.update(given)

    def env_vars(self):
        return dict(self.get("env_vars") or {})

    def working_dir(self):
        return self.get("working_dir", "")

    def py_modules(self):
        return list(self.get("py_modules") or [])

    def to_dict(self):
        return dict(self)

    def serialize(self):
        import json

        return json.dumps(dict(self), sort_keys=True)

    @classmethod
    def deserialize(cls, text):
        import json

        return cls(_validate=False, **json.loads(text))


def validate(env, where="runtime_env"):
    """A checked copy of a runtime_env dict; errors name the field at fault."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise TypeError("{} must be a dict or RuntimeEnv, got {!r}.".format(where, type(env).__name__))
    out = {}
    for key, value in env.items():
        if key in CANNOT_SET_UP:
            out[key] = value
            continue
        if key in NOT_YET:
            raise ValueError(
                "{}[{!r}] is not supported by this Ray build yet: install what the job needs on the nodes "
                "(e.g. in the cluster YAML's setup_commands). Supported fields: {}.".format(where, key, ", ".join(SUPPORTED))
            )
        if key not in SUPPORTED:
            raise ValueError("Unknown field {!r} in {}; supported fields: {}.".format(key, where, ", ".join(SUPPORTED)))
        if value is None:
            continue
        out[key] = _CHECKS[key](value, "{}[{!r}]".format(where, key))
    return out


def _env_vars(value, where):
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError("{} must be of type dict[str, str], got {!r}.".format(where, value))
    return dict(value)


def _local_path(value, where, allow_zip):
    if not isinstance(value, str):
        raise TypeError("{} must be a string path, got {!r}.".format(where, type(value).__name__))
    if value.startswith(_REMOTE_URI) and not value.startswith("gcs://_ray_pkg_"):
        raise ValueError(
            "{} = {!r}: remote URIs are not supported by this Ray build yet; give a local folder{}.".format(
                where, value, " or .zip file" if allow_zip else ""
            )
        )
    if value.startswith("gcs://_ray_pkg_"):
        return value
    if not os.path.exists(value):
        raise ValueError("{} = {!r}: no such file or folder (relative paths are taken from {}).".format(where, value, os.getcwd()))
    if os.path.isfile(value) and not (allow_zip and value.endswith(".zip")) and not value.endswith(".py"):
        raise ValueError("{} = {!r}: expected a folder{}.".format(where, value, " or a .zip file" if allow_zip else ""))
    return os.path.abspath(value)


def _working_dir(value, where):
    path = _local_path(value, where, True)
    if path.endswith(".py"):
        raise ValueError("{} = {!r}: expected a folder or a .zip file.".format(where, value))
    return path


def _py_modules(value, where):
    if not isinstance(value, (list, tuple)):
        raise TypeError("{} must be a list of folders, .py files or modules, got {!r}.".format(where, type(value).__name__))
    out = []
    for i, m in enumerate(value):
        if isinstance(m, types.ModuleType):
            f = getattr(m, "__file__", None)
            if not f:
                raise ValueError("{}[{}]: module {} has no file to ship.".format(where, i, m.__name__))
            # A package ships its folder; a single-file module its file.
            out.append(os.path.dirname(os.path.abspath(f)) if os.path.basename(f) == "__init__.py" else os.path.abspath(f))
        else:
            out.append(_local_path(m, "{}[{}]".format(where, i), True))
    return out


def _excludes(value, where):
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise TypeError("{} must be a list of strings, got {!r}.".format(where, value))
    return list(value)


def _pip(value, where):
    """The list of requirements `pip` names."""
    if isinstance(value, str):
        if not os.path.isfile(value):
            raise ValueError("{} = {!r}: expected a list of packages or the path of a requirements file.".format(where, value))
        with open(value) as f:
            value = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    elif isinstance(value, dict):
        unknown = set(value) - {"packages", "pip_check", "pip_version", "pip_install_options"}
        if unknown:
            raise ValueError("Unknown field(s) {} in {}; expected packages, pip_check, pip_version.".format(sorted(unknown), where))
        value = value.get("packages", [])
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in value):
        raise TypeError("{} must be a list of requirement strings, got {!r}.".format(where, value))
    return [p.strip() for p in value]


def _config(value, where):
    return dict(RuntimeEnvConfig.parse_and_validate_runtime_env_config(value))


_CHECKS = {
    "env_vars": _env_vars,
    "working_dir": _working_dir,
    "py_modules": _py_modules,
    "excludes": _excludes,
    "pip": _pip,
    "config": _config,
}
