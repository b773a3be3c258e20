"""The whole study: linear and convolutional autoencoders and PCA at each code size (the README's main command).

    python -m experiments.study --out runs/study [--depths 32,64,128,256] [--epochs 5] [--seeds 0,1,2]

Arms, settings and expected results: `aejax/configs/study.py` and the README.
"""

from aejax.configs.study import CONV, LINEAR
from experiments.depth_study import study_main

if __name__ == "__main__":
    study_main(LINEAR + CONV, prog="python -m experiments.study")
