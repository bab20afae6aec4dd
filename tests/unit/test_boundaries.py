"""Architecture rules that keep start-up fast and the layers apart."""
import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _all_module_names() -> list[str]:
    import modules

    return ["modules"] + [m.name for m in pkgutil.walk_packages(modules.__path__, "modules.")]


def test_importing_modules_pulls_in_neither_gradio_nor_fastapi():
    code = (
        "import importlib, sys\n"
        f"for name in {_all_module_names()!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in ('gradio', 'fastapi', 'starlette') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"modules/ imported {out.stdout.strip()}"


def test_building_the_studio_imports_no_torch():
    """The port opens before heavy imports: constructing the Studio must not import torch or diffusers."""
    code = (
        "import sys, tempfile\n"
        "from modules.studio import Studio, StudioOptions\n"
        "s = Studio(StudioOptions(data_dir=tempfile.mkdtemp(), build_demo=False))\n"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"Studio() imported {out.stdout.strip()}"
