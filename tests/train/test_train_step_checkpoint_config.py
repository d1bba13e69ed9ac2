"""A checkpoint holds the whole configuration of the step: loading it into a trainer or optimiser
that differs in any one setting is a one-line CheckpointError naming that setting."""
import numpy as np
import pytest

from dlrt_ref.nn import mlp
from dlrt_ref.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dlrt_ref.train.dlrt import DLRT
from dlrt_ref.train.optim import Adam, Momentum

WIDTHS = [6, 8, 8, 3]
BASE = dict(method="ra-bug", tau=0.1, r_min=2, r_max=3, ortho="householder", compat_2022_truncation=False)


def _trainer(opt, **kw):
    net = mlp(WIDTHS, ranks=[3, 3, None], dtype=np.float64, seed=0)
    return DLRT(net, opt, **dict(BASE, **kw))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, WIDTHS[0])), rng.integers(0, WIDTHS[-1], 10)
    paths = {}
    for name, opt in (("adam", Adam(1e-2, beta1=0.8, beta2=0.99, eps=1e-7)), ("momentum", Momentum(1e-2, mu=0.7))):
        tr = _trainer(opt)
        tr.step(x, y)
        paths[name] = save_checkpoint(tmp_path_factory.mktemp(name) / "c.npz", tr, {}, {}, {})
    return paths


ADAM = dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-7)


@pytest.mark.parametrize("field,opt_kw,trainer_kw", [
    ("beta1", dict(ADAM, beta1=0.9), {}),
    ("beta2", dict(ADAM, beta2=0.999), {}),
    ("eps", dict(ADAM, eps=1e-8), {}),
    ("lr", dict(ADAM, lr=2e-2), {}),
    ("state_policy", dict(ADAM, state_policy="transport-shared-t"), {}),
    ("tau", ADAM, dict(tau=0.2)),
    ("r_min", ADAM, dict(r_min=1)),
    ("r_max", ADAM, dict(r_max=4)),
    ("ortho", ADAM, dict(ortho="cholqr2")),
    ("compat_2022_truncation", ADAM, dict(compat_2022_truncation=True)),
    ("method", ADAM, dict(method="parallel")),
])
def test_each_adam_and_trainer_setting_is_checked(saved, field, opt_kw, trainer_kw):
    kw = dict(opt_kw)
    tr = _trainer(Adam(kw.pop("lr"), **kw), **trainer_kw)
    before = [l.to_dense().copy() for l in tr.net.lowrank_layers()]
    with pytest.raises(CheckpointError, match=field) as info:
        load_checkpoint(saved["adam"], tr)
    assert "\n" not in str(info.value)
    assert all(np.array_equal(a, l.to_dense()) for a, l in zip(before, tr.net.lowrank_layers()))  # untouched
    assert tr.opt.state == {}


def test_momentum_mu_and_the_optimiser_name_are_checked(saved):
    with pytest.raises(CheckpointError, match="mu"):
        load_checkpoint(saved["momentum"], _trainer(Momentum(1e-2, mu=0.9)))
    with pytest.raises(CheckpointError, match="name"):
        load_checkpoint(saved["momentum"], _trainer(Adam(1e-2)))


def test_the_same_configuration_loads(saved):
    tr = _trainer(Adam(1e-2, beta1=0.8, beta2=0.99, eps=1e-7))
    load_checkpoint(saved["adam"], tr)
    assert tr.steps == 1 and tr.opt.state
    tr = _trainer(Momentum(1e-2, mu=0.7))
    load_checkpoint(saved["momentum"], tr)
    assert tr.steps == 1


@pytest.mark.parametrize("policy", ["transport", "transport-shared-t", "reset", "stale"])
def test_train_command_passes_the_state_policy_to_the_optimiser(policy, monkeypatch, capsys):
    import json

    from dlrt_ref.cli import main
    from dlrt_ref.train import cli as train_cli

    built = {}
    real = train_cli.build_trainer

    def spy(run):
        trainer = real(run)
        built["policy"] = trainer.opt.state_policy
        return trainer

    monkeypatch.setattr(train_cli, "build_trainer", spy)
    code = main(["train", "--widths", "784,16,10", "--subset", "100", "--test-subset", "50", "--batch-size", "50",
                 "--epochs", "1", "--log-every", "0", "--state-policy", policy, "--json"])
    assert code == 0 and built["policy"] == policy
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["config"]["run"]["state_policy"] == policy
