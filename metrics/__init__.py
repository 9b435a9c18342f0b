"""Evaluation metrics (FID, KID, precision/recall, IS, non-flatness, camera recovery, depth error) and their registry."""
