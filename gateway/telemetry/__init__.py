"""Device metrics: validation, aggregation into windows, and what the gates and the cloud read."""
