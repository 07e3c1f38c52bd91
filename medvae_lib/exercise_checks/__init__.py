"""One module per chapter (``chNN.py``) holding that chapter's exercise checks; see ``medvae_lib.exercises``."""
