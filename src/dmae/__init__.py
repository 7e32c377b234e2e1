"""DMAE: Denoising Masked Autoencoders for certified robustness, reproduced."""

__version__ = "0.1.0"
