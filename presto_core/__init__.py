"""Presto inference library: EDM latent diffusion transformer, few-step samplers, VAE, CLAP."""

from presto_core.errors import PrestoError

__all__ = ["PrestoError"]
