"""Synthetic, privacy-checked product catalogues with images, shaped like the public DBQ price tables."""
