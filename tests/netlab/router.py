"""The testbed's Internet: a userspace router that forwards IPv4 packets between TUN devices, one per
edge namespace, holding each packet for the one-way delay of the links it crosses.

netem is not in every kernel (it is not on our CI machine), so delay is applied here, outside
Corolla: TCP, Noise, Yamux windows and the DHT all pay it. A packet from edge A to edge B is held
for delay(A) + delay(B) ms; a packet to an address no edge owns is dropped, as on the Internet.

    python router.py CONFIG.json      (SIGHUP: read the delays again; SIGTERM: stop)

CONFIG.json: {"edges": [{"netns": NAME, "device": DEV, "address": IPV4, "delay_ms": MS}, ...]}
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
MAX_PACKET = 65536


@dataclass
class Edge:
    netns: str
    device: str
    address: bytes
    delay_s: float
    fd: int = -1


def setns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(netns: str, device: str) -> int:
    """Attach to the persistent TUN device `device` inside namespace `netns`; the descriptor keeps
    working after this process returns to its own namespace."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(f"/var/run/netns/{netns}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    finally:
        setns(f"/proc/self/fd/{home}")
        os.close(home)


def load_edges(path: str) -> list[Edge]:
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return [Edge(e["netns"], e["device"], socket.inet_aton(e["address"]), e["delay_ms"] / 1000.0)
            for e in config["edges"]]


def route(config_path: str) -> None:
    edges = load_edges(config_path)
    for e in edges:
        e.fd = open_tun(e.netns, e.device)
    by_addr = {e.address: e for e in edges}
    by_fd = {e.fd: e for e in edges}
    reload = False

    def on_hup(*_: object) -> None:
        nonlocal reload
        reload = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()  # a signal wakes select() so that new delays apply to the next packet
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    sel.register(wake_r, selectors.EVENT_READ)
    for e in edges:
        sel.register(e.fd, selectors.EVENT_READ)
    held: list[tuple[float, int, int, bytes]] = []  # (release time, order, out fd, packet)
    order = 0
    print("router ready", flush=True)
    while True:
        if reload:
            reload = False
            for fresh in load_edges(config_path):
                if fresh.address in by_addr:
                    by_addr[fresh.address].delay_s = fresh.delay_s
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        for key, _ in sel.select(timeout):
            if key.fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                continue
            src = by_fd[key.fd]
            for _ in range(256):  # drain a burst, but let held packets go out on time
                try:
                    packet = os.read(key.fd, MAX_PACKET)
                except (BlockingIOError, InterruptedError):
                    break
                if len(packet) < 20 or packet[0] >> 4 != 4:
                    continue  # IPv4 only
                dst = by_addr.get(packet[16:20])
                if dst is None or dst is src:
                    continue
                delay = src.delay_s + dst.delay_s
                if delay <= 0:
                    _send(dst.fd, packet)
                else:
                    order += 1
                    heapq.heappush(held, (time.monotonic() + delay, order, dst.fd, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, fd, packet = heapq.heappop(held)
            _send(fd, packet)


def _send(fd: int, packet: bytes) -> None:
    try:
        os.write(fd, packet)
    except (BlockingIOError, OSError):
        pass  # a full queue or a device going away loses the packet, as a real link would


if __name__ == "__main__":
    route(sys.argv[1])
