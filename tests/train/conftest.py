import pytest

from tests.helpers.accelerate_state import reset_accelerate_state


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (the state is a process-wide singleton)."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()
