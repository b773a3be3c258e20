"""Schedules by name: an optax schedule with its own arguments, a registered one, an lr sweep over either, and
one-line errors for what cannot be built."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aejax
from aejax import models
from aejax.config import Config
from aejax.errors import AejaxError
from aejax.training import step as train
from aejax.training import sweeps


def test_an_optax_schedule_by_name_is_what_the_optimizer_follows():
    config = models.resolve(Config(lr=2e-3, schedule="exponential_decay", batch_size=100, epochs=3,
                                   schedule_kwargs={"transition_steps": 10, "decay_rate": 0.5}))
    schedule = train.make_schedule(config, 1000)
    expected = optax.exponential_decay(2e-3, 10, 0.5)
    for count in (0, 5, 10, 29):
        assert float(schedule(count)) == pytest.approx(float(expected(count)), rel=1e-6)
    scaled = train.make_schedule(config, 1000, jnp.float32(4e-3))  # an lr sweep member: the same shape, scaled
    assert float(scaled(10)) == pytest.approx(2 * float(expected(10)), rel=1e-6)


def test_a_registered_schedule_gets_the_rate_and_the_runs_steps(tmp_path, mnist_test_images):
    aejax.register_schedule("linear_to_zero", lambda learning_rate, total_steps, floor=0.0: optax.linear_schedule(
        learning_rate, floor, total_steps), replace=True)
    config = models.resolve(Config(schedule="linear_to_zero", schedule_kwargs={"floor": 1e-5}, batch_size=100,
                                   epochs=2, lr=1e-3))
    schedule = train.make_schedule(config, 1000)  # 2 epochs x 10 steps
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(20)) == pytest.approx(1e-5)
    result = aejax.run(config.replace(latent_dim=8), tmp_path / "run", data=(mnist_test_images[:1000],
                       mnist_test_images[1000:1200]), sweep={"lr": [1e-3, 2e-3]}, log=lambda line: None)
    assert len(result.rows) == 2 and all(np.isfinite(r["test_mse"]) for r in result.rows)
    assert sweeps.members(config, {"lr": [1e-3, 2e-3]}) == [{"lr": 1e-3}, {"lr": 2e-3}]


@pytest.mark.parametrize("schedule, kwargs, message", [
    ("nosuch", {}, "unknown schedule 'nosuch'"),
    ("exponential_decay", {"decay_rate": 0.5}, "schedule exponential_decay needs transition_steps"),
    ("exponential_decay", {"transition_steps": 10, "decay_rate": 0.5, "speed": 2}, "takes no argument 'speed'"),
    ("exponential_decay", {"init_value": 1.0, "transition_steps": 10, "decay_rate": 0.5},
     r"schedule_kwargs init_value: the run sets it \(lr\)"),
    ("constant", {"decay_rate": 0.5}, "schedule_kwargs are the arguments of a named schedule; constant takes none"),
    ("adam", {}, "unknown schedule 'adam'"),
])
def test_a_schedule_that_cannot_be_built_is_one_line(schedule, kwargs, message):
    with pytest.raises(AejaxError, match=message) as info:
        models.resolve(Config(schedule=schedule, schedule_kwargs=kwargs))
    assert "\n" not in str(info.value)
