"""The module-level random generator behind rand/randn/randint/randperm/dropout/init.

Example:
    >>> import modelkit.authoring as mk
    >>> _ = mk.manual_seed(0); a = mk.rand(2)
    >>> _ = mk.manual_seed(0); bool((mk.rand(2) == a).all())
    True
"""

from __future__ import annotations

import numpy as np


class Generator:
    """A seeded source of random numbers (numpy's PCG64 inside)."""

    def __init__(self, seed=None):
        self.manual_seed(np.random.SeedSequence().entropy % 2 ** 63 if seed is None else seed)

    def manual_seed(self, seed: int) -> "Generator":
        """Restart the stream: the same seed gives the same numbers."""
        self._seed = int(seed)
        self.numpy = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self):
        return self.numpy.bit_generator.state

    def set_state(self, state) -> None:
        self.numpy.bit_generator.state = state


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the global generator (rand, randn, randint, randperm, dropout, nn.init) and, as
    torch does, the CUDA generators (`mk.cuda.manual_seed`).

    Example:
        >>> manual_seed(42).initial_seed()
        42
    """
    from modelkit.authoring import cuda
    cuda.manual_seed(seed)
    return default_generator.manual_seed(seed)


def seed() -> int:
    """Reseed the global generator from OS entropy; returns the new seed.

    Example:
        >>> isinstance(seed(), int)
        True
    """
    default_generator.manual_seed(np.random.SeedSequence().entropy % 2 ** 63)
    return default_generator.initial_seed()


def initial_seed() -> int:
    """The seed the global generator was last seeded with.

    Example:
        >>> _ = manual_seed(7); initial_seed()
        7
    """
    return default_generator.initial_seed()


def get_rng_state():
    """The global generator's state (restore it with set_rng_state).

    Example:
        >>> state = get_rng_state(); set_rng_state(state)
    """
    return default_generator.get_state()


def set_rng_state(state) -> None:
    """Restore a state returned by get_rng_state.

    Example:
        >>> set_rng_state(get_rng_state())
    """
    default_generator.set_state(state)


def numpy_generator(generator=None) -> np.random.Generator:
    """The numpy Generator to draw from: `generator`'s, or the global one."""
    return (generator or default_generator).numpy
