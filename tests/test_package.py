"""The package as users import it: one import name per module, and the library without the demo's and plots'
extras."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK_EXTRAS = "import sys\nfor m in ('gradio', 'pydicom', 'matplotlib'):\n    sys.modules[m] = None\n"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=None
    )


def test_only_the_three_applications_resolve_under_medssl_zoo():
    hub = str(ROOT / "hub")
    code = f"""
import importlib.util, sys
import medssl_zoo.hub.export as export, medssl_zoo.train.pretrain, medssl_zoo.demo
for name in ("medssl_zoo.tests", "medssl_zoo.bench", "medssl_zoo.zoo", "medssl_zoo.medssl_zoo"):
    assert importlib.util.find_spec(name) is None, name
assert export.__name__ == "medssl_zoo.hub.export" and sys.modules["medssl_zoo.hub"].__path__ == [{hub!r}]
assert "hub" not in sys.modules and "train" not in sys.modules  # no second module object of the same file
print("ok")
"""
    proc = run_python(code, ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_library_works_without_the_demo_and_plots_extras(tiny_export, tmp_path):
    code = (
        BLOCK_EXTRAS
        + f"""
import logging
logging.basicConfig(level=logging.WARNING)
import zoo
from zoo.optional import MissingExtraError, require
model = zoo.load({str(tiny_export)!r})
assert model.label_names
try:
    require("gradio", "the demo")
except MissingExtraError as e:
    print(e)
from medssl_zoo.train.evaluation import EvalOptions, evaluate
options = EvalOptions(protocols=("knn",), fractions=(1.0,), seeds=(0,), baselines=(), output_dir={str(tmp_path)!r})
evaluate({str(tiny_export.parent / "run")!r}, options)
"""
    )
    proc = run_python(code, ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "the demo needs gradio, which is not installed: pip install 'medssl-zoo[demo]'" in proc.stdout
    assert "no plots: matplotlib is not installed (pip install 'medssl-zoo[plots]')" in proc.stderr
    assert (tmp_path / "metrics.json").is_file() and not list(tmp_path.glob("*.png"))


def test_the_demo_without_its_extra_is_one_line():
    code = BLOCK_EXTRAS + "import medssl_zoo.demo as demo\nraise SystemExit(demo.main(['--help']))\n"
    proc = run_python(code, ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        proc.stderr.strip()
        == "error: the demo needs gradio, which is not installed: pip install 'medssl-zoo[demo]'"
    )
