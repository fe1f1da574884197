"""What the gateway knows of each device at the site (attributes, versions, last seen, source)."""
