"""balfeat: learn and measure image representations on class-imbalanced (long-tailed) data.

Implements and extends "Exploring Balanced Feature Spaces for Representation Learning"
(Kang et al., ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit): supervised, MoCo and
k-positive contrastive (KCL) representation learning, linear probes and decoupled classifiers,
many/medium/few-shot accuracy and the balancedness of a feature space.
"""

__version__ = "0.1.0"
