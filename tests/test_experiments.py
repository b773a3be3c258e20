"""The experiment scripts: the application scripts end to end on a small trained study (denoising,
rate-distortion, latent space), and the helpers the benchmark scripts share."""

import importlib
import json
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import REPO, run_cli, run_in_process, without


@pytest.mark.slow  # ~100 s here; CI runs it (`pytest -m slow`)
def test_denoising_rate_distortion_and_latent_scripts(tmp_path, prepared_data_dir, small_study):
    data = ("--data-dir", str(prepared_data_dir))
    study, result = small_study
    assert result.returncode == 0, result.stderr[-2000:]

    result = run_cli("experiments.denoising", "--out", str(tmp_path / "dn"), "--noise", "salt_pepper",
                     "--levels", "0.2", "--latent-dim", "16", "--epochs", "1", "--arms", "linear",
                     "--train-examples", "500", "--test-examples", "500", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "dn" / "denoising.json").read_text())["rows"]
    methods = {r["method"]: r for r in rows}
    assert set(methods) == {"noisy input", "median 3x3", "gaussian blur", "pca 16", "linear AE"}
    assert methods["median 3x3"]["psnr_db"] > methods["noisy input"]["psnr_db"]  # a median filter removes s&p
    assert (tmp_path / "dn" / "denoising.png").stat().st_size > 0
    bad = run_cli("experiments.denoising", "--out", str(tmp_path / "bad"), "--levels", "0.1,x", *data)
    assert bad.returncode == 2 and "--levels" in bad.stderr and "Traceback" not in bad.stderr

    result = run_cli("experiments.rate_distortion", "--study", str(study), "--out", str(tmp_path / "rd"),
                     "--test-examples", "500", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    curves = json.loads((tmp_path / "rd" / "rate_distortion.json").read_text())["curves"]
    assert {"linear d32", "conv d32", "pca d32", "png (lossless)", "jpeg"} <= set(curves)
    for name in ("linear d32", "jpeg"):  # more bits buy a better reconstruction
        points = sorted(curves[name], key=lambda p: p["bits_per_image"])
        assert np.all(np.diff([p["psnr_db"] for p in points]) > -0.05), name
    assert (tmp_path / "rd" / "rate_distortion.png").stat().st_size > 0
    written = (tmp_path / "rd" / "rate_distortion.json").read_bytes()
    again = run_cli("experiments.rate_distortion", "--study", str(study), "--out", str(tmp_path / "rd"),
                    "--test-examples", "500", *data)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "rd" / "rate_distortion.json").read_bytes() == written  # a finished result is kept
    wrong = run_cli("experiments.rate_distortion", "--study", str(study), "--arms", "linear_cos",
                    "--out", str(tmp_path / "rd2"), *data)
    assert wrong.returncode == 2 and "no run of arm(s) linear_cos" in wrong.stderr
    assert not (tmp_path / "rd2").exists()

    result = run_cli("experiments.latent_space", "--study", str(study), "--out", str(tmp_path / "lat"), *data)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "lat" / "latent_codes.png").stat().st_size > 0
    assert (tmp_path / "lat" / "latent_interpolation.png").stat().st_size > 0
    models = json.loads((tmp_path / "lat" / "latent.json").read_text())["models"]
    assert set(models) == {"pixels", "linear", "conv"}
    # Chance is 0.10. Raw pixels: 95.58% on the 10,000 test digits (deterministic); even these 1-epoch,
    # 500-image models keep about 81% (misaligned codes and labels would drop to chance).
    assert abs(models["pixels"]["nn_accuracy_code"] - 0.9558) < 1e-4
    for arm in ("linear", "conv"):
        assert models[arm]["nn_accuracy_code"] > 0.7 and models[arm]["nn_accuracy_2d"] > 0.15, models[arm]
        assert 0 < models[arm]["variance_in_2d"] <= 1
    bad = run_cli("experiments.latent_space", "--study", str(study), "--depth", "64", "--out", str(tmp_path / "l2"),
                  *data)
    assert bad.returncode == 2 and "no trained run at" in bad.stderr and not (tmp_path / "l2").exists()


