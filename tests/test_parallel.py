"""Data parallel training on 8 simulated CPU devices (a subprocess: the device count is fixed when JAX starts),
and on 2 processes of 4 devices each (multi-host on one machine)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from aejax.errors import AejaxError
from aejax.training import loop
from aejax.training.restore import load_model
from tests.helpers import REPO

SCRIPT = r"""
import json, sys
import jax, numpy as np
from aejax import data
from aejax.training import loop
from aejax.training import parallel
from aejax.training import restore
from aejax.config import Config
assert jax.device_count() == 8, jax.devices()
images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
out = {}
asked = []
rows = parallel.shard_rows(lambda r: asked.append(r) or images[r.start:r.stop], 2000, parallel.make_mesh(40))
out["shard_rows"] = {"asked": [[r.start, r.stop] for r in asked], "equal": bool((np.asarray(rows) == images).all()),
                     "per_device": sorted(s.data.shape[0] for s in rows.addressable_shards)}
for name, dp, shard in (("one", False, False), ("eight", True, False), ("eight_sharded", True, True)):
    config = Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3, data_parallel=dp, shard_data=shard)
    rows = loop.run(config, sys.argv[1] + "/" + name, data=(images, images[:1000]), log=lambda *_: None).rows
    history = [json.loads(l) for l in open(sys.argv[1] + "/" + name + "/metrics.jsonl")]
    out[name] = {"train_loss": [h["train_loss"][0] for h in history], "test_mse": rows[0]["test_mse"],
                 "images_per_second": [h["images_per_second"] for h in history]}
model, variables, _ = restore.load_model(sys.argv[1] + "/eight")
params = variables["params"]
out["sharding"] = str(jax.tree_util.tree_leaves(params)[0].sharding)
print(json.dumps(out))
"""


@pytest.mark.slow  # a process with 8 forced host devices, ~18 s here; CI runs it (`pytest -m slow`)
def test_eight_devices_match_one_device_and_checkpoints_restore_on_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO),
           "JAX_PLATFORMS": "cpu"}  # forced host devices exist only on the CPU backend
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # Same global batch, same data order: the loss curves agree up to float reassociation in the all-reduce.
    np.testing.assert_allclose(out["eight"]["train_loss"], out["one"]["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(out["eight"]["test_mse"], out["one"]["test_mse"], rtol=1e-3)
    # Training images split by rows over the 8 devices (shard_data): 250 rows each, the same curve.
    assert out["shard_rows"] == {"asked": [[0, 2000]], "equal": True, "per_device": [250] * 8}
    np.testing.assert_allclose(out["eight_sharded"]["train_loss"], out["one"]["train_loss"], rtol=1e-4)
    # The checkpoint written by 8 devices restores here, on 1 device (orbax reshards).
    assert jax.device_count() == 1
    model, variables, config = load_model(tmp_path / "eight")
    params = variables["params"]
    assert config.data_parallel
    x = np.zeros((1, 28, 28, 1), np.float32)
    assert model.apply({"params": params}, x).shape == (1, 28, 28, 1)


WORKER = r"""
import json, sys
import jax
from aejax import data
from aejax.training import loop
from aejax.training import parallel
from aejax.config import Config
assert parallel.maybe_initialize_distributed()
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
asked, shard_rows = [], parallel.shard_rows
parallel.shard_rows = lambda load, n, mesh: shard_rows(lambda r: asked.append([r.start, r.stop]) or load(r), n, mesh)
config = Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3, data_parallel=True, shard_data=True)
loop.run(config, sys.argv[1], data=(images, images[:1000]), log=lambda *_: None)
print(json.dumps({"process": jax.process_index(), "asked": asked}))
"""


def two_processes(script: str, out) -> list[dict]:
    """`script` run by 2 processes x 4 CPU devices (gloo collectives); each one's last line of JSON."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                                   "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
                                   "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
             for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    return sorted((json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs), key=lambda r: r["process"])


@pytest.mark.slow  # two processes with 4 devices each, ~30 s here; CI runs it (`pytest -m slow`)
def test_two_processes_each_load_their_rows_and_match_one_device(tmp_path):
    """Multi-host on one machine: 2 processes x 4 CPU devices (gloo collectives), `shard_data` on."""
    asked = [report["asked"] for report in two_processes(WORKER, tmp_path / "two")]
    assert asked == [[[0, 1000]], [[1000, 2000]]]  # each process loaded only its own half of the rows
    from aejax import data
    from aejax.config import Config
    images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
    loop.run(Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3), tmp_path / "one",
              data=(images, images[:1000]), log=lambda *_: None)
    curve = lambda d: [json.loads(line)["train_loss"][0]  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(curve(tmp_path / "two"), curve(tmp_path / "one"), rtol=1e-4)
    model, variables, config = load_model(tmp_path / "two")  # the 2-process checkpoint, on 1 device
    assert config.shard_data and model.apply(variables, np.zeros((1, 28, 28, 1))).shape == (1, 28, 28, 1)


STREAM_WORKER = r"""
import json, sys
import jax
import numpy as np
from aejax import data
from aejax.training import loop
from aejax.training import parallel
from aejax.config import Config
assert parallel.maybe_initialize_distributed()
images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
taken = []
def take(indices):
    taken.extend(np.asarray(indices).tolist())
    return images[np.asarray(indices)]
source = data.Source(2000, lambda r: images[r.start:r.stop], images[:1000], take)
config = Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3, data_parallel=True, data_placement="stream")
loop.run(config, sys.argv[1], data=source, log=lambda *_: None)
print(json.dumps({"process": jax.process_index(), "taken": taken}))
"""


@pytest.mark.slow  # two processes with 4 devices each, ~30 s here; CI runs it (`pytest -m slow`)
def test_two_processes_stream_their_own_part_of_each_batch_and_match_one_device(tmp_path):
    """A streamed training set on 2 processes x 4 devices: each process reads only the images of its devices'
    half of every batch, and the run trains as one device-resident process does."""
    reports = two_processes(STREAM_WORKER, tmp_path / "two")
    from aejax import data
    from aejax.config import Config
    images = data.read_idx(data.VENDORED_DIR / "t10k-images-idx3-ubyte.gz", None)[:2000]
    taken = [np.asarray(r["taken"]) for r in reports]
    assert [len(t) for t in taken] == [2000, 2000]  # 2 epochs x 50 steps x 20 images: half of every batch each
    assert sorted(np.concatenate(taken).tolist()) == sorted(list(range(2000)) * 2)  # together, each image per epoch
    loop.run(Config(latent_dim=16, epochs=2, batch_size=40, lr=2e-3), tmp_path / "one",
             data=(images, images[:1000]), log=lambda *_: None)
    curve = lambda d: [json.loads(line)["train_loss"][0]  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(curve(tmp_path / "two"), curve(tmp_path / "one"), rtol=1e-4)


def test_a_batch_the_devices_do_not_divide_names_the_nearest_that_do(monkeypatch):
    from aejax.training import parallel

    monkeypatch.setattr(parallel.jax, "devices", lambda: [None] * 8)
    with pytest.raises(AejaxError, match="batch_size 25 is not divisible by the 8 devices of data-parallel "
                                         "training; the nearest batch sizes that are: 24 or 32"):
        parallel.make_mesh(25)
    with pytest.raises(AejaxError, match="the nearest batch sizes that are: 8$"):
        parallel.make_mesh(5)
    assert parallel.any_process(True) and not parallel.any_process(False)  # one process: its own flag
