import pytest

import modelkit.authoring as mk


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state and with anomaly detection off."""
    mk.manual_seed(0)
    yield
    mk.autograd.set_detect_anomaly(False)
