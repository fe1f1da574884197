"""OTA Gateway: a site's verified mirror, device update API, metrics broker and canary gates."""

__version__ = "0.1.0"
