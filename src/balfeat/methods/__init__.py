"""Representation-learning methods: supervised (SL), MoCo and KCL."""

from balfeat.methods.kcl import KCL
from balfeat.methods.moco import MoCo
from balfeat.methods.supervised import Supervised

__all__ = ["KCL", "MoCo", "Supervised"]
