import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import checkpoint, train
from aejax.config import Config
from aejax.errors import AejaxError


def _state(config: Config):
    trainer = train.make_trainer(config)
    return train.compile_program(trainer).init(train.seed_keys(0)[0][None])


def test_roundtrip_keeps_the_last_few(tmp_path):
    state = _state(Config(latent_dim=8))
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=2)
    for epoch in (1, 2, 3):
        checkpoint.save(mngr, epoch, state, {"epoch": epoch})
    assert list(mngr.all_steps()) == [2, 3]
    restored, meta = checkpoint.restore(mngr, jax.tree_util.tree_map(jnp.zeros_like, state))
    assert meta == {"epoch": 3}
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_restore_into_another_architecture_names_the_shapes(tmp_path):
    mngr = checkpoint.manager(tmp_path / "ckpt", max_to_keep=2)
    checkpoint.save(mngr, 1, _state(Config(latent_dim=32)), {"epoch": 1})
    with pytest.raises(AejaxError, match=r"params/encoder_layers_0/kernel is \(1, 784, 32\) in the checkpoint "
                                         r"but \(1, 784, 64\) in this model"):
        checkpoint.restore(mngr, _state(Config(latent_dim=64)))
    with pytest.raises(AejaxError, match="params/conv1/bias missing from checkpoint"):
        checkpoint.restore(mngr, _state(Config(model="conv", latent_dim=32)))


def test_restore_without_checkpoint(tmp_path):
    with pytest.raises(AejaxError, match="no checkpoint found"):
        checkpoint.restore(checkpoint.manager(tmp_path / "empty", 2), _state(Config(latent_dim=8)))
