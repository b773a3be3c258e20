"""The depth study's arms: the original study's models, faithfully, and aejax's improvements beside them.

    python -m experiments.study --out runs/study            # everything below, 3 seeds, 5 epochs each
    python -m experiments.linear_depths --out runs/linear   # LINEAR arms + PCA
    python -m experiments.conv_depths --out runs/conv       # CONV arms + PCA
    python -m experiments.conv_depths --arms conv_original --epochs 30 --seeds 0 --out runs/conv30

Original settings (the PyTorch notebooks): MSE, Adam lr 1e-3, batch 25; linear = Dense(784->d), Dense(d->784),
sigmoid, 5 epochs (reported train MSE 0.00097 at d=256); conv = the 392-value model, 30 epochs (train MSE
0.00263). Measured results are in the README's results section.
"""

from __future__ import annotations

import dataclasses

from aejax.config import CONV_ORIGINAL_CODE, Config
from aejax.errors import AejaxError

DEPTHS = (32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One line of the study: a label (also the run-directory prefix), a base config, and its depths.

    `depths=None` means the study's depths; a fixed tuple means the architecture fixes the code size.
    """

    label: str
    config: Config
    depths: tuple[int, ...] | None = None
    description: str = ""


ORIGINAL = Config(batch_size=25, lr=1e-3, optimizer="adam", schedule="constant", loss="mse", epochs=5)

LINEAR = (
    Arm("linear", ORIGINAL.replace(model="linear"),
        description="original: Dense(784->d), Dense(d->784), sigmoid; Adam 1e-3 constant, batch 25"),
    Arm("linear_cos", ORIGINAL.replace(model="linear", schedule="cosine", lr=3e-3),
        description="aejax: the original model; Adam 3e-3 with cosine decay to 0, batch 25"),
    Arm("linear_h512", ORIGINAL.replace(model="linear", hidden=(512,), schedule="warmup_cosine",
                                        warmup_epochs=0.2, lr=2e-3),
        description="aejax: one ReLU hidden layer of 512 each side; Adam 2e-3, 0.2-epoch warmup + cosine"),
)
WARMUP_COSINE = dict(schedule="warmup_cosine", warmup_epochs=0.2)
CONV_STRIDED = ORIGINAL.replace(model="conv_strided", conv_features=(32, 64), lr=2e-3, model_kwargs={"linear": True},
                                **WARMUP_COSINE)
CONV = (
    Arm("conv_original", ORIGINAL.replace(model="conv_original", latent_dim=CONV_ORIGINAL_CODE),
        depths=(CONV_ORIGINAL_CODE,),
        description="original: conv 64, 8 + pools, 7x7x8 code (392), transpose convs; Adam 1e-3, batch 25"),
    Arm("conv", ORIGINAL.replace(model="conv", conv_features=(32, 32)),
        description="aejax: conv 32, 32 + pools, Dense bottleneck to d, mirrored decoder; Adam 1e-3, batch 25"),
    Arm("conv_strided", CONV_STRIDED,
        description="aejax: conv 32 + pool, strided conv 64, Dense code of d (also reading the pixels), "
                    "transpose convs plus a Dense d -> 784 path; Adam 2e-3, 0.2-epoch warmup + cosine, batch 25 "
                    "(chosen on held-out images: experiments/conv_search.py)"),
)
ARMS = {arm.label: arm for arm in LINEAR + CONV}


def parse_arms(text: str) -> list[Arm]:
    """The arms named in a comma-separated `text` (a `--arms` flag); a one-line error for unknown names."""
    labels = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in labels if a not in ARMS]
    if unknown or not labels:
        raise AejaxError(f"unknown arm(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ARMS)}")
    return [ARMS[a] for a in labels]


# Candidates for a conv arm that beats every other arm at every depth, chosen on held-out training images
# (`python -m experiments.conv_search --out runs/conv_search`; the table is in the README). Each is crossed with
# the search's depths; the same 5 epochs as every arm.
CONV_CANDIDATES: dict[str, Config] = {  # every candidate tried, in the order tried
    "strided_wcos2e-3": ORIGINAL.replace(model="conv_strided", conv_features=(32, 64), lr=2e-3, **WARMUP_COSINE),
    "strided_b50_wcos3e-3": ORIGINAL.replace(model="conv_strided", conv_features=(32, 64), lr=3e-3, batch_size=50,
                                             **WARMUP_COSINE),
    "strided_h512_wcos2e-3": ORIGINAL.replace(model="conv_strided", conv_features=(32, 64), lr=2e-3,
                                              model_kwargs={"hidden": 512}, **WARMUP_COSINE),
    "strided_nopool_wcos2e-3": ORIGINAL.replace(model="conv_strided", conv_features=(32, 64), lr=2e-3,
                                                model_kwargs={"pool": False}, **WARMUP_COSINE),
    "strided_linear_wcos2e-3": CONV_STRIDED,  # the arm
}
CONV_BASELINES = ("linear_cos", "linear_h512")  # the arms to beat, scored the same way
