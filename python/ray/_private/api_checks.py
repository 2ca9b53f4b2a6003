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
