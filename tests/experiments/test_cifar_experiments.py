"""cifar_finetune and cifar_acc_vs_cr (issue 17, part 4): the quick presets on synthetic CIFAR-format data
(a mechanism check, never a result) and the one-line error of the real presets without the CIFAR archives."""
import numpy as np
import pytest

from dlrt_ref.cli import main
from dlrt_ref.data import set_data_dir
from dlrt_ref.experiments import cifar_acc_vs_cr, cifar_finetune
from dlrt_ref.experiments.cifar_common import synthetic_cifar
from dlrt_ref.train.augment import Augment


@pytest.fixture(autouse=True)
def no_cifar_anywhere(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("DLRT_REF_CACHE", str(cache))
    monkeypatch.delenv("DLRT_REF_DATA_DIR", raising=False)
    yield
    set_data_dir(None)


def test_synthetic_set_has_the_cifar_format():
    ds = synthetic_cifar(n_train=40, n_test=20)
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert set(ds.y_train.tolist()) == set(range(10))


def test_finetune_quick_freezes_the_bases_and_says_synthetic():
    d = cifar_finetune.run("quick")
    assert d["synthetic"] and "SYNTHETIC" in d["note"] and "not a result" in d["note"]
    assert set(d["results"]) == {"lenet5_cifar", "resnet20"}
    for m, row in d["results"].items():
        (r,) = row["runs"]
        assert r["basis_change"] == 0.0, m  # S-only: U and V did not move
        assert r["ranks_after_sonly"] == r["ranks"], m  # nor did the ranks
        assert r["s_only"]["cr"][-1]["cr_eval"] == pytest.approx(r["cr_eval"])
        assert len(r["dlrt"]["test_acc"]) == 1 and len(r["s_only"]["test_acc"]) == 1
        assert 0 <= row["after_sonly"][0] <= 1
    assert d["published_cifar10"]["VGG16"] == [39.5, 67.7]
    assert "crop" in d["augmentation"]
    assert all(cfg["augment"] for cfg in cifar_finetune.PRESETS.values())


def test_acc_vs_cr_quick_keeps_the_thesis_ranks():
    d = cifar_acc_vs_cr.run("quick")
    assert d["synthetic"] and "SYNTHETIC" in d["note"]
    rows = d["results"]["lenet5_cifar"]
    assert set(rows) == {"dense", "0.5", "0.9"}
    assert rows["dense"]["ranks"] == []
    for cr in ("0.5", "0.9"):
        run = rows[cr]["runs"][0]
        assert run["ranks"][-1] == run["initial_ranks"]  # fixed rank: bug keeps them
    # width 1/8 LeNet5-CIFAR: conv1 2x75 (start rank 1), conv2 6x50 (3), fc1 62x150 (31)
    assert rows["0.9"]["runs"][0]["initial_ranks"] == [cifar_acc_vs_cr.layer_rank(0.9, m, n, r0)
                                                        for m, n, r0 in ((2, 75, 1), (6, 50, 3), (62, 150, 31))]
    assert rows["0.9"]["cr_eval"] > rows["0.5"]["cr_eval"] > 0
    assert "crop" in d["augmentation"] and "flip" in d["augmentation"]


def test_acc_vs_cr_trains_with_the_augmentation_of_its_presets(monkeypatch):
    assert all(cfg["augment"] for cfg in cifar_acc_vs_cr.PRESETS.values())  # quick, full and paper
    given = []
    monkeypatch.setattr(cifar_acc_vs_cr, "train_record",
                        lambda *a, augment=None, **k: given.append(augment) or {"ranks": [[]]})
    c = dict(model="lenet5_cifar", cr=0.5, seed=3, backend="numpy", dataset="synthetic", width=0.125, epochs=1,
             subset=20, test_subset=10)
    cifar_acc_vs_cr.run_one(dict(c, augment=True), "t")
    cifar_acc_vs_cr.run_one(dict(c, cr=None, augment=False), "t")
    assert isinstance(given[0], Augment) and given[0].pad == 4 and given[0].flip and given[0].seed == 3
    assert given[1] is None


@pytest.mark.parametrize("name", ["cifar_finetune", "cifar_acc_vs_cr"])
def test_real_presets_without_cifar_are_one_line(name, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["figures", "--preset", "paper", "--only", name, "--data-dir", str(empty), "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert "cifar-10-python.tar.gz" in errors[0] and str(empty) in errors[0], errors[0]
    assert not (tmp_path / "out" / "data" / f"{name}.json").exists()


def test_finetune_phases_train_with_the_augmentation_seeded_like_their_batches(monkeypatch):
    given = []
    monkeypatch.setattr(cifar_finetune, "train_record", lambda *a, augment=None, **k: given.append(augment) or {})
    c = dict(model="lenet5_cifar", seed=2, backend="numpy", dataset="synthetic", width=0.125, subset=20,
             test_subset=10, augment=True, epochs=1)
    first = cifar_finetune.run_one(dict(c, phase="dlrt"), "t")
    for phase in ("s-only", "dlrt-control"):
        cifar_finetune.run_one(dict(c, phase=phase), "t", deps={"k": first})
    cifar_finetune.run_one(dict(c, phase="dlrt", augment=False), "t")
    assert all(isinstance(a, Augment) and a.pad == 4 and a.flip for a in given[:3])
    assert [a.seed for a in given[:3]] == [2, 1002, 1002] and given[3] is None
