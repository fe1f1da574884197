"""The I/O side of the rollout decisions: the gate keeper (feeds :mod:`gateway.core.site`, makes its
judgements durable before publishing them) and the gate files. The decisions are in ``gateway.core``.
"""
