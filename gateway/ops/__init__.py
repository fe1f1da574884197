"""What operators read: the status view, Prometheus' families and readiness."""
