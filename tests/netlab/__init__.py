"""A WAN in network namespaces: a public segment and home networks behind NAT routers, joined by a
userspace router (router.py) that applies each link's one-way delay; bandwidth by `tc tbf`.

    edge namespaces (one per public host, one per home router) --TUN--> router.py (the Internet)
    home host namespace --veth--> its NAT router namespace (nftables masquerade)

NAT kinds, as measured on Linux (see docs/swarm.md, "Behind a home router"):
- "cone": `masquerade` keeps the source port when it can and reuses one mapping for every
  destination (endpoint-independent mapping): TCP hole punching can work through it;
- "symmetric": `masquerade random` picks a new public port per connection: punching fails.
Unsolicited packets to a router are dropped silently (`drop`) or answered with a TCP reset (`rst`),
which is what breaks hole punching through some real routers.

Linux only, as root (namespaces, TUN, nftables). `Lab.missing()` says why not, for tests to skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROUTER = Path(__file__).with_name("router.py")
STATE_ROOT = Path("/run/corolla-netlab")
PUBLIC_NET = "198.51.100"  # TEST-NET-2: never routed on the real Internet


class LabError(RuntimeError):
    """The testbed could not be built or used; the message says which command failed."""


@dataclass
class Host:
    """One machine of the testbed. `nat` is None for a host on the public segment, else the kind of
    home router in front of it: 'cone' or 'symmetric'. Delay in ms one way on its access link,
    rate in Mbit/s (0: unlimited) for what it sends."""

    name: str
    nat: str | None = None
    unsolicited: str = "drop"  # what its router does with unsolicited packets: 'drop' or 'rst'
    delay_ms: float = 0.0
    rate_mbit: float = 0.0


@dataclass
class Topology:
    hosts: list[Host] = field(default_factory=list)

    @classmethod
    def default(cls, rtt_ms: float = 0.0) -> Topology:
        """The must-show layout: a bootstrap and a server on the public segment, a server behind a
        cone NAT, one behind a symmetric NAT, a client behind a third (cone) NAT; every pair of hosts
        `rtt_ms` apart (each access link carries a quarter of it one way)."""
        d = rtt_ms / 4
        return cls([Host("boot", delay_ms=d), Host("pub", delay_ms=d), Host("cone", "cone", delay_ms=d),
                    Host("sym", "symmetric", delay_ms=d), Host("client", "cone", delay_ms=d)])


def missing() -> str | None:
    """Why the testbed cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the network testbed needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the network testbed needs root (network namespaces, TUN devices, nftables)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"the network testbed needs the `{tool}` command (apt-get install iproute2 nftables)"
    if not os.path.exists("/dev/net/tun"):
        return "the network testbed needs /dev/net/tun"
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


