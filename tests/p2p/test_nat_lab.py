"""The WAN testbed itself: delays are paid by real TCP, each NAT kind maps ports as it claims, and
nothing reaches a home host unasked."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests import netlab

pytestmark = pytest.mark.skipif(netlab.missing() is not None, reason=netlab.missing() or "")

ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen()
print("ready", flush=True)
while True:
    c, (ip, port) = s.accept()
    c.sendall(f"{ip}:{port}".encode()); c.close()
"""

PROBE = """
import socket, sys, time
s = socket.socket(); s.settimeout(2)
if len(sys.argv) > 2:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[2])))
t0 = time.perf_counter()
try:
    s.connect((sys.argv[1], 7000))
except OSError as exc:
    print("unreachable", type(exc).__name__); sys.exit(0)
print(f"{1000 * (time.perf_counter() - t0):.1f}", s.recv(100).decode())
"""


@pytest.fixture(scope="module")
def lab():
    with netlab.Lab(netlab.Topology.default(rtt_ms=40), prefix="cltest") as lab:
        yield lab


def echo_on(lab: netlab.Lab, host: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(lab.command(host, [sys.executable, "-c", ECHO]), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def probe(lab: netlab.Lab, host: str, target: str, source_port: int | None = None) -> list[str]:
    argv = [sys.executable, "-c", PROBE, target] + ([str(source_port)] if source_port else [])
    return lab.run(host, argv, timeout=10).stdout.split()


def test_delay_is_paid_by_tcp_and_changes_live(lab):
    server = echo_on(lab, "boot")
    try:
        connect_ms = float(probe(lab, "client", lab.public_ip("boot"))[0])
        assert 40 <= connect_ms < 60  # one round trip: SYN out, SYN-ACK back
        lab.set_rtt(100)
        connect_ms = float(probe(lab, "pub", lab.public_ip("boot"))[0])
        assert 100 <= connect_ms < 130
    finally:
        lab.set_rtt(40)
        server.kill()


def test_cone_nat_keeps_the_port_and_symmetric_changes_it(lab):
    server = echo_on(lab, "boot")
    try:
        seen = {}
        for host in ("cone", "sym"):
            seen[host] = {probe(lab, host, lab.public_ip("boot"), 41000 + i)[1] for i in range(3)}
        assert seen["cone"] == {f"{lab.public_ip('cone')}:{41000 + i}" for i in range(3)}
        sym_ports = {int(s.split(":")[1]) for s in seen["sym"]}
        assert sym_ports != {41000, 41001, 41002}  # `masquerade random`: a fresh port per connection
        assert all(s.startswith(lab.public_ip("sym") + ":") for s in seen["sym"])
    finally:
        server.kill()


def test_nothing_reaches_a_home_host_unasked(lab):
    server = echo_on(lab, "cone")
    try:
        t0 = time.monotonic()
        assert probe(lab, "pub", lab.public_ip("cone"))[0] == "unreachable"  # silently dropped: a timeout
        assert time.monotonic() - t0 > 1.5
        assert probe(lab, "pub", lab.ip("cone"))[0] == "unreachable"  # private addresses are not routed
        assert probe(lab, "client", lab.ip("cone"))[0] == "unreachable"
    finally:
        server.kill()


def test_up_twice_and_down_twice_are_harmless(lab):
    other = netlab.Lab(netlab.Topology([netlab.Host("a"), netlab.Host("b", "cone")]), prefix="cltest2")
    other.up()
    other.up()
    try:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert names.count("cltest2-") == 3  # a, b and b's router
    finally:
        other.down()
        other.down()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "cltest2-" not in names and "cltest-" in names
