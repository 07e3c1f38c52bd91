"""Shared library of the *Latent Representation Quality* book: each chapter's notebook calls the
module of the same name (``01_data_prep`` -> :mod:`medvae_lib.data_prep`), which builds on the
common modules :mod:`~medvae_lib.data`, :mod:`~medvae_lib.models`, :mod:`~medvae_lib.metrics` and
:mod:`~medvae_lib.training`."""

__version__ = "0.1.0"
