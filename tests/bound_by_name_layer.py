"""A layer module that binds the primitives by name at import, as cachetools and many apps do."""

from threading import Condition, Lock
from time import sleep, time

from layers import Direct


class ByName(Direct):
    """Single-flight load guarded by a Condition and a Lock imported by name; polls with sleep."""

    def __init__(self, redis_client, connection):
        super().__init__(redis_client, connection)
        self.lock = Lock()
        self.loading = Condition(self.lock)
        self.busy = set()

    def read(self, key):
        with self.loading:
            self.loading.wait_for(lambda: key not in self.busy, timeout=30)
            self.busy.add(key)
        try:
            started = time()
            sleep(0.5)  # virtual: costs no wall time
            value = self._load(key)
            self.waited = time() - started
            return value
        finally:
            with self.loading:
                self.busy.discard(key)
                self.loading.notify_all()
