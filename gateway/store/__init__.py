"""Verified, content-addressed artifact storage on disk."""
