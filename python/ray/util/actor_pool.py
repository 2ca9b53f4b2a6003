"""`ray.util.ActorPool`: spreads work over a fixed set of actors."""

import ray


class ActorPool:
    """Runs `fn(actor, value)` on whichever actor of the pool is free.

        pool = ActorPool([A.remote(), A.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))  # [2, 4, 6, 8]
    """

    def __init__(self, actors):
        self._idle = list(actors)
        # ref -> (submission index, actor)
        self._future_to_actor = {}
        self._index_to_future = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending = []

    def map(self, fn, values):
        """Results in the order of `values` (a generator)."""
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn, values):
        """Results as they finish (a generator)."""
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def submit(self, fn, value):
        """Runs `fn(actor, value)` on a free actor, or queues it until one is free."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            key = ref[0] if isinstance(ref, list) else ref
            self._future_to_actor[key] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self):
        """Whether results are still to be fetched."""
        return bool(self._future_to_actor)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        key = future[0] if isinstance(future, list) else future
        if timeout is not None:
            ready, _ = ray.wait([key], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    return None
                raise TimeoutError("Timed out waiting for result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(key)
        self._return_actor(actor)
        return ray.get(future)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Any finished result."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = ray.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError("Timed out waiting for result")
        key = ready[0]
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._return_actor(actor)
        return ray.get(future)

    def _return_actor(self, actor):
        self._idle.append(actor)
        if self._pending:
            fn, value = self._pending.pop(0)
            self.submit(fn, value)

    def has_free(self):
        """Whether an actor is free and nothing waits."""
        return bool(self._idle) and not self._pending

    def pop_idle(self):
        """Takes a free actor out of the pool (None if none is free)."""
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor):
        """Adds an actor to the pool."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
