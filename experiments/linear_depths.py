"""Linear autoencoders (original and aejax's) at each code size, with PCA.

    python -m experiments.linear_depths --out runs/linear_depths [--depths 32,64,128,256] [--epochs 5] [--seeds 0,1,2]

Arms, settings and expected results: `aejax/configs/study.py` and the README.
"""

from aejax.configs.study import LINEAR
from experiments.depth_study import study_main

if __name__ == "__main__":
    study_main(LINEAR, prog="python -m experiments.linear_depths")
