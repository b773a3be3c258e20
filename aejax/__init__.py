"""aejax: autoencoders on MNIST in JAX/Flax, as a functional research codebase."""

from aejax.config import Config
from aejax.errors import AejaxError

__all__ = ["AejaxError", "Config"]
__version__ = "0.1.0"
