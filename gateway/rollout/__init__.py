"""Rollout decisions, as pure logic: cohorts, bucketing, eligibility, waves and gates.

Nothing in this package does I/O or reads the clock: inventory, manifests, aggregates and ``now``
come in as values, decisions with their reasons go out.
"""
