"""Argument checks shared by the API on a node and through the Ray Client (each
has its own ref type)."""


def check_refs(refs, what, ref_type):
    for r in refs:
        if type(r) is not ref_type:
            raise TypeError("Attempting to call `{}` on the value {!r}, which is not an ray.ObjectRef.".format(what, r))


def refs_for_get(object_refs, timeout, ref_type):
    """(single, refs) of `ray.get`'s arguments, checked as Ray checks them."""
    single = type(object_refs) is ref_type
    refs = [object_refs] if single else object_refs
    if not isinstance(refs, (list, tuple)):
        raise ValueError(
            "'object_refs' must either be an ObjectRef or a list of ObjectRefs, got {!r}.".format(type(object_refs))
        )
    refs = list(refs)
    check_refs(refs, "ray.get()", ref_type)
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be None or a non-negative number, got {!r}.".format(timeout))
    return single, refs


def refs_for_wait(object_refs, num_returns, timeout, ref_type, also=()):
    """The list of `ray.wait`'s refs, checked as Ray checks them (`also`: other
    types that may be waited on, e.g. streaming generators)."""
    if type(object_refs) is ref_type or not isinstance(object_refs, (list, tuple)):
        raise TypeError("wait() expected a list of ray.ObjectRef, got {!r}".format(type(object_refs)))
    refs = list(object_refs)
    check_refs([r for r in refs if not isinstance(r, also)], "ray.wait()", ref_type)
    if len(set(refs)) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if num_returns <= 0 or num_returns > len(refs):
        if refs or num_returns != 0:
            raise ValueError("Invalid number of objects to return {} (of {} refs).".format(num_returns, len(refs)))
    if timeout is not None and timeout < 0:
        raise ValueError("The 'timeout' argument must be nonnegative. Received {}".format(timeout))
    return refs
