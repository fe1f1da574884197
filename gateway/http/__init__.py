"""The HTTP side: device API, artifact downloads, operator API."""
