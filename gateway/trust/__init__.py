"""Verification of what the cloud signed: keys, the signed site index, artifacts."""
