"""``python -m divalign.train RECIPE [flags]``, the entry point the README, the recipes and ``accelerate launch ... -m
divalign.train`` use; the code is :mod:`divalign.launch.train`."""

import sys

from .launch.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
