import os
import shutil
import socket
import tempfile

# Before huggingface_hub is imported anywhere in the session (it reads these at import, URL templates included):
# downloads go to the olah mirror that the `olah` fixture starts on OLAH_PORT, into a throw-away cache and model
# home, removed when the session ends. The port stays bound by this socket (no other process can take it, the
# kernel hands out no bound port) until the fixture closes it right before olah binds it.
_OLAH_PORT_RESERVATION = socket.socket()
_OLAH_PORT_RESERVATION.bind(("127.0.0.1", 0))
OLAH_PORT = _OLAH_PORT_RESERVATION.getsockname()[1]
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{OLAH_PORT}"
SESSION_DIRS = [tempfile.mkdtemp(prefix="medssl-test-hf-"), tempfile.mkdtemp(prefix="medssl-test-zoo-home-")]
os.environ["HF_HOME"], os.environ["ZOO_HOME"] = SESSION_DIRS
os.environ.pop("HF_TOKEN", None)
os.environ.pop("ZOO_REGISTRY", None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (its state is a process-wide singleton): no test sees what
    another left (a bf16 AcceleratorState, say), whatever the order."""
    from tests.helpers.accelerate_state import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()


def pytest_sessionfinish(session, exitstatus):
    for folder in SESSION_DIRS:  # the session's own temporary folders (made above)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def olah(tmp_path_factory):
    """An olah Hub mirror on 127.0.0.1:OLAH_PORT (HF_ENDPOINT), offline, serving the git repositories under
    ``mirrors/``; it must be olah itself that listens there (checked), not whatever took the port."""
    from tests.helpers.servers import start_olah

    root = tmp_path_factory.mktemp("olah")
    _OLAH_PORT_RESERVATION.close()
    with start_olah(root, OLAH_PORT) as (_, mirrors):
        yield mirrors


@pytest.fixture
def hub_server(olah, monkeypatch):
    """The Hub-compatible upload test server (tests/helpers/hub_server.py) in front of the olah mirror's git
    repositories, with HF_TOKEN set for this test: what is pushed is then served by olah."""
    from tests.helpers.hub_server import HUB_TOKEN, HubServer

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    with HubServer(olah) as server:
        yield server


@pytest.fixture
def tiny_run(tiny_export):
    """The finished run directory behind ``tiny_export``."""
    return tiny_export.parent / "run"


@pytest.fixture(scope="session")
def standins(olah, tmp_path_factory):
    """Stand-ins of the catalogue's encoders served by the olah mirror, registered as catalogue entries pinned to
    their commits (tests/helpers/catalogue.py)."""
    from tests.helpers.catalogue import publish_all

    return publish_all(olah, tmp_path_factory.mktemp("standin-weights"))


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A real pre-training run (a few steps on synthetic data) exported as a Hub folder."""
    from medssl_zoo.hub.export import export_run
    from medssl_zoo.train.pretrain import main
    from tests.helpers.accelerate_state import reset_accelerate_state
    from tests.train.tiny import args

    root = tmp_path_factory.mktemp("tiny-run")
    reset_accelerate_state()
    assert main(args(root / "run", "--max-steps", "4", "--export-name", "null")) == 0
    reset_accelerate_state()

    return export_run(root / "run", root / "simclr-synthetic")
