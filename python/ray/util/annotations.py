"""API stability markers (`PublicAPI`, `DeveloperAPI`, `Deprecated`) and
`RayDeprecationWarning`, as Ray names them.

The markers only record the stability level on the decorated object; they do
not change its behaviour."""

import sys
import warnings


class RayDeprecationWarning(DeprecationWarning):
    """A deprecation warning of Ray's APIs (a class of its own so it can be
    filtered separately)."""


# As Ray does: show the first such warning of each module (not only of
# __main__, as DeprecationWarning's default does), unless -W options say
# otherwise.
if not sys.warnoptions:
    warnings.filterwarnings("module", category=RayDeprecationWarning)


def _marker(level):
    def decorator(*args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            obj = args[0]
            try:
                obj._annotated_stability = level
            except (AttributeError, TypeError):
                pass
            return obj

        def wrap(obj):
            try:
                obj._annotated_stability = level
            except (AttributeError, TypeError):
                pass
            return obj

        return wrap

    decorator.__name__ = level
    return decorator


PublicAPI = _marker("PublicAPI")
DeveloperAPI = _marker("DeveloperAPI")
Deprecated = _marker("Deprecated")

__all__ = ["PublicAPI", "DeveloperAPI", "Deprecated", "RayDeprecationWarning"]
