"""The pure decisions of the gateway and the values they work on: no I/O, no clock, no asyncio.

Everything here takes values and ``now`` and returns values, so it is tested exhaustively and fast,
and the I/O rooms around it stay thin (in the way of python-tuf's ``TrustedMetadataSet`` and
mitmproxy's sans-IO layers). It imports only the standard library, ``firmware_compat`` and itself
(``tests/test_house.py`` checks).
"""
