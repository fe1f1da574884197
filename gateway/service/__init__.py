"""The gateway process: settings and the files they name, building and wiring every component, start and stop, the health check."""
