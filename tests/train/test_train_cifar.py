"""``train --model vgg16|alexnet|resnet20|lenet5-cifar --dataset cifar10|cifar100`` (issue 17, part 4).

CIFAR is not shipped: without it the command ends with exit 1 and one line naming where to put the data.
With an extracted folder in the official format (written here, 6 images per batch file) LeNet5-CIFAR trains
for one epoch through the command line.
"""
import json
import pickle

import numpy as np
import pytest

from dlrt_ref.cli import main
from dlrt_ref.data import set_data_dir


@pytest.fixture(autouse=True)
def no_cifar_anywhere(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("DLRT_REF_CACHE", str(cache))  # a CIFAR copy in the user's cache must not be found
    monkeypatch.delenv("DLRT_REF_DATA_DIR", raising=False)
    yield
    set_data_dir(None)  # cifar_path sets the process's data folder for --data-dir


def _folder(root, n=6, seed=0):
    """cifar-10-batches-py/ with the official member names and pickle layout, ``n`` images per file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"labels": rng.integers(0, 10, n).tolist(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return folder


@pytest.mark.parametrize("model,dataset", [("resnet20", "cifar10"), ("vgg16", "cifar100")])
def test_absent_cifar_is_one_line_naming_where_to_put_it(model, dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--model", model, "--dataset", dataset, "--data-dir", str(empty), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[dataset]
    assert archive in lines[0] and str(empty) in lines[0], lines[0]


@pytest.mark.parametrize("argv,fragment", [
    (["--model", "lenet5", "--dataset", "cifar10"], "does not fit --dataset cifar10"),
    (["--model", "resnet20", "--dataset", "mnist"], "does not fit --dataset mnist"),
    (["--model", "vgg16", "--widths", "784,10"], "--widths is for --model mlp"),
    (["--model", "alexnet", "--subset", "50001"], "--subset 50001 is larger"),
])
def test_bad_cifar_options_are_usage_errors(argv, fragment, capsys):
    code = main(["train", *argv, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err


def test_lenet5_cifar_trains_one_epoch_from_a_folder(tmp_path, capsys):
    _folder(tmp_path / "data")
    code = main(["train", "--model", "lenet5-cifar", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                 "--batch-size", "10", "--optimizer", "sgd", "--lr", "0.01", "--quiet", "--json",
                 "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out)
    assert res["config"]["run"]["dataset"] == "cifar10"  # the default data set of a CIFAR model
    assert len(res["history"]) == 1 and res["history"][0]["ranks"]  # low-rank conv1, conv2, fc1
    assert len(res["history"][0]["ranks"]) == 3


def test_evaluate_reads_a_cifar_checkpoint(tmp_path, capsys):
    _folder(tmp_path / "data")
    argv = ["--model", "lenet5-cifar", "--data-dir", str(tmp_path / "data")]
    assert main(["train", *argv[:2], argv[2], argv[3], "--epochs", "1", "--batch-size", "10", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.npz"), "--data-dir", str(tmp_path / "data"),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test_images"] == 6 and len(res["ranks"]) == 3


def test_cifar_trains_augmented_by_default_and_says_so_and_evaluate_normalises(tmp_path, capsys):
    _folder(tmp_path / "data")
    data = str(tmp_path / "data")
    common = ["--model", "lenet5-cifar", "--data-dir", data, "--batch-size", "10", "--optimizer", "sgd", "--lr",
              "0.01", "--log-every", "0", "--json"]
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    cap = capsys.readouterr()
    start = cap.err.splitlines()[0]
    assert "; CIFAR-10 (" in start and "MNIST" not in start.split(" (")[0]  # the data set by name, before the data load:
    assert "50000 train / 0 val / 10000 test images, augmented" in start  # so its nominal sizes
    res = json.loads(cap.out)
    assert res["config"]["run"]["augment"] is True
    aug = res["config"]["augment"]
    assert aug["pad"] == 4 and aug["flip"] and aug["seed"] == 0 and len(aug["mean"]) == len(aug["std"]) == 3
    assert 0.3 < aug["mean"][0] < 0.7 and 0.2 < aug["std"][0] < 0.4  # uniform bytes scaled to [0, 1]
    assert main(["evaluate", str(tmp_path / "run"), "--data-dir", data, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_loss"] == pytest.approx(res["test_loss"], rel=1e-6)  # on normalised images, as in training
    # resuming keeps the augmentation; asking for the other setting is refused
    assert main(["train", "--resume", str(tmp_path / "run" / "checkpoint.npz"), "--no-augment", "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "--augment False differs from the checkpoint's True" in capsys.readouterr().err
    assert main(["train", *common, "--no-augment", "--lowrank", "fc", "--epochs", "1"]) == 0
    cap = capsys.readouterr()
    assert "CIFAR-10 (" in cap.err.splitlines()[0] and "not augmented" in cap.err.splitlines()[0]
    res = json.loads(cap.out)
    assert "augment" not in res["config"]
    assert len(res["history"][0]["ranks"]) == 1  # --lowrank fc: LeNet5-CIFAR's fc1 only (default: conv1, conv2, fc1)


@pytest.mark.parametrize("argv,code,fragment", [
    (["--model", "mlp", "--augment"], 2, "--augment is for --dataset cifar10/cifar100"),
    (["--model", "lenet5", "--lowrank", "all"], 2, "--lowrank is for the CIFAR models"),
    (["--model", "vgg16", "--method", "dense", "--lowrank", "all"], 2, "--lowrank does not apply to --method dense"),
    (["--model", "resnet20", "--dataset", "cifar10", "--data-dir", "/nonexistent"], 2,
     "--data-dir /nonexistent is not a folder; create it and put cifar-10-python.tar.gz"),
])
def test_augment_on_mnist_and_a_missing_data_dir_are_one_line(argv, code, fragment, capsys):
    assert main(["train", *argv]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err
