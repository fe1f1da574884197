"""Fetching from the cloud registry: index polling, artifact transfer, resume, bandwidth cap."""
