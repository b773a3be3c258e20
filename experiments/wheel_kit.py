"""The wheel kit: the wheels the device machine lacks, for its Python 3.12 on x86-64 Linux, in `.whl/`.

    python -m experiments.wheel_kit            # writes .whl/*.whl and .whl/kit.json (ignored by git)

aejax itself runs on the device from the carried checkout with nothing added: without tensorflow-datasets it
reads MNIST from the IDX files, and without tensorboardX it skips TensorBoard events; only `aejax.codec` needs
constriction. The kit carries them (and each package they need that the device image lacks,
`experiments/device_packages.txt`) so the device can run the same tfds pipeline, events and codec as here, at the
versions installed in this environment. Each wheel is fetched with
`pip download --no-deps --only-binary=:all:` for CPython 3.12 and the manylinux platforms; a package published
only as source is built here into a pure-Python wheel (refused if the build is not `py3-none-any`). The kit must
stay under 64 MiB (what a device call may carry). On the device, before the command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("tensorflow-datasets", "array-record", "importlib-resources", "tensorboardX",  # optional for aejax
         "constriction")  # needed by aejax.codec only
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
LIMIT = 64 << 20  # bytes a device call may carry


def device_packages(path: Path = REPO / "experiments" / "device_packages.txt") -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line and not line.startswith("#")}


def missing_on_device(roots: tuple[str, ...] = ROOTS) -> dict[str, str]:
    """name -> version installed here, for `roots` and everything they require (for Python 3.12 on Linux,
    extras included where a requirement names them) that the device image does not hold."""
    present = device_packages()
    marker_env = {**default_environment(), "python_version": PYTHON, "python_full_version": f"{PYTHON}.3",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    wanted: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset()) for name in roots]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in present or (key, extras) in seen:
            continue
        seen.add((key, extras))
        dist = metadata.distribution(name)
        wanted[key] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(requirement.marker.evaluate({**marker_env, "extra": e})
                                              for e in (extras or {""})):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(wanted.items()))


def fetch(name: str, version: str, dest: Path) -> Path:
    """The wheel of `name==version` for the device, downloaded (or built from source if it is pure Python)."""
    before = set(dest.glob("*.whl"))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    download = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", PYTHON, "--implementation", "cp", *platforms, "-d", str(dest),
                               f"{name}=={version}"], capture_output=True, text=True)
    if download.returncode != 0:
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
                                f"{name}=={version}"], capture_output=True, text=True)
        if build.returncode != 0:
            sys.exit(f"error: no wheel of {name}=={version} for Python {PYTHON}: "
                     f"{(download.stderr.strip().splitlines() or ['?'])[-1]}")
    new = sorted(set(dest.glob("*.whl")) - before)
    if len(new) != 1:
        sys.exit(f"error: pip left {len(new)} new wheels for {name}=={version} in {dest}")
    wheel = new[0]
    if download.returncode != 0 and not wheel.name.endswith("-none-any.whl"):
        wheel.unlink()
        sys.exit(f"error: {name}=={version} has no wheel for Python {PYTHON} and builds only for this machine")
    return wheel


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.wheel_kit", description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(REPO / ".whl"), help="the folder to fill (default: .whl/, ignored by git)")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    wheels = {}
    for name, version in missing_on_device().items():
        wheel = fetch(name, version, dest)
        wheels[name] = {"version": version, "wheel": wheel.name, "bytes": wheel.stat().st_size}
        print(f"{name}=={version}  {wheel.name}  {wheel.stat().st_size / 1e6:.1f} MB", flush=True)
    total = sum(w["bytes"] for w in wheels.values())
    (dest / "kit.json").write_text(json.dumps({"python": PYTHON, "platforms": PLATFORMS, "wheels": wheels,
                                               "bytes": total}, indent=2) + "\n")
    print(f"{len(wheels)} wheels, {total / (1 << 20):.1f} MiB in {dest} (limit {LIMIT >> 20} MiB)")
    if total >= LIMIT:
        sys.exit(f"error: the kit is {total / (1 << 20):.1f} MiB, over the {LIMIT >> 20} MiB a device call carries")


if __name__ == "__main__":
    main()
