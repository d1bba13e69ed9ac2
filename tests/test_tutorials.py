"""Every tutorial runs in quick mode, headless, in a temporary folder, and writes its figures.

Each ``tutorials/NN_name.py`` is executed as a script (``python tutorials/NN_name.py``) in a
subprocess with ``DLRT_QUICK=1`` (small problems), ``MPLBACKEND=Agg`` (no display) and
``DLRT_TUTORIAL_OUT`` pointing into pytest's ``tmp_path``; the working directory is
``tmp_path`` too, so a tutorial that depends on being started from the repository root
fails here. All seven take about 30-40 s together on one core.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"

# tutorial -> figures it must write (PNG names in DLRT_TUTORIAL_OUT)
EXPECTED = {
    "01_low_rank_matrices.py": ["01_singular_values.png"],
    "02_dlra_and_integrators.py": ["02_error_vs_step_size.png"],
    "03_rank_adaptivity.py": ["03_rank_adaptive_schrodinger.png"],
    "04_backprop_by_hand.py": ["04_taylor_test.png"],
    "05_one_dlrt_step.py": ["05_one_dlrt_step.png"],
    "06_mnist_rank_adaptive.py": ["06_mlp.png", "06_lenet5.png"],
    "07_gpu_backend.py": ["07_step_time_vs_width.png"],
    "08_dlrt_theorems.py": ["08_dlrt_theorems.png"],
}


def test_every_tutorial_is_listed():
    found = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert found == sorted(EXPECTED), "add new tutorials (and their figures) to EXPECTED"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs_in_quick_mode(name, tmp_path):
    out = tmp_path / "figures"
    env = dict(os.environ, DLRT_QUICK="1", MPLBACKEND="Agg", DLRT_TUTORIAL_OUT=str(out),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for fig in EXPECTED[name]:
        path = out / fig
        assert path.is_file() and path.stat().st_size > 10_000, f"{name} did not write {fig}"
    assert "Traceback" not in proc.stderr
