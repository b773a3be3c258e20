"""The documents: every relative link and repository path they name exists, CI runs the README's test command,
and the README's and docs/library.md's Python blocks run as written."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ROOTS = ("aejax/", "experiments/", "tests/", "docs/", "benchmarks/", "data/", ".ci/")


def python_blocks(path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


def test_every_link_and_named_path_exists():
    missing = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):  # [text](target) and ![alt](target)
            if "://" not in target and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: link {target}")
        for path in re.findall(r"`([A-Za-z0-9_./-]+)`", text):  # `aejax/training/loop.py`, `docs/study/`
            if path.startswith(ROOTS) and "<" not in path and not (REPO / path).exists():
                missing.append(f"{doc.name}: path {path}")
    assert not missing, missing


def test_the_readme_is_one_screen_of_links_and_the_docs_pages_are_linked():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, page.name


def test_ci_runs_the_readme_test_command_in_its_own_environment():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"Set up and run the tests:\n\n```bash\n(.*?)\n```", readme, flags=re.S).group(1)
    ci = (REPO / ".ci" / "run").read_text()
    assert command.replace(".venv", "$VENV") in ci.splitlines()
    assert "rm -rf" not in ci and "VENV=.ci/venv" in ci and "ruff check" in ci


@pytest.mark.slow  # trains and reloads several models end to end, ~1 min here; CI runs it (`pytest -m slow`)
def test_readme_and_library_blocks_run_as_written(tmp_path, prepared_data_dir):
    library = python_blocks(REPO / "docs" / "library.md")
    for needed in ("aejax.run(", "load_model", "jax.jacfwd", "jax.vmap(jax.grad", "register_model",
                   "register_loss", "sweep=", "actions="):
        assert needed in library, f"docs/library.md lost its {needed} example"
    env = {**os.environ, "TFDS_DATA_DIR": str(prepared_data_dir), "PYTHONUNBUFFERED": "1"}
    for name, code in (("readme", python_blocks(REPO / "README.md")), ("library", library)):
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    assert (tmp_path / "runs/readme/conv/results.json").exists()
    assert (tmp_path / "runs/library/lr/results.json").exists()
    lines = result.stdout.splitlines()
    assert sum("{'lr':" in line for line in lines) == 3
    early = [line for line in lines if line.startswith("epoch ")]
    assert 1 <= len(early) < 4 and lines[-1] == str(len(early))  # stopped early: the rows say how many epochs


def test_the_documented_checkpoint_layout_restores_with_plain_orbax(tmp_path, mnist_test_images):
    # docs/training.md's orbax snippet, run as written in a process that never imports aejax, on a real run.
    from aejax.config import Config
    from aejax.training import loop

    snippet = python_blocks(REPO / "docs" / "training.md")
    assert "ocp.CheckpointManager" in snippet and "import aejax" not in snippet
    loop.run(Config(latent_dim=32, epochs=1, batch_size=50, train_examples=500), tmp_path / "runs/linear_d32",
             seeds=[0, 1], data=(mnist_test_images[:500], mnist_test_images[:200]), log=lambda *_: None)
    check = "\nimport sys\nassert not [m for m in sys.modules if m.startswith('aejax')]\nprint(kernel.shape)\n"
    result = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 784, 32)"  # [K, 784, d]: both seeds
