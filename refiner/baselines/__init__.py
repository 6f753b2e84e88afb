"""Baselines the learned refiner is compared with: the fully connected (dense) CRF."""
