"""The command line as a user meets it: one-line errors with status 2, the files a run writes, and that an
existing run is never overwritten by accident."""

import dataclasses
import json
import os

import pytest

from aejax import cli
from aejax.config import Config
from tests.helpers import run_cli, run_in_process


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`python -m aejax.train ARGV`, in this process."""
    return run_in_process(capsys, cli.main, *argv)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--latent-dim", "0"], "latent_dim must be in 1..784"),
    (["--latent-dim", "785"], "latent_dim must be in 1..784"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--batch-size", "0"], "batch_size must be in 1..60000"),
    (["--batch-size", "60001"], "batch_size must be in 1..60000"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--model", "mlp"], "unknown model 'mlp'"),
    (["--model-kwargs", '{"l1_weight": 0.1}'], "model linear takes no model_kwargs l1_weight"),
    (["--model-kwargs", "l1=0.1"], "argument --model-kwargs: must be a JSON object"),
    (["--sweep", "epochs=1,2"], "cannot sweep 'epochs' in one program"),
    (["--sweep", "lr"], "--sweep takes NAME=V1,V2,..., got 'lr'"),
    (["--plugin", "no_such_plugin_module"], "--plugin no_such_plugin_module: cannot import it"),
    (["--latent-dim", "3.5"], "argument --latent-dim: invalid int value: '3.5'"),
    (["--loss", "l1"], "unknown loss 'l1'"),
    (["--optimizer", "nosuch"], "unknown optimizer 'nosuch'"),
    (["--warmup-epochs", "1"], "warmup_epochs=1.0 is read only with schedule warmup_cosine"),
    (["--weight-decay", "0.01"], "optimizer adam takes no weight_decay"),
    (["--model", "conv_original", "--latent-dim", "32"], "latent_dim must be 392, got 32"),
    (["--hidden", "a,b"], "--hidden must be comma-separated integers"),
    (["--seed", "5", "--seeds", "0,1"], "config.seed=5 is not among seeds=[0, 1]"),
])
def test_invalid_values_exit_2_with_one_line(tmp_path, capsys, args, message):
    # In this process, through the same `main` as `python -m aejax.train` (the process itself: test below).
    out = tmp_path / "out"
    code, _, stderr = run_main(capsys, "--out", str(out), *args)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_an_invalid_value_ends_the_process_with_status_2_and_one_line(tmp_path):
    for args, message in ((["--latent-dim", "0"], "latent_dim must be in 1..784"),
                          (["--latent-dim", "x"], "argument --latent-dim")):
        result = run_cli("aejax.train", "--out", str(tmp_path / "out"), *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr and not (tmp_path / "out").exists()


def test_every_config_field_has_a_described_flag_that_sets_it(capsys):
    code, stdout, _ = run_main(capsys, "--help")
    assert code == 0
    for field in dataclasses.fields(Config):
        assert f"{cli.flag(field.name)} " in stdout, field.name
        assert field.metadata["help"] and "\n" not in field.metadata["help"], field.name
    # Every flag reaches its field: set each to a valid non-default value at once.
    args = cli.parse_args(["--out", "x", "--model", "conv", "--latent-dim", "48", "--conv-features", "16,8",
                           "--epochs", "3", "--batch-size", "50", "--lr", "0.002", "--schedule", "warmup_cosine",
                           "--warmup-epochs", "0.5", "--optimizer", "adamw", "--weight-decay", "0.01",
                           "--optimizer-kwargs", '{"b1": 0.8}', "--dataset", "folder:faces", "--image-shape", "25,25,1",
                           "--channels", "1", "--image-size", "25x25", "--image-fit", "crop",
                           "--loss", "bce", "--dtype", "bfloat16", "--seed", "7", "--train-examples", "1000",
                           "--keep-checkpoints", "2", "--checkpoint-every", "2", "--data-parallel", "--shard-data",
                           "--noise", "mask", "--noise-level", "0.2", "--conv-impl", "xla",
                           "--data-placement", "stream", "--validation-examples", "100", "--early-stopping", "2",
                           "--select", "best", "--init-from", "runs/earlier", "--accumulate", "2", "--log-every", "10",
                           "--matmul-precision",
                           "highest"])
    config, default = cli.config_from_args(args), Config()
    changed = {f.name for f in dataclasses.fields(Config) if getattr(config, f.name) != getattr(default, f.name)}
    assert changed == {f.name for f in dataclasses.fields(Config)} - {"schedule_kwargs"}  # not read by warmup_cosine
    named = cli.config_from_args(cli.parse_args(["--out", "x", "--schedule", "exponential_decay", "--schedule-kwargs",
                                                 '{"transition_steps": 10, "decay_rate": 0.5}']))
    assert named.schedule_kwargs == {"transition_steps": 10, "decay_rate": 0.5}
    # --conv-features, --conv-impl and --hidden set the model's model_kwargs entries
    assert config.model_kwargs == {"features": [16, 8], "impl": "xla"}
    kwargs = cli.parse_args(["--out", "x", "--model", "sparse", "--model-kwargs", '{"l1_weight": 0.5}'])
    assert cli.config_from_args(kwargs).model_kwargs["l1_weight"] == 0.5
    assert cli.config_from_args(cli.parse_args(["--out", "x", "--hidden", "512,64"])).model_kwargs == {
        "activation": "relu", "hidden": [512, 64]}
    assert cli.config_from_args(cli.parse_args(["--out", "x", "--model", "conv_original"])).latent_dim == 392


def test_lr_1000_warns_that_nothing_was_learned(tmp_path, capsys, synthetic_data_dir):
    code, stdout, stderr = run_main(capsys, "--lr", "1000", "--epochs", "1", "--train-examples", "1000",
                                 "--batch-size", "50", "--data-dir", str(synthetic_data_dir), "--out",
                                 str(tmp_path / "run"))
    assert code == 0, stderr
    warnings = [line for line in stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "learned nothing" in warnings[0] and "mean image" in warnings[0]


def test_train_cli_writes_a_run_and_protects_it(tmp_path, capsys, synthetic_data_dir):
    out = tmp_path / "run"
    common = ["--data-dir", str(synthetic_data_dir), "--out", str(out), "--batch-size", "50",
              "--train-examples", "1000"]
    code, stdout, stderr = run_main(capsys, "--model", "linear", "--latent-dim", "16", "--epochs", "2", *common)
    assert code == 0, stderr
    assert "epoch 2/2" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results[0]["model"] == "linear" and results[0]["latent_dim"] == 16 and results[0]["epochs"] == 2
    before = _files(out)

    code, _, stderr = run_main(capsys, "--model", "linear", "--latent-dim", "32", "--epochs", "2", *common)
    assert code == 2 and "holds a run of a different config" in stderr
    code, _, stderr = run_main(capsys, "--model", "linear", "--latent-dim", "16", "--epochs", "2", *common)
    assert code == 2 and "already holds a run of this config" in stderr
    assert _files(out) == before  # byte-identical

    code, stdout, stderr = run_main(capsys, "--model", "linear", "--latent-dim", "16", "--epochs", "2", "--resume",
                                 *common)
    assert code == 0, stderr
    assert "resumed" in stdout and "epoch 1/2" not in stdout
    assert json.loads((out / "results.json").read_text())[0]["test_mse"] == results[0]["test_mse"]


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_deterministic_sets_xla_flags_before_the_backend_and_picks_the_ops_convolutions(tmp_path, synthetic_data_dir):
    """--deterministic in a fresh process: XLA_FLAGS carry the GPU determinism flags (recorded in config.json),
    conv_impl auto becomes ops, and two runs give the same parameters bit for bit."""
    common = ["--model", "conv", "--latent-dim", "8", "--epochs", "1", "--train-examples", "100", "--batch-size",
              "50", "--data-dir", str(synthetic_data_dir), "--deterministic"]
    for name in ("a", "b"):
        result = run_cli("aejax.train", *common, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["config"]["model_kwargs"]["impl"] == "ops"
    assert all(flag in saved["environment"]["xla_flags"].split() for flag in cli.DETERMINISTIC_XLA_FLAGS)
    rows = [json.loads((tmp_path / name / "results.json").read_text())[0] for name in ("a", "b")]
    assert rows[0]["test_mse"] == rows[1]["test_mse"]


def test_deterministic_refuses_xla_convolutions(tmp_path, capsys, synthetic_data_dir):
    data = ["--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "run"), "--deterministic"]
    code, _, stderr = run_main(capsys, "--model", "conv", "--conv-impl", "xla", *data)
    assert code == 2 and "select-and-scatter" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # compiles at XLA's default optimisation in a fresh process, ~18 s here; CI runs it (`-m slow`)
def test_a_run_at_xlas_default_flags_trains_as_the_suite_compiles_it(tmp_path, mnist_test_images):
    """The suite compiles for speed of compiling (conftest); users compile at XLA's defaults. One run in a process
    at those trains and scores as this process's compilation of the same programs does (same HLO, other machine
    code: equal to float32 rounding)."""
    import subprocess
    import sys

    from aejax.training import loop
    from tests.helpers import REPO

    config = Config(model="conv_strided", latent_dim=16, epochs=2, batch_size=10, lr=2e-3)
    data = (mnist_test_images[:1500], mnist_test_images[1500:])
    script = ("import json, sys; import aejax; from aejax import data\n"
              "path = data.VENDORED_DIR / 't10k-images-idx3-ubyte.gz'\n"
              "images = data.read_idx(path, data.PINNED_SHA256[path.name])[:2000]\n"
              "config = aejax.Config.from_dict(json.loads(sys.argv[2]))\n"
              "result = aejax.run(config, sys.argv[1], data=(images[:1500], images[1500:]), log=lambda _: None)\n"
              "print(json.dumps(result.rows[0]))\n")
    users = subprocess.run([sys.executable, "-c", script, str(tmp_path / "default"), config.to_json()], cwd=REPO,
                           env={**os.environ, "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")},
                           capture_output=True, text=True, timeout=300)
    assert users.returncode == 0, users.stderr[-2000:]
    saved = json.loads((tmp_path / "default" / "config.json").read_text())
    assert "--xla_backend_optimization_level" not in (saved["environment"]["xla_flags"] or "")
    row = json.loads(users.stdout.strip().splitlines()[-1])
    suites = loop.run(config, tmp_path / "suite", data=data, log=lambda _: None).rows[0]
    assert row["test_mse"] < row["mean_image_test_mse"]
    assert row["test_mse"] == pytest.approx(suites["test_mse"], rel=1e-4)


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_a_compile_cache_is_filled_then_used_and_changes_no_result(tmp_path, synthetic_data_dir):
    common = ["--epochs", "2", "--train-examples", "100", "--batch-size", "50", "--data-dir", str(synthetic_data_dir),
              "--compile-cache", str(tmp_path / "cache")]
    for name in ("first", "second"):
        result = run_cli("aejax.train", *common, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        if name == "first":
            filled = sorted(p.name for p in (tmp_path / "cache").iterdir())
            assert filled
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == filled  # the second run added no program
    rows = [json.loads((tmp_path / name / "results.json").read_text())[0] for name in ("first", "second")]
    assert rows[0]["test_mse"] == rows[1]["test_mse"]


EARLY_SIGNAL = r"""
import os, signal, sys, threading
threading.Timer(float(sys.argv[1]), lambda: os.kill(os.getpid(), signal.SIGINT)).start()
sys.argv = ["aejax.train", "--out", sys.argv[2], "--epochs", "1", "--train-examples", "1000"]
from aejax.train import main
main()
"""


@pytest.mark.parametrize("after", [0.3, 2.0])  # during the imports, or while the data is read and the run starts
def test_a_signal_before_the_first_epoch_is_one_line_not_a_traceback(tmp_path, after):
    import subprocess
    import sys

    from tests.helpers import REPO

    result = subprocess.run([sys.executable, "-c", EARLY_SIGNAL, str(after), str(tmp_path / "run")], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("stopped by SIGINT with no epoch in flight")


def test_a_second_signal_in_a_run_goes_to_the_handler_that_was_there_before():
    import signal

    from aejax.training.signals import stop_requests

    class Stop(Exception):
        pass

    def before(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGTERM, before)
    try:
        with stop_requests() as received:
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == [signal.SIGTERM]
            with pytest.raises(Stop):
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

