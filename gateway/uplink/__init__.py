"""The uplink: a durable outbox of site reports and the sinks that carry them to the cloud."""
