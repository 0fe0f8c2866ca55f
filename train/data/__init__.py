"""Training data: the dataset format, augmentation, latent caches, and the corpus builder (corpus/)."""
