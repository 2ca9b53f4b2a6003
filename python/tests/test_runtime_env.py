"""Runtime environments: env_vars, working_dir, py_modules and excludes, for
jobs, tasks and actors, on real workers; errors for what is not supported."""

import os

import pytest

import ray


def _project(tmp_path):
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("VALUE = 'from the working dir'\n")
    (root / "data.txt").write_text("hello data\n")
    (root / "big.log").write_text("x" * 1000)
    (root / "secret").mkdir()
    (root / "secret" / "key.txt").write_text("no")
    (root / ".gitignore").write_text("ignored_by_git.txt\n")
    (root / "ignored_by_git.txt").write_text("no")
    return root


def test_job_env_vars_reach_tasks_and_actors(tmp_path):
    ray.init(num_cpus=2, runtime_env={"env_vars": {"FOO": "bar", "PATH_COPY": "${PATH}"}})

    @ray.remote
    def read():
        return os.environ.get("FOO"), os.environ.get("PATH_COPY")

    @ray.remote
    class Reader:
        def read(self):
            return os.environ.get("FOO")

    foo, path = ray.get(read.remote())
    assert foo == "bar"
    assert path and path == os.environ["PATH"]
    assert ray.get(Reader.remote().read.remote()) == "bar"
    assert ray.get_runtime_context().runtime_env["env_vars"]["FOO"] == "bar"


def test_task_env_vars_merge_over_the_jobs_and_never_leak_to_other_tasks(tmp_path):
    ray.init(num_cpus=2, runtime_env={"env_vars": {"A": "job", "B": "job"}})

    @ray.remote
    def read():
        return os.environ.get("A"), os.environ.get("B"), os.environ.get("C")

    assert ray.get(read.options(runtime_env={"env_vars": {"B": "task", "C": "task"}}).remote()) == ("job", "task", "task")
    # A plain task never gets a worker set up for another environment.
    for _ in range(3):
        assert ray.get(read.remote()) == ("job", "job", None)

    @ray.remote
    def nested():
        return ray.get(read.remote())

    # Child tasks inherit the environment of the task that submits them.
    assert ray.get(nested.options(runtime_env={"env_vars": {"C": "parent"}}).remote()) == ("job", "job", "parent")


def test_working_dir_is_shipped_with_excludes_and_gitignore(tmp_path):
    root = _project(tmp_path)
    ray.init(num_cpus=1, runtime_env={"working_dir": str(root), "excludes": ["*.log", "secret/"]})

    @ray.remote
    def look():
        import pkg

        files = sorted(os.listdir("."))
        return pkg.VALUE, open("data.txt").read(), files, os.getcwd()

    value, data, files, cwd = ray.get(look.remote())
    assert value == "from the working dir"
    assert data == "hello data\n"
    assert "big.log" not in files and "secret" not in files and "ignored_by_git.txt" not in files
    assert "pkg" in files and "data.txt" in files
    assert cwd != str(root), "the worker runs in its own unpacked copy"


def test_py_modules_and_a_task_level_working_dir(tmp_path):
    mod = tmp_path / "mods" / "helper_mod"
    mod.mkdir(parents=True)
    (mod / "__init__.py").write_text("def answer():\n    return 42\n")
    single = tmp_path / "single_file_mod.py"
    single.write_text("NAME = 'single'\n")
    ray.init(num_cpus=1)

    @ray.remote
    def use():
        import helper_mod
        import single_file_mod

        return helper_mod.answer(), single_file_mod.NAME

    env = {"py_modules": [str(mod), str(single)]}
    assert ray.get(use.options(runtime_env=env).remote()) == (42, "single")


def test_unsupported_and_bad_fields_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"runtime_env=...\)\['java_jars'\] is not supported"):
        ray.init(num_cpus=1, runtime_env={"java_jars": ["x.jar"]})
    assert not ray.is_initialized(), "nothing was started"
    ray.init(num_cpus=1)

    @ray.remote
    def f():
        return 1

    @ray.remote
    class A:
        def f(self):
            return 1

    # What this build cannot set up fails like a setup that failed in Ray:
    # RuntimeEnvSetupError at ray.get, for tasks and for actors' calls.
    bad = {"conda": {"dependencies": ["this_doesnt_exist"]}}
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError, match="'conda' cannot be set up"):
        ray.get(f.options(runtime_env=bad).remote())
    a = A.options(runtime_env=bad).remote()
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError, match="'conda' cannot be set up"):
        ray.get(a.f.remote())
    assert ray.get(f.remote()) == 1, "other tasks are not affected"
    with pytest.raises(TypeError, match=r"dict\[str, str\]"):
        f.options(runtime_env={"env_vars": {"A": 1}}).remote()
    with pytest.raises(ValueError, match="no such file or folder"):
        f.options(runtime_env={"working_dir": str(tmp_path / "missing")}).remote()
    with pytest.raises(ValueError, match="remote URIs are not supported"):
        f.options(runtime_env={"working_dir": "s3://bucket/x.zip"}).remote()
    with pytest.raises(ValueError, match="Unknown field 'nope'"):
        f.options(runtime_env={"nope": 1}).remote()


def test_runtime_env_class_and_config():
    from ray.runtime_env import RuntimeEnv, RuntimeEnvConfig

    env = RuntimeEnv(env_vars={"X": "1"}, config=RuntimeEnvConfig(setup_timeout_seconds=30))
    assert env["env_vars"] == {"X": "1"}
    assert env["config"]["setup_timeout_seconds"] == 30
    assert RuntimeEnv.deserialize(env.serialize()) == env
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        RuntimeEnvConfig(setup_timeout_seconds=0)


def test_a_package_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    from ray._private import runtime_env_packaging as pkg

    root = tmp_path / "big"
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(64 * 1024))
    monkeypatch.setattr(pkg, "MAX_PACKAGE_BYTES", 32 * 1024)
    with pytest.raises(ValueError, match="exceeds the maximum size"):
        pkg.make_package(str(root), [], "working_dir")


def _tiny_wheel(folder, version):
    """A minimal wheel of a package `tinypkg` (pip installs it offline)."""
    import zipfile

    path = folder / "tinypkg-{}-py3-none-any.whl".format(version)
    dist = "tinypkg-{}.dist-info".format(version)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tinypkg/__init__.py", "VERSION = {!r}\n".format(version))
        z.writestr(dist + "/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: {}\n".format(version))
        z.writestr(dist + "/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(dist + "/RECORD", "")
    return path


def test_pip_packages_are_installed_for_the_workers_only(tmp_path):
    wheel = _tiny_wheel(tmp_path, "1.2.3")
    ray.init(num_cpus=1)

    @ray.remote
    def version():
        import tinypkg

        return tinypkg.VERSION

    assert ray.get(version.options(runtime_env={"pip": [str(wheel)]}).remote()) == "1.2.3"
    with pytest.raises(ModuleNotFoundError):
        import tinypkg  # noqa: F401 - the driver's environment is untouched
    # An install that fails is the task's RuntimeEnvSetupError, at ray.get.
    with pytest.raises(ray.exceptions.RuntimeEnvSetupError, match="pip install"):
        ray.get(version.options(runtime_env={"pip": [str(tmp_path / "missing.whl")]}).remote())
