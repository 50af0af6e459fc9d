"""Config -> objects -> training loop -> checkpoints.

- :mod:`balfeat.engine.config`: typed dataclass config from YAML + ``key=value`` overrides.
- :mod:`balfeat.engine.build`: config -> datasets, samplers, loaders, method, optimizer, scheduler.
- :mod:`balfeat.engine.checkpoint`: atomic ``save_checkpoint`` (keep-last-N), ``load_checkpoint``.
- :mod:`balfeat.engine.trainer`: ``Trainer`` (one code path for 1 process and torchrun DDP).
"""
