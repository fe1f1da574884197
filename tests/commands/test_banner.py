"""The banner's device URLs and its command hints, as pure-ish functions (the process test in
``test_serve_process.py`` runs the printed hints)."""

from __future__ import annotations

import ipaddress
import sys

import psutil

from gateway.commands.serve import lan_addresses, own_command, urls


def test_a_wildcard_bind_is_shown_as_the_box_lan_addresses() -> None:
    shown = lan_addresses("0.0.0.0")
    ours = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    assert "0.0.0.0" not in shown
    assert set(shown) <= ours | {"127.0.0.1"}
    non_loopback = [a for a in shown if not ipaddress.ip_address(a).is_loopback]
    assert non_loopback == shown or shown == ["127.0.0.1"]  # loopback only when nothing else
    assert urls([("0.0.0.0", 8080)]).split("  ") == [f"http://{a}:8080/" for a in shown]
    assert lan_addresses("127.0.0.1") == ["127.0.0.1"]
    assert urls([("::1", 8080, 0, 0)]) == "http://[::1]:8080/"
    assert urls([]) == "off"


def test_the_hint_command_runs_this_very_gateway() -> None:
    cmd = own_command()
    assert cmd.endswith("/ota-gateway") or cmd == f"{sys.executable} -m gateway"
    assert cmd.startswith("/")
