"""Data parallel training on 8 simulated CPU devices (a subprocess: the device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from aejax import train
from tests.conftest import REPO

SCRIPT = r"""
import json, sys
import jax, numpy as np
from aejax import data, train
from aejax.config import Config
assert jax.device_count() == 8, jax.devices()
images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
out = {}
for name, parallel in (("one", False), ("eight", True)):
    config = Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3, data_parallel=parallel)
    rows = train.run(config, sys.argv[1] + "/" + name, data=(images, images[:1000]), log=lambda *_: None)
    history = [json.loads(l) for l in open(sys.argv[1] + "/" + name + "/metrics.jsonl")]
    out[name] = {"train_loss": [h["train_loss"][0] for h in history], "test_mse": rows[0]["test_mse"],
                 "images_per_second": [h["images_per_second"] for h in history]}
model, params, _ = train.load_model(sys.argv[1] + "/eight")
out["sharding"] = str(jax.tree_util.tree_leaves(params)[0].sharding)
print(json.dumps(out))
"""


def test_eight_devices_match_one_device_and_checkpoints_restore_on_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # Same global batch, same data order: the loss curves agree up to float reassociation in the all-reduce.
    np.testing.assert_allclose(out["eight"]["train_loss"], out["one"]["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(out["eight"]["test_mse"], out["one"]["test_mse"], rtol=1e-3)
    # The checkpoint written by 8 devices restores here, on 1 device (orbax reshards).
    assert jax.device_count() == 1
    model, params, config = train.load_model(tmp_path / "eight")
    assert config.data_parallel
    x = np.zeros((1, 28, 28, 1), np.float32)
    assert model.apply({"params": params}, x).shape == (1, 28, 28, 1)
