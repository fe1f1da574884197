"""Firmware compatibility: version ordering, firmware ranges, the firmware/model matrix.

A small pure library (no I/O beyond parsing text it is handed) that device agents and the cloud
can import on their own.
"""
