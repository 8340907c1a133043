"""`ShapeCache`: what a prepared kernel or plan step works out once per input shape (window
geometry, a Winograd decision, a shape chain's result), bounded so that models with dynamic
dims do not grow it forever.

Example:
    >>> cache = ShapeCache()
    >>> cache.computed((2, 3), lambda: "worked out once")
    'worked out once'
    >>> cache.computed((2, 3), lambda: "not called again")
    'worked out once'
"""

SHAPES_KEPT = 32


class ShapeCache(dict):
    """A dict from shape key to value that forgets everything once it holds `SHAPES_KEPT` keys
    (simpler and cheaper per hit than LRU bookkeeping; a steady workload refills it at once)."""

    def computed(self, key, compute):
        """The value for `key`, from `compute()` on first sight."""
        try:
            return self[key]
        except KeyError:
            if len(self) >= SHAPES_KEPT:
                self.clear()
            value = self[key] = compute()
            return value
