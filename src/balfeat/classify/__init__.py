"""Classifiers on learned representations: linear probes and decoupled classifier re-training."""
