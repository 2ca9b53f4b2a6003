"""Runtime environments: what a job's, task's or actor's workers need besides
the code itself: environment variables, a working directory and Python modules
shipped from the driver's machine. `RuntimeEnv` is the dict users pass as
`runtime_env=`; `RuntimeEnvConfig` holds its settings."""

from ray.runtime_env.runtime_env import RuntimeEnv, RuntimeEnvConfig

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
