"""Sampling, augmentation and format transforms (dictionary versions, MONAI style)."""
