"""Dataset tables, format readers, synthetic data, preprocessing and images (no Ray)."""
