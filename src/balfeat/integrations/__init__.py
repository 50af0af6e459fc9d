"""Adapters to other training frameworks (optional extras; each imports its framework lazily).

- :mod:`balfeat.integrations.lightning`: any registered method as a Lightning ``LightningModule``
  (extra ``balfeat[lightning]``).
"""
