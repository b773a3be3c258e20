"""Sweeps train every member (times every seed) in one program; each member equals its own separate run."""

import jax
import numpy as np
import pytest

from aejax import Config
from aejax.errors import AejaxError
from aejax.training import loop, sweeps
from aejax.training.restore import load_model


def quiet(*_):
    pass


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])


@pytest.mark.parametrize("config, sweep", [
    (Config(latent_dim=8, epochs=1, batch_size=50, schedule="warmup_cosine", warmup_epochs=0.5),
     {"lr": [1e-3, 1e-2]}),
    pytest.param(Config(model="vae", latent_dim=8, epochs=1, batch_size=50), {"kl_weight": [1.0, 0.25]},
                 marks=pytest.mark.slow),  # a model_kwargs sweep, ~11 s here; CI runs it (`pytest -m slow`)
])
def test_each_member_equals_its_own_run(config, sweep, tmp_path, mnist_test_images):
    data = (mnist_test_images[:1000], mnist_test_images[1000:1500])
    together = loop.run(config, tmp_path / "sweep", seeds=[0, 1], sweep=sweep, data=data, log=quiet)
    (name, values), = sweep.items()
    assert [r["sweep"] for r in together.rows] == [{name: v} for v in values for _ in (0, 1)]
    assert [r["seed"] for r in together.rows] == [0, 1, 0, 1]
    for m, value in enumerate(values):
        member = sweeps.member_config(config, {name: value})
        alone = loop.run(member, tmp_path / f"alone{m}", seeds=[1], data=data, log=quiet)
        np.testing.assert_allclose(_flat(together.variables[2 * m + 1]["params"]), _flat(alone.variables[0]["params"]),
                                   rtol=1e-5, atol=1e-5)
        assert together.rows[2 * m + 1]["test_mse"] == pytest.approx(alone.rows[0]["test_mse"], rel=1e-5)
    assert together.rows[0]["test_mse"] != together.rows[2]["test_mse"]  # the members differ
    model, variables, loaded = load_model(tmp_path / "sweep", seed=1, member={name: values[1]})
    params = variables["params"]
    assert loaded == sweeps.member_config(config, {name: values[1]})
    np.testing.assert_array_equal(_flat(params), _flat(together.variables[3]["params"]))


def test_grid_and_bad_sweeps():
    config = Config(model="sparse", optimizer="adamw", weight_decay=1e-4)
    grid = sweeps.members(config, {"lr": [1e-3, 1e-2], "l1_weight": [0.0, 1e-3, 1e-2]})
    assert len(grid) == 6 and grid[1] == {"lr": 1e-3, "l1_weight": 1e-3}
    assert sweeps.member_config(config, grid[5]).model_kwargs["l1_weight"] == 1e-2
    for sweep, message in [({"epochs": [1, 2]}, "cannot sweep 'epochs' in one program"),
                           ({"lr": []}, "non-empty list of numbers"),
                           ({"lr": [1e-3, 1e-3]}, "repeats a value"),
                           ({"lr": [1e-3, -1.0]}, "lr must be > 0")]:
        with pytest.raises(AejaxError, match=message):
            sweeps.members(config, sweep)
    for values in ([0.1], [0.0]):
        with pytest.raises(AejaxError, match="optimizer adam takes no weight_decay"):
            sweeps.members(Config(), {"weight_decay": values})


def test_a_model_setting_used_in_python_cannot_be_swept_and_says_so(tmp_path, mnist_test_images):
    import tests.stateful_plugin  # noqa: F401 - registers conv_bn, whose dropout rate flax checks against 0

    config = Config(model="conv_bn", latent_dim=8, epochs=1, batch_size=50)
    with pytest.raises(AejaxError, match="cannot sweep rate: ConvBN uses its value in Python") as info:
        loop.run(config, tmp_path / "run", data=(mnist_test_images[:500], mnist_test_images[500:600]),
                 sweep={"rate": [0.1, 0.2]}, log=lambda line: None)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
