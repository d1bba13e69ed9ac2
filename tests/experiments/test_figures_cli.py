"""``python -m dlrt_ref figures --preset quick --only ode`` writes every figure and finite data."""
import json
import math

import pytest

from dlrt_ref.cli import main
from dlrt_ref.experiments import EXPERIMENTS, select
from tests.helpers.json_numbers import json_numbers


def test_quick_ode_figures(tmp_path, capsys):
    assert main(["figures", "--preset", "quick", "--only", "ode", "--out", str(tmp_path)]) == 0
    names = [n for n in EXPERIMENTS if n.startswith("ode")]
    assert len(names) >= 4
    for name in names:
        for path in (tmp_path / f"{name}.png", tmp_path / f"{name}.pdf", tmp_path / "data" / f"{name}.json"):
            assert path.is_file() and path.stat().st_size > 0, path
        rec = json.loads((tmp_path / "data" / f"{name}.json").read_text())
        assert rec["name"] == name and rec["preset"] == "quick"
        nums = list(json_numbers(rec["data"]))
        assert nums and all(math.isfinite(x) for x in nums)


def test_selection_and_bad_names(capsys):
    assert select(["ode_conv"]) == ["ode_convergence"]
    assert set(select(["ode"])) == {n for n in EXPERIMENTS if n.startswith("ode")}
    assert main(["figures", "--only", "nope", "--preset", "quick"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["figures", "--preset", "slow"]) == 2  # main returns argparse's exit code


def test_no_arguments_means_quick_into_figures_quick():
    """A plain ``figures`` run must never overwrite the committed full-preset results."""
    from pathlib import Path

    from dlrt_ref.cli import build_parser
    from dlrt_ref.experiments.cli import DEFAULT_OUT

    args = build_parser().parse_args(["figures"])
    assert args.preset == "quick" and args.only is None and args.out is None
    assert DEFAULT_OUT["quick"] == Path("figures/quick") and DEFAULT_OUT["full"] == Path("figures")