@pytest.mark.slow  # ~35 s here; CI runs it (`pytest -m slow`)
def test_benchmark_and_seeds_vmap_scripts_write_their_figures(tmp_path, prepared_data_dir):
    """The timing scripts run end to end on a few steps (their numbers are measured by running them, not here)."""
    data = ("--data-dir", str(prepared_data_dir))
    out = tmp_path / "bench.json"
    result = run_cli("experiments.benchmark", "--out", str(out), "--workloads", "linear_d32_b25",
                     "--images", "250", "--reps", "1", "--no-torch", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    bench = json.loads(out.read_text())
    row = bench["workloads"]["linear_d32_b25"]
    assert set(row["images_per_second"]) == {"aejax_scan", "aejax_host_loop"} and bench["ratios"] == {}
    assert all(v > 0 for v in row["images_per_second"].values()) and bench["matmul_peak_gflops"] > 0
    matmuls = 5 * 2 * 784 * 32  # encoder and decoder forward, two kernel gradients, one input gradient
    assert matmuls < row["flops_per_image"] < 1.5 * matmuls  # plus bias, sigmoid, loss and Adam
    again = run_cli("experiments.benchmark", "--out", str(out), "--no-torch", *data)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    bad = run_cli("experiments.benchmark", "--workloads", "linear_d7", "--no-torch", *data)
    assert bad.returncode == 2 and "unknown workload(s) linear_d7" in bad.stderr

    out = tmp_path / "seeds.json"
    result = run_cli("experiments.seeds_vmap", "--out", str(out), "--ks", "1,2", "--train-examples", "500", *data)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.stat().st_size > 0
    sweep = run_cli("experiments.seeds_vmap", "--out", str(tmp_path / "sweep.json"), "--lrs", "1e-3,1e-2",
                    "--train-examples", "500", *data)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert json.loads((tmp_path / "sweep.json").read_text())["sweep"]["lrs"] == [1e-3, 1e-2]
    for flags in (("--ks", "1,0"), ("--train-examples", "70000")):
        bad = run_cli("experiments.seeds_vmap", "--out", str(tmp_path / "bad.json"), *flags, *data)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
        assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("script, flags", [
    ("experiments.profile_conv", ("--batch-size", "0")),
    ("experiments.benchmark", ("--reps", "-1")),
    ("experiments.denoising", ("--out", "{out}", "--test-examples", "0")),
    ("experiments.rate_distortion", ("--out", "{out}", "--test-examples", "x")),
])
def test_scripts_reject_a_count_below_one(tmp_path, script, flags, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [script, *(f.format(out=out) for f in flags)])
    code, _, stderr = run_in_process(capsys, lambda _: importlib.import_module(script).main())
    assert code == 2 and "must be a positive integer" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow  # ~60 s here; CI runs it (`pytest -m slow`)
def test_device_report_runs_on_cpu(tmp_path, prepared_data_dir):
    """The first-accelerator runbook runs end to end here, tiny, and writes every section."""
    out = tmp_path / "device.json"
    result = run_cli("experiments.device_report", "--out", str(out), "--workloads", "linear_d32_b25,conv_original_b25",
                     "--images", "100", "--reps", "1", "--epochs", "1", "--train-examples", "500", "--depths", "32",
                     "--ks", "1,2", "--data-dir", str(prepared_data_dir), env={"JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["workloads"]) == {f"linear_d32_b25_{t}" for t in ("float32", "bfloat16")} | {
        f"conv_original_b25_{t}_{impl}" for t in ("float32", "bfloat16") for impl in ("ops", "xla")}
    assert all(w["images_per_second"] > 0 for w in report["workloads"].values())
    assert report["linear_study"]["seconds"] > 0 and len(report["linear_study"]["test_mse"]) >= 2
    assert [r["k"] for r in report["seeds_vmap"]] == [1, 2] and report["environment"]["backend"] == "cpu"
    bad = run_cli("experiments.device_report", "--out", str(tmp_path / "bad.json"), "--workloads", "gpu_d1",
                  "--data-dir", str(prepared_data_dir))
    assert bad.returncode == 2 and "unknown workload(s) gpu_d1" in bad.stderr and not (tmp_path / "bad.json").exists()


def test_hlo_fingerprint_ignores_source_locations_and_sees_the_program():
    from experiments.hlo_fingerprint import strip_locations

    def compiled(fn) -> str:
        return strip_locations(jax.jit(fn).lower(jnp.ones((4, 8))).compile().as_text())

    double = lambda x: jnp.tanh(x) * 2  # noqa: E731
    double_elsewhere = (lambda x:  # noqa: E731
                        jnp.tanh(x) * 2)  # the same program from other source lines
    triple = lambda x: jnp.tanh(x) * 3  # noqa: E731
    assert "metadata" not in compiled(double) and "stack_frame_id" not in compiled(double)
    assert compiled(double) == compiled(double_elsewhere)
    assert compiled(double) != compiled(triple)


# The GPU probe, tiny, on this CPU, where tensorflow-datasets, array_record and tensorboardX cannot be imported
# (as on a machine without them): every stage runs, in its share of the budget, and writes its part of the JSON.
PROBE = without("tensorflow_datasets", "array_record", "tensorboardX") + """
import runpy, sys
sys.argv = ["gpu_probe", *sys.argv[1:]]
runpy.run_module("experiments.gpu_probe", run_name="__main__")
"""


@pytest.mark.slow  # about 2 minutes here
def test_gpu_probe_runs_tiny_without_tfds_or_tensorboardx(tmp_path):
    out = tmp_path / "probe.json"
    result = subprocess.run([sys.executable, "-c", PROBE, "--tiny", "--budget", "170", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert list(stages) == ["environment", "roofline", "correctness", "throughput", "study", "determinism", "bf16"]
    assert not [name for name, stage in stages.items() if stage.get("errors") or isinstance(stage.get("skipped"), str)]
    assert report["elapsed_seconds"] <= 170 + 30  # a measurement in flight when a share ends is finished
    assert set(stages["roofline"]["matmul_tflops"]) == {"bfloat16", "float32_default", "float32_highest"}
    correctness = stages["correctness"]
    assert correctness["rows"] and not correctness["failed"]
    assert all(r["max_param_difference"] <= correctness["tolerance"] for r in correctness["rows"]
               if r["precision"] == "highest")
    assert stages["throughput"]["rows"] and all(r["images_per_second"] > 0 for r in stages["throughput"]["rows"])
    assert stages["study"]["rows"] >= 3 and len(stages["study"]["test_mse_deviation"]) >= 3  # seeds 0-2, + PCA
    assert all(row["identical"] for row in stages["determinism"]["rows"])
    assert {(r["model"], r["dtype"]) for r in stages["bf16"]["rows"]} >= {("linear", "float32"), ("linear", "bfloat16")}
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1].startswith("probe") and "correctness failures: none" in lines[-1]
    bad = subprocess.run([sys.executable, "-m", "experiments.gpu_probe", "--budget", "0", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]


@pytest.mark.slow  # a minute here
def test_gpu_probe_keeps_its_budget_on_a_cpu(tmp_path, prepared_data_dir):
    """Each measurement is sized from a calibration on the device, so a 60 s budget ends near 60 s on this slow
    CPU (a full-size measurement here would take minutes), with every stage written."""
    out = tmp_path / "probe.json"
    t0 = time.perf_counter()
    result = run_cli("experiments.gpu_probe", "--budget", "60", "--out", str(out), "--data-dir", str(prepared_data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.perf_counter() - t0 <= 90
    stages = json.loads(out.read_text())["stages"]
    assert list(stages) == ["environment", "roofline", "correctness", "throughput", "study", "determinism", "bf16"]
    assert all(not stage.get("errors") for stage in stages.values())
    assert stages["roofline"]["matmul_tflops"] and stages["correctness"]["rows"] and stages["throughput"]["rows"]
    assert stages["study"]["rows"] and stages["determinism"]["rows"] and stages["bf16"]["rows"]


@pytest.mark.slow  # three fresh processes per repeat, ~25 s here
def test_fixed_cost_measures_a_warm_cache_compiling_less(tmp_path):
    out = tmp_path / "fixed.json"
    # At XLA's default flags, which the benchmark measures: the suite's compile-for-speed flags (conftest) leave
    # so little to compile that the cache's saving is lost in the noise.
    result = run_cli("experiments.fixed_cost", "--out", str(out), "--repeats", "1", env={"XLA_FLAGS": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    cases = json.loads(out.read_text())["cases"]
    cold, warm = cases["cold"]["median_seconds"], cases["warm_cache"]["median_seconds"]
    assert warm["compile"] < cold["compile"] / 3 and warm["cache_retrieval"] > 0
    assert cases["warm_cache_checkpoint_every_5"]["median_seconds"]["checkpoint"] < warm["checkpoint"]


@pytest.mark.slow
def test_codec_compare_writes_whole_file_curves_goals_and_photographs(tmp_path, monkeypatch, prepared_data_dir):
    """The comparison on a few images (1 epoch, 2 lambdas): every codec's curve on whole files, the lossless
    formats, BD-rates of the variable-rate model against the per-lambda ones (also at its own code size), the
    goals, and whole photographs."""
    from experiments import codec_compare
    from tests.test_codec import images

    tiny = {"train": 256, "test": 16, "coded": 12, "epochs": 1, "lmbdas": (0.01, 0.1), "peers": (),
            "variable": {"lmbdas": (0.01, 0.1), "epochs": 1, "latent": 16}, "photographs": False}
    monkeypatch.setattr(codec_compare, "SETTINGS", {"mnist": tiny})
    monkeypatch.setattr(codec_compare, "QUALITIES", (0, 50))
    monkeypatch.setattr(codec_compare, "VARIABLE_QUALITIES", (0, 50, 100))
    monkeypatch.setattr(codec_compare.image_sets, "TEST_PHOTOS", ("chelsea",))
    monkeypatch.setattr(codec_compare.image_sets, "photo", lambda name: images(1, (20, 36, 1), 0)[0])
    monkeypatch.setattr(sys, "argv", ["codec_compare", "--out", str(tmp_path / "out"), "--runs",
                                      str(tmp_path / "runs"), "--datasets", "mnist"])
    codec_compare.main()
    report = json.loads((tmp_path / "out" / "codec.json").read_text())
    part = report["datasets"]["mnist"]
    assert {"aejax rd_factorized", "aejax rd_hyperprior", "aejax rd_variable", "jpeg", "webp", "jpeg xl",
            "avif"} <= set(part["curves"])
    assert [p["quality"] for p in part["curves"]["aejax rd_variable"]] == [0, 50, 100]
    assert all(p["decoded_exactly"] and p["bits_per_image"] > p["payload_bits_per_image"]
               for p in part["curves"]["aejax rd_variable"])
    assert set(part["lossless_bits_per_image"]) == {"png", "webp", "jxl"}
    assert {"aejax rd_variable vs aejax rd_factorized", "aejax rd_variable vs aejax rd_factorized (M=16)"} <= set(
        part["summary"]["bd_rate_percent"])  # its own code size: per-lambda models of it too
    variable = json.loads((tmp_path / "runs" / "mnist_rd_variable" / "config.json").read_text())["config"]
    assert variable["latent_dim"] == 16
    assert set(part["goals"]["ratios"]) == {str(t) for t in range(20, 33)} and part["goals"]["met"] in (True, False)
    assert part["training"]["aejax rd_variable"]["models"] == 1
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Whole-file bytes" in table and "Goals (aejax rd_variable" in table
    codecs = [({"lmbda": 0.1}, codec_compare.Codec.from_run(tmp_path / "runs" / "mnist_rd_factorized", member=1),
               None)]
    photos = codec_compare.photograph_curves({"aejax rd_factorized": codecs})
    assert photos["photographs"] == {"chelsea": [20, 36, 1]}  # any size: 20x36 from a 28x28 model
    assert photos["curves"]["aejax rd_factorized"][0]["bits_per_pixel"] > 0


def test_codec_peers_copied_from_a_report_are_named_once_for_the_images_they_coded():
    """CompressAI's points copied from an earlier report (which coded every test image) say so once, however many
    reports they passed through; a report of other settings is refused."""
    from experiments import codec_compare as cc

    settings = {"epochs": 3, "lmbdas": (0.01, 0.1)}
    part = {"settings": {"epochs": 3, "lmbdas": [0.01, 0.1]}, "speed": {"compressai_x": 1.0, "aejax": 2.0},
            "curves": {"compressai factorized (all 10,000 test images)": [{"psnr_db": 20.0}], "webp": []}}
    report = {"architecture": dict(cc.ARCHITECTURE), "datasets": {"mnist": part}}
    curves, speed = cc.peers_from(report, "r.json", "mnist", settings, 1000, 10000)
    assert list(curves) == ["compressai factorized (all 10,000 test images)"] and speed == {"compressai_x": 1.0}
    assert list(cc.peers_from(report, "r.json", "mnist", settings, 10000, 10000)[0]) == ["compressai factorized"]
    with pytest.raises(cc.AejaxError, match="other settings"):
        cc.peers_from(report, "r.json", "mnist", {**settings, "epochs": 4}, 1000, 10000)


def test_codec_goals_take_each_codecs_smallest_file_reaching_the_psnr():
    from experiments.codec_compare import bits_to_reach, goals

    webp = [{"bits_per_image": 800.0, "psnr_db": 22.7}, {"bits_per_image": 1000.0, "psnr_db": 28.0},
            {"bits_per_image": 1200.0, "psnr_db": 33.0}]
    jxl = [{"bits_per_image": 1000.0, "psnr_db": 19.0}, {"bits_per_image": 1600.0, "psnr_db": 32.5}]
    ours = [{"bits_per_image": 300.0, "psnr_db": 20.0}, {"bits_per_image": 500.0, "psnr_db": 28.5},
            {"bits_per_image": 700.0, "psnr_db": 31.0}]
    assert bits_to_reach(webp, 20.0) == 800.0 and bits_to_reach(webp, 28.0) == 1000.0
    assert bits_to_reach(ours, 31.5) is None
    g = goals({"ours": ours, "webp": webp, "jpeg xl": jxl}, "ours")
    assert g["ratios"]["20"] == {"webp": 300 / 800, "jpeg xl": 300 / 1600}
    assert g["ratios"]["29"] == {"webp": 700 / 1200, "jpeg xl": 700 / 1600}
    assert g["ratios"]["32"] == {"webp": None, "jpeg xl": None} and not g["met"]
    ours.append({"bits_per_image": 550.0, "psnr_db": 33.0})  # reaches 32 dB, but 500 B > half of 800 at 21 dB
    assert not goals({"ours": ours, "webp": webp, "jpeg xl": jxl}, "ours")["met"]
    cheap = [{"bits_per_image": 100.0, "psnr_db": 33.0}]
    assert goals({"ours": cheap, "webp": webp, "jpeg xl": jxl}, "ours")["met"]


def test_codec_photo_crops_and_photograph_goals():
    from experiments.codec_compare import PHOTO_GOALS, crops, goals

    image = np.arange(6 * 8 * 2).reshape(6, 8, 2)
    cut = crops(image, 4, 2)  # rows 0, 2 and columns 0, 2, 4
    assert cut.shape == (6, 4, 4, 2)
    np.testing.assert_array_equal(cut[4], image[2:6, 2:6])
    jpeg = [{"bits_per_pixel": 0.2, "psnr_db": 26.0}, {"bits_per_pixel": 1.0, "psnr_db": 33.0}]
    webp = [{"bits_per_pixel": 0.1, "psnr_db": 27.0}, {"bits_per_pixel": 0.5, "psnr_db": 33.0}]
    ours = [{"bits_per_pixel": 0.08, "psnr_db": 28.0}, {"bits_per_pixel": 0.4, "psnr_db": 32.5}]
    g = goals({"ours": ours, "jpeg": jpeg, "webp": webp}, "ours", "bits_per_pixel", PHOTO_GOALS, 24, 32)
    assert list(g["ratios"]) == [str(t) for t in range(24, 33)] and g["met"]
    assert g["ratios"]["30"] == {"jpeg": 0.4, "webp": 0.8}
    ours[1]["bits_per_pixel"] = 0.5  # as many bits as WebP at 29-32 dB: not fewer
    assert not goals({"ours": ours, "jpeg": jpeg, "webp": webp}, "ours", "bits_per_pixel", PHOTO_GOALS, 24, 32)["met"]
