"""Convolutional autoencoders (the original 392-value model and the depth-matched one), with PCA.

    python -m experiments.conv_depths --out runs/conv_depths [--depths 32,64,128,256] [--epochs 5] [--seeds 0,1,2]

Arms, settings and expected results: `aejax/configs/study.py` and the README.
"""

from aejax.configs.study import CONV
from experiments.depth_study import study_main

if __name__ == "__main__":
    study_main(CONV, prog="python -m experiments.conv_depths")
