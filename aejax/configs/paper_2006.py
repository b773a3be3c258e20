"""Hinton & Salakhutdinov (Science, 2006) on their own table: squared reconstruction error per test image,
30-value codes, pixels in [0, 1] summed over the 784 pixels, averaged over the 10,000 test images.

    python -m experiments.paper_2006 --out runs/paper_2006               # PCA check, PAPER and BEST on 60,000
    python -m experiments.paper_2006 --out runs/paper_2006 --variants    # PCA check, every VARIANT held-out scored

Published: deep autoencoder 3.00, logistic PCA 8.01, PCA 13.87. Model selection never sees the test set: each
variant trains on the first 50,000 training images and is chosen by its error on the last 10,000 (HELD_OUT);
the chosen settings are then trained on all 60,000 and scored once on the test set. Measured results are in
the README's "The 2006 deep autoencoder" section and `docs/paper_2006/`.
"""

from __future__ import annotations

from aejax.config import Config

CODE = 30
HELD_OUT = 10_000  # the last 10,000 training images score the variants; the first 50,000 train them
PAPER_TABLE = {"deep autoencoder": 3.00, "logistic PCA": 8.01, "PCA": 13.87}  # Science 313:504, fig. 2

# 784-1000-500-250-30, mirrored, ReLU, trained from random initialisation (the paper pre-trained logistic
# units with RBMs, then fine-tuned); Adam with warmup and cosine decay, batch 128.
PAPER = Config(model="linear", latent_dim=CODE, hidden=(1000, 500, 250), batch_size=128, lr=1e-3,
               schedule="warmup_cosine", warmup_epochs=1.0, epochs=20)
SMALL_BATCH = dict(batch_size=25, lr=2e-3, schedule="warmup_cosine", warmup_epochs=0.2)  # the linear_h512 recipe
# the study's conv_strided arm (conv + pool, strided conv, Dense code, transpose convs, and a linear path)
CONV_STRIDED = Config(model="conv_strided", latent_dim=CODE, conv_features=(32, 64), epochs=20,
                      model_kwargs={"linear": True}, **SMALL_BATCH)
REFINE = CONV_STRIDED.replace(model_kwargs={"linear": True, "refine": True})  # + a 3x3 conv at 14x14 in the decoder

VARIANTS: dict[str, Config] = {
    "paper_e20": PAPER,
    "paper_e20_adamw0.1": PAPER.replace(optimizer="adamw", weight_decay=0.1),
    # the paper's logistic hidden units (ReLU above): without the paper's RBM pre-training, this deep sigmoid net
    # is still worse than PCA after 20 epochs of Adam
    "paper_e20_sigmoid": PAPER.replace(model_kwargs={"activation": "sigmoid"}),
    "h1000_b25_e20": Config(model="linear", latent_dim=CODE, hidden=(1000,), epochs=20, **SMALL_BATCH),
    "conv_strided_linear_e20": CONV_STRIDED,
    "conv_strided_linear_e40": CONV_STRIDED.replace(epochs=40),
    "conv_strided_linear_refine_e20": REFINE,
    "conv_strided_linear_refine_e40": REFINE.replace(epochs=40),
}

BEST = "conv_strided_linear_refine_e40"  # the lowest held-out error of VARIANTS (docs/paper_2006/variants.md)
