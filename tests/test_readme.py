"""The README's "Using aejax as a library" code blocks run as written, in order, as one script."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO


def library_blocks() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using aejax as a library", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


@pytest.mark.slow  # trains and reloads several models end to end, ~50 s here; CI runs it (`pytest -m slow`)
def test_library_section_runs_as_written(tmp_path, prepared_data_dir):
    code = library_blocks()
    for needed in ("aejax.run(", "load_model", "jax.jacfwd", "jax.vmap(jax.grad", "register_model",
                   "register_loss", "sweep="):
        assert needed in code, f"the library section lost its {needed} example"
    env = {**os.environ, "TFDS_DATA_DIR": str(prepared_data_dir), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs/library/lr/results.json").exists()
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + 1 + 3 and all("{'lr':" in line for line in lines[2:])
