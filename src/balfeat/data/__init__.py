"""Data layer: split files, imbalance generators, dataset sources, datasets and samplers.

Import the submodules directly (``from balfeat.data.splits import read_split``); this package
imports nothing heavy so that ``balfeat splits`` starts fast.
"""