class Lab:
    """Build with `up()`, remove with `down()` (both idempotent), or `with Lab(topology) as lab:`."""

    def __init__(self, topology: Topology | None = None, prefix: str = "cl") -> None:
        self.topology = topology or Topology.default()
        self.prefix = prefix
        self.state = STATE_ROOT / prefix
        self.router: subprocess.Popen[bytes] | None = None

    @classmethod
    def existing(cls, prefix: str = "cl") -> Lab:
        """The lab another process built with `up()` (its topology is read back from its state)."""
        config = STATE_ROOT / prefix / "router.json"
        if not config.exists():
            raise LabError(f"no testbed '{prefix}' is up; start one with: scripts/netlab.py up")
        hosts = [Host(**h) for h in json.loads(config.read_text())["hosts"]]
        return cls(Topology(hosts), prefix)

    # -- names and addresses -----------------------------------------------------------------
    def host(self, name: str) -> Host:
        for h in self.topology.hosts:
            if h.name == name:
                return h
        raise LabError(f"no host {name!r} in this lab; hosts: {', '.join(h.name for h in self.topology.hosts)}")

    def netns(self, name: str) -> str:
        """The namespace where host `name` runs its programs."""
        return f"{self.prefix}-{name}"

    def edge_netns(self, h: Host) -> str:
        """The namespace holding the host's public address: itself, or its NAT router."""
        return f"{self.prefix}-{h.name}-nat" if h.nat else self.netns(h.name)

    def public_ip(self, name: str) -> str:
        """The host's (or its router's) address on the public segment."""
        return f"{PUBLIC_NET}.{10 + [h.name for h in self.topology.hosts].index(name)}"

    def ip(self, name: str) -> str:
        """The address a program on host `name` listens on."""
        h = self.host(name)
        if not h.nat:
            return self.public_ip(name)
        return f"10.{1 + self.topology.hosts.index(h)}.0.2"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build every namespace, link and NAT, and start the delay router (removing a previous lab
        with the same prefix first)."""
        why = missing()
        if why:
            raise LabError(why)
        self.down()
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            for i, h in enumerate(self.topology.hosts):
                self._build(i, h)
            self._write_config()
            self._start_router()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop the router and delete this lab's namespaces; nothing happens if there are none."""
        if self.router is not None and self.router.poll() is None:
            self.router.terminate()
            self.router.wait(5)
        self.router = None
        pid_file = self.state / "router.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            pid_file.unlink(missing_ok=True)
        for ns in sh("ip", "netns", "list").stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(f"{self.prefix}-"):
                self._kill_all_in(name)
                sh("ip", "netns", "delete", name, check=False)
        shutil.rmtree(self.state, ignore_errors=True)

    def set_delay(self, delay_ms: float, names: list[str] | None = None) -> None:
        """Change the one-way delay of these hosts' access links (all by default), live."""
        for h in self.topology.hosts:
            if names is None or h.name in names:
                h.delay_ms = delay_ms
        self._write_config()
        pid = int((self.state / "router.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.2)

    def set_rtt(self, rtt_ms: float) -> None:
        """Every pair of hosts `rtt_ms` apart."""
        self.set_delay(rtt_ms / 4)

    # -- running programs --------------------------------------------------------------------
    def command(self, name: str, argv: list[str]) -> list[str]:
        """`argv` wrapped to run on host `name`."""
        return ["ip", "netns", "exec", self.netns(name), *argv]

    def run(self, name: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(name, argv), capture_output=True, text=True, **kw)

    # -- building ----------------------------------------------------------------------------
    def _build(self, i: int, h: Host) -> None:
        edge = self.edge_netns(h)
        pub = self.public_ip(h.name)
        for ns in {edge, self.netns(h.name)}:
            sh("ip", "netns", "add", ns)
            self._in(ns, "ip", "link", "set", "lo", "up")
            self._in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self._in(edge, "ip", "tuntap", "add", "dev", "wan0", "mode", "tun")
        self._in(edge, "ip", "addr", "add", f"{pub}/32", "dev", "wan0")
        self._in(edge, "ip", "link", "set", "wan0", "up")
        self._in(edge, "ip", "route", "add", "default", "dev", "wan0")
        if h.rate_mbit:
            self._in(edge, "tc", "qdisc", "add", "dev", "wan0", "root", "tbf", "rate", f"{h.rate_mbit}mbit",
                     "burst", "32kb", "latency", "200ms")
        if h.nat:
            self._build_nat(i, h, edge)

    def _build_nat(self, i: int, h: Host, router: str) -> None:
        home, lan = self.netns(h.name), f"10.{1 + i}.0"
        sh("ip", "link", "add", f"{self.prefix}{i}l", "type", "veth", "peer", "name", f"{self.prefix}{i}h")
        sh("ip", "link", "set", f"{self.prefix}{i}l", "netns", router)
        sh("ip", "link", "set", f"{self.prefix}{i}h", "netns", home)
        self._in(router, "ip", "link", "set", f"{self.prefix}{i}l", "name", "lan0")
        self._in(home, "ip", "link", "set", f"{self.prefix}{i}h", "name", "eth0")
        self._in(router, "ip", "addr", "add", f"{lan}.1/24", "dev", "lan0")
        self._in(router, "ip", "link", "set", "lan0", "up")
        self._in(home, "ip", "addr", "add", f"{lan}.2/24", "dev", "eth0")
        self._in(home, "ip", "link", "set", "eth0", "up")
        self._in(home, "ip", "route", "add", "default", "via", f"{lan}.1")
        self._in(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if h.nat not in ("cone", "symmetric"):
            raise LabError(f"unknown NAT kind {h.nat!r} for {h.name}: use 'cone' or 'symmetric'")
        masquerade = "masquerade random" if h.nat == "symmetric" else "masquerade"
        # No port forwarding: new connections from the WAN never reach the home host; `drop` also
        # keeps the router itself from answering them with a reset.
        drop = 'iifname "wan0" ct state new drop' if h.unsolicited == "drop" else ""
        rules = f"""
table ip corolla_nat {{
  chain outbound {{ type nat hook postrouting priority 100; oifname "wan0" {masquerade}; }}
  chain to_home {{ type filter hook forward priority 0; iifname "wan0" ct state new drop; }}
  chain to_router {{ type filter hook input priority 0; {drop}; }}
}}"""
        r = subprocess.run(["ip", "netns", "exec", router, "nft", "-f", "-"], input=rules, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise LabError(f"nftables rules for {h.name} failed: {r.stderr.strip()}")

    def _in(self, ns: str, *argv: str) -> None:
        sh("ip", "netns", "exec", ns, *argv)

    def _write_config(self) -> None:
        edges = [{"netns": self.edge_netns(h), "device": "wan0", "address": self.public_ip(h.name),
                  "delay_ms": h.delay_ms} for h in self.topology.hosts]
        tmp = self.state / "router.json.tmp"
        tmp.write_text(json.dumps({"edges": edges, "hosts": [asdict(h) for h in self.topology.hosts]}))
        tmp.replace(self.state / "router.json")

    def _start_router(self) -> None:
        log = open(self.state / "router.log", "wb")  # noqa: SIM115 - the router outlives this call
        self.router = subprocess.Popen([sys.executable, str(ROUTER), str(self.state / "router.json")],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        (self.state / "router.pid").write_text(str(self.router.pid))
        deadline = time.monotonic() + 10
        while b"router ready" not in (self.state / "router.log").read_bytes():
            if self.router.poll() is not None or time.monotonic() > deadline:
                raise LabError("the delay router did not start: "
                               + (self.state / "router.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def _kill_all_in(self, ns: str) -> None:
        """Programs left running in a namespace would keep it (and their ports) alive."""
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
