"""Bad inputs, table-driven: every one gives the documented exit code and exactly one line on stderr.

The exit policy (dlrt_ref/cli.py): 2 for a usage error, 1 for a runtime failure
(damaged checkpoint or data file, unwritable output, divergence). Each CLI case
also checks that no file of an earlier run (and no shipped data file) changed.
Most cases run in-process (``main(argv)``) and fail before any data is loaded;
a few run in a subprocess, to see the real stderr of ``python -m dlrt_ref``.
The API cases check the exception type and a one-line message.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlrt_ref.cli import main

TINY = ["--widths", "784,16,10", "--subset", "200", "--test-subset", "100", "--batch-size", "50", "--log-every", "0"]


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite_npz(src: Path, dst: Path, change) -> None:
    """Copy a checkpoint, letting ``change(arrays)`` drop or reshape arrays (a well-formed but wrong file)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An earlier run (``run0``, 1 epoch) plus damaged copies of its checkpoint and of MNIST."""
    root = tmp_path_factory.mktemp("bad_inputs")
    run0 = root / "run0"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run0), "--quiet", "--json"]) == 0
    ckpt = run0 / "checkpoint.npz"
    raw = ckpt.read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (bad / "empty.npz").write_bytes(b"")
    (bad / "text.npz").write_text("not a checkpoint\n")
    with zipfile.ZipFile(ckpt) as zf:  # flip one byte inside the data of the largest array
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    flipped = bytearray(raw)
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    flipped[pos] ^= 0xFF
    (bad / "flipped.npz").write_bytes(bytes(flipped))
    _rewrite_npz(ckpt, bad / "missing.npz", lambda a: a.pop("layer0/factor/S"))
    _rewrite_npz(ckpt, bad / "shape.npz", lambda a: a.update({"layer0/factor/U": a["layer0/factor/U"][:, :-1]}))
    _rewrite_npz(ckpt, bad / "nan.npz", lambda a: a["layer0/factor/S"].__setitem__((0, 0), np.nan))
    (root / "afile").write_text("I am a file\n")
    (root / "emptydir").mkdir()
    # a copy of MNIST with one byte of the training images changed
    from dlrt_ref.data import SHIPPED_DIR

    mn = root / "mnist_corrupt"
    mn.mkdir()
    for p in SHIPPED_DIR.glob("*.gz"):
        shutil.copy(p, mn / p.name)
    img = bytearray((mn / "train-images-idx3-ubyte.gz").read_bytes())
    img[len(img) // 2] ^= 0xFF
    (mn / "train-images-idx3-ubyte.gz").write_bytes(bytes(img))
    places = {"run0": str(run0), "ckpt": str(ckpt), "afile": str(root / "afile"), "emptydir": str(root / "emptydir"),
              "new": str(root / "new"), "mnist_corrupt": str(mn), "root": str(root)}
    places.update({f"bad_{p.stem}": str(p) for p in bad.iterdir()})
    return {"places": places, "run0": run0, "before": _digests(run0), "shipped": _digests(SHIPPED_DIR)}


# (id, argv with {placeholders}, exit code, fragment of the one stderr line)
CLI_CASES = [
    # --- train: values checked before anything is loaded (exit 2)
    ("tau-above-1", ["train", "--tau", "1.5"], 2, "--tau must be in [0, 1)"),
    ("tau-equal-1", ["train", "--tau", "1"], 2, "--tau must be in [0, 1)"),
    ("tau-negative", ["train", "--tau", "-0.1"], 2, "--tau must be"),
    ("tau-nan", ["train", "--tau", "nan"], 2, "--tau must be"),
    ("tau-fixed-rank", ["train", "--method", "bug", "--tau", "0.1"], 2, "--tau applies to"),
    ("seed-negative", ["train", "--seed", "-1"], 2, "--seed must be >= 0"),
    ("validation-all", ["train", "--validation", "60000"], 2, "leaves no training images"),
    ("validation-last-all", ["train", "--validation", "last:60000"], 2, "leaves no training images"),
    ("validation-text", ["train", "--validation", "lots"], 2, "--validation must be"),
    ("subset-too-large", ["train", "--subset", "70000"], 2, "--subset 70000 is larger"),
    ("subset-after-validation", ["train", "--validation", "50000", "--subset", "20000"], 2, "--subset 20000 is larger"),
    ("test-subset-too-large", ["train", "--test-subset", "20000"], 2, "--test-subset 20000 is larger"),
    ("subset-zero", ["train", "--subset", "0"], 2, "--subset must be >= 1"),
    ("epochs-negative", ["train", "--epochs", "-1"], 2, "--epochs must be >= 0"),
    ("lr-zero", ["train", "--lr", "0"], 2, "--lr must be"),
    ("lr-inf", ["train", "--lr", "inf"], 2, "--lr must be"),
    ("batch-zero", ["train", "--batch-size", "0"], 2, "--batch-size must be >= 1"),
    ("widths-text", ["train", "--widths", "784,a,10"], 2, "--widths must be"),
    ("widths-wrong-ends", ["train", "--widths", "100,10"], 2, "must start with 784"),
    ("rank-zero", ["train", "--rank", "0"], 2, "--rank must be >= 1"),
    ("rmax-below-rmin", ["train", "--r-min", "5", "--r-max", "3"], 2, "--r-max (3) must be >= --r-min (5)"),
    ("dense-with-rank", ["train", "--method", "dense", "--rank", "4"], 2, "do not apply to --method dense"),
    ("compat-fixed-rank", ["train", "--method", "bug", "--compat-2022-truncation"], 2, "applies to ra-bug/parallel"),
    ("lenet-widths", ["train", "--model", "lenet5", "--widths", "784,10"], 2, "--widths is for --model mlp"),
    ("method-unknown", ["train", "--method", "svd"], 2, "invalid choice"),
    ("option-unknown", ["train", "--learning-rate", "1"], 2, "unrecognized arguments"),
    ("epochs-text", ["train", "--epochs", "abc"], 2, "invalid int value"),
    ("no-command", [], 2, "the following arguments are required"),
    ("checkpoint-every-no-out", ["train", "--checkpoint-every", "5"], 2, "--checkpoint-every needs --out"),
    ("log-every-negative", ["train", "--log-every", "-1"], 2, "--log-every must be >= 0"),
    ("divergence-factor-low", ["train", "--divergence-factor", "0.5"], 2, "--divergence-factor must be"),
    ("threads-zero", ["train", "--threads", "0"], 2, "--threads: must be >= 1"),
    ("threads-text", ["train", "--threads", "many"], 2, "invalid int value"),
    ("backend-missing", ["train", "--backend", "cupy"], 2, "is not available"),
    # --- train: output folder
    ("out-is-a-file", ["train", *TINY, "--out", "{afile}"], 2, "is a file"),
    ("out-holds-a-run", ["train", *TINY, "--out", "{run0}"], 2, "already holds a run"),
    ("overwrite-without-out", ["train", "--overwrite"], 2, "--overwrite needs --out"),
    ("out-unwritable", ["train", *TINY, "--out", "{afile}/sub", "--quiet"], 1, "is not writable"),
    # --- train: resume
    ("resume-missing", ["train", "--resume", "{root}/nope.npz"], 2, "does not exist"),
    ("resume-lower-epoch", ["train", "--resume", "{ckpt}", "--epochs", "1"], 2, "has completed 1 epoch(s)"),
    ("resume-other-option", ["train", "--resume", "{ckpt}", "--epochs", "2", "--lr", "0.5"], 2, "differs from"),
    ("resume-truncated", ["train", "--resume", "{bad_truncated}", "--epochs", "2"], 1, "not a readable"),
    ("resume-empty", ["train", "--resume", "{bad_empty}", "--epochs", "2"], 1, "not a readable"),
    ("resume-text", ["train", "--resume", "{bad_text}", "--epochs", "2"], 1, "not a zip archive"),
    ("resume-byte-flipped", ["train", "--resume", "{bad_flipped}", "--epochs", "2"], 1, "damaged"),
    ("resume-missing-array", ["train", "--resume", "{bad_missing}", "--epochs", "2"], 1, "'layer0/factor/S' is missing"),
    ("resume-wrong-shape", ["train", "--resume", "{bad_shape}", "--epochs", "2"], 1, "factors: shapes"),
    ("resume-nan-weights", ["train", "--resume", "{bad_nan}", "--epochs", "2"], 1, "NaN or infinity"),
    ("resume-folder", ["train", "--resume", "{run0}", "--epochs", "2"], 1, "is a folder"),
    # --- train: data
    ("data-dir-missing", ["train", *TINY, "--data-dir", "{root}/nodata"], 2, "is not a folder"),
    ("data-dir-empty", ["train", *TINY, "--data-dir", "{emptydir}"], 2, "holds no MNIST IDX files"),
    ("data-corrupt", ["train", *TINY, "--data-dir", "{mnist_corrupt}", "--quiet"], 1, "expected"),
    ("diverges", ["train", *TINY, "--lr", "1e6", "--epochs", "2", "--out", "{new}/div", "--quiet"], 1, "diverged"),
    # --- evaluate
    ("evaluate-missing", ["evaluate", "{root}/nope.npz"], 1, "does not exist"),
    ("evaluate-truncated", ["evaluate", "{bad_truncated}"], 1, "not a readable"),
    ("evaluate-byte-flipped", ["evaluate", "{bad_flipped}"], 1, "damaged"),
    ("evaluate-missing-array", ["evaluate", "{bad_missing}"], 1, "is missing"),
    ("evaluate-wrong-shape", ["evaluate", "{bad_shape}"], 1, "factors: shapes"),
    ("evaluate-empty-folder", ["evaluate", "{emptydir}"], 1, "does not exist"),
    ("evaluate-test-subset", ["evaluate", "{ckpt}", "--test-subset", "0"], 2, "--test-subset must be in"),
    ("evaluate-no-argument", ["evaluate"], 2, "the following arguments are required"),
    # --- figures and ode
    ("figures-unknown", ["figures", "--only", "nope"], 2, "no experiment named"),
    ("figures-out-file", ["figures", "--only", "ode_convergence", "--out", "{afile}"], 2, "is a file"),
    ("figures-data-dir", ["figures", "--only", "ode_convergence", "--data-dir", "{root}/nodata"], 2, "is not a folder"),
    ("figures-preset", ["figures", "--preset", "slow"], 2, "invalid choice"),
    ("ode-rank", ["ode", "--problem", "toy", "--integrator", "bug", "--rank", "0"], 2, "--rank must be in"),
]


def _fill(argv, places):
    return [a.format(**places) for a in argv]


def _check_untouched(world):
    from dlrt_ref.data import SHIPPED_DIR

    assert _digests(world["run0"]) == world["before"], "a file of the earlier run changed"
    assert _digests(SHIPPED_DIR) == world["shipped"]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, world, capsys):
    name, argv, code, fragment = case
    got = main(_fill(argv, world["places"]))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert got == code, (name, got, err)
    assert len(lines) == 1 and "Traceback" not in err, (name, err)
    assert fragment in lines[0], (name, lines[0])
    _check_untouched(world)


def test_resume_in_its_own_folder_is_allowed(world, tmp_path, capsys):
    """The negative of 'out-holds-a-run': --resume of the run in --out may write there."""
    copy = tmp_path / "run0"
    shutil.copytree(world["run0"], copy)
    assert main(["train", "--resume", str(copy / "checkpoint.npz"), "--epochs", "2", "--out", str(copy), "--quiet",
                 "--log-every", "0"]) == 0
    assert json.loads((copy / "results.json").read_text())["summary"]["epochs"] == 2
    _check_untouched(world)


def test_corrupt_data_names_file_and_checksum(world, capsys):
    assert main(["train", *TINY, "--data-dir", world["places"]["mnist_corrupt"], "--quiet"]) == 1
    line = capsys.readouterr().err.strip()
    assert "train-images-idx3-ubyte.gz" in line
    from dlrt_ref.data import MNIST_IDX_SHA256

    assert MNIST_IDX_SHA256["train-images-idx3-ubyte"] in line


def _fashion_installed() -> bool:
    from dlrt_ref.data import DataError, load_fashion_mnist

    try:
        load_fashion_mnist(subset=10, test_subset=10)
    except DataError:
        return False
    return True


@pytest.mark.skipif(_fashion_installed(), reason="Fashion-MNIST is installed here (the full finetune would run)")
def test_figures_without_fashion_mnist(world, tmp_path, capsys):
    assert main(["figures", "--preset", "full", "--only", "finetune", "--out", str(tmp_path / "fig"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Fashion-MNIST not found" in err[0] and "--data-dir" in err[0]
    _check_untouched(world)


SUBPROCESS_CASES = [
    ("tau-above-1", ["train", "--tau", "1.5"], 2),
    ("resume-truncated", ["train", "--resume", "{bad_truncated}", "--epochs", "2"], 1),
    ("evaluate-missing-array", ["evaluate", "{bad_missing}"], 1),
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_cli_bad_input_subprocess(case, world):
    name, argv, code = case
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "dlrt_ref", *_fill(argv, world["places"])], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == code, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    _check_untouched(world)


def test_debug_shows_the_traceback(world):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "dlrt_ref", "--debug", "evaluate", world["places"]["bad_missing"]],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr and "CheckpointError" in p.stderr


# ----------------------------------------------------------------------------- the Python API

def _api_cases():
    from dlrt_ref.data import DataError, teacher_student
    from dlrt_ref.data.idx import read_idx
    from dlrt_ref.nn import Dense, LowRankLinear, mlp
    from dlrt_ref.data.splits import make_dataset
    from dlrt_ref.train.checkpoint import CheckpointError
    from dlrt_ref.train.dlrt import DLRT
    from dlrt_ref.train.loop import fit
    from dlrt_ref.train.optim import make_optimizer

    def nan_test_data():
        d = teacher_student(40, 20, [6, 8, 3], ranks=2, seed=0, dtype=np.float64)
        d.x_test[3, 1] = np.nan
        fit(DLRT(mlp([6, 8, 3], ranks=[2, None], dtype=np.float64), make_optimizer("sgd", 0.1)), d, 1, 10,
            log=lambda _: None)

    def no_train_data():
        d = teacher_student(40, 20, [6, 8, 3], ranks=2, seed=0, dtype=np.float64)
        d.x_train, d.y_train = d.x_train[:0], d.y_train[:0]
        fit(DLRT(mlp([6, 8, 3], ranks=[2, None], dtype=np.float64), make_optimizer("sgd", 0.1)), d, 1, 10,
            log=lambda _: None)

    def set_factors_float64():
        layer = LowRankLinear(6, 5, 2)  # float32
        layer.set_factors(np.eye(5, 2), np.eye(2), np.eye(6, 2))

    def checkpoint_garbage(tmp):
        p = Path(tmp) / "x.npz"
        p.write_bytes(b"PK\x03\x04garbage")
        from dlrt_ref.train.checkpoint import load_checkpoint

        load_checkpoint(p, DLRT(mlp([6, 8, 3], ranks=[2, None]), make_optimizer("sgd", 0.1)))

    cases = [
        ("lowrank-int", lambda t: LowRankLinear(10, 5, 2, dtype=int), TypeError, "float32 or float64"),
        ("lowrank-bool", lambda t: LowRankLinear(10, 5, 2, dtype=bool), TypeError, "float32 or float64"),
        ("lowrank-unicode", lambda t: LowRankLinear(10, 5, 2, dtype="U5"), TypeError, "float32 or float64"),
        ("lowrank-float16", lambda t: LowRankLinear(10, 5, 2, dtype=np.float16), TypeError, "float32 or float64"),
        ("lowrank-complex", lambda t: LowRankLinear(10, 5, 2, dtype=np.complex128), TypeError, "float32 or float64"),
        ("dense-int", lambda t: Dense(10, 5, dtype=np.int32), TypeError, "float32 or float64"),
        ("set-factors-dtype", lambda t: set_factors_float64(), TypeError, "has dtype float64, the layer float32"),
        ("fit-nan-test", lambda t: nan_test_data(), DataError, "NaN or infinity"),
        ("fit-no-train", lambda t: no_train_data(), DataError, "training split is empty"),
        ("checkpoint-garbage", checkpoint_garbage, CheckpointError, "not a readable"),
        ("idx-garbage", lambda t: read_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"), DataError, "declares"),
        ("subset-too-large", lambda t: make_dataset("x", np.zeros((5, 1, 2, 2), np.uint8), np.arange(5),
                                                    np.zeros((2, 1, 2, 2), np.uint8), np.arange(2), flatten=True,
                                                    dtype=np.float32, validation=0, seed=0, subset=9,
                                                    test_subset=None), ValueError, "subset size"),
    ]
    from dlrt_ref.lowrank import LowRankMatrix
    from dlrt_ref.truncation import truncate

    U, S, V = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 2)))[0], np.diag([2.0, 1.0]), np.eye(4, 2)
    Snan = S.copy()
    Snan[0, 0] = np.nan
    cases += [
        ("lowrankmatrix-list", lambda t: LowRankMatrix(U.tolist(), S, V), TypeError, "must be a NumPy or CuPy array"),
        ("lowrankmatrix-float16", lambda t: LowRankMatrix(U.astype(np.float16), S.astype(np.float16),
                                                          V.astype(np.float16)), TypeError, "dtype float16"),
        ("truncate-lowrankmatrix", lambda t: truncate(LowRankMatrix(U, S, V), tau=0.1), TypeError,
         "not a LowRankMatrix"),
        ("truncate-nan-core", lambda t: truncate(Snan, tau=0.1), ValueError, "NaN or infinite"),
    ]
    # τ is relative (ϑ = τ‖σ‖₂): τ ≥ 1 would truncate everything, so the API refuses it as the CLI does
    for tau, tag in ((1.5, "above-1"), (1.0, "equal-1"), (-0.1, "negative"), (np.nan, "nan"), (np.inf, "inf")):
        cases += [
            (f"truncate-tau-{tag}", lambda t, tau=tau: truncate(S, tau=tau), ValueError, "tau must be in [0, 1)"),
            (f"dlrt-tau-{tag}", lambda t, tau=tau: DLRT(mlp([6, 8, 3], ranks=[2, None]), make_optimizer("sgd", 0.1),
                                                        tau=tau), ValueError, "tau must be in [0, 1)"),
        ]
    cases += [("dlrt-tau-string", lambda t: DLRT(mlp([6, 8, 3], ranks=[2, None]), make_optimizer("sgd", 0.1), tau="0.1"),
               TypeError, "tau must be a real number")]
    return cases


API_CASES = _api_cases()


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, tmp_path):
    name, call, kind, fragment = case
    with pytest.raises(kind) as exc:
        call(tmp_path)
    msg = str(exc.value)
    assert msg and "\n" not in msg and fragment in msg, (name, msg)
    assert type(exc.value) not in (KeyError, AttributeError, IndexError)


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(SUBPROCESS_CASES) + len(API_CASES) >= 40
