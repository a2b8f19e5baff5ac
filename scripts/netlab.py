"""A WAN testbed on this machine: a public segment and home networks behind NAT routers, with a
one-way delay on every link (see tests/netlab). Linux, as root.

    scripts/netlab.py up [--rtt MS] [--rate MBIT]   build it (again): boot, pub, cone, sym, client
    scripts/netlab.py run HOST -- COMMAND...        run a command on a host (e.g. corolla serve)
    scripts/netlab.py rtt MS                         change the round trip between every pair, live
    scripts/netlab.py status                         hosts, addresses, NATs, delays
    scripts/netlab.py down                           remove it all

Example: a bootstrap on the public segment and a server behind the symmetric NAT:
    scripts/netlab.py up --rtt 50
    scripts/netlab.py run boot -- .venv/bin/python -m corolla.app bootstrap --port 4000
    scripts/netlab.py run sym -- .venv/bin/python -m corolla.app serve --blocks 0:10 \\
        --initial-peers /ip4/198.51.100.10/tcp/4000/p2p/PEER_ID
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Lab, LabError, Topology  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", default="cl", help="name prefix of the namespaces (several labs can coexist)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the testbed (a previous one with this prefix is removed first)")
    up.add_argument("--rtt", type=float, default=0.0, help="round trip in ms between any two hosts")
    up.add_argument("--rate", type=float, default=0.0, help="upload limit of every host in Mbit/s (0: none)")
    sub.add_parser("down", help="remove the testbed")
    sub.add_parser("status", help="print hosts, addresses and delays")
    rtt = sub.add_parser("rtt", help="change the round trip between every pair of hosts, live")
    rtt.add_argument("ms", type=float)
    run = sub.add_parser("run", help="run a command on one host of the testbed")
    run.add_argument("host")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            topo = Topology.default(args.rtt)
            for h in topo.hosts:
                h.rate_mbit = args.rate
            lab = Lab(topo, args.prefix)
            lab.up()
            lab.router = None  # keep it running after this command: `down` stops it
            print_status(lab)
        elif args.cmd == "down":
            Lab(prefix=args.prefix).down()
        elif args.cmd == "status":
            print_status(Lab.existing(args.prefix))
        elif args.cmd == "rtt":
            Lab.existing(args.prefix).set_rtt(args.ms)
        elif args.cmd == "run":
            lab = Lab.existing(args.prefix)
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                p.error("run needs a command after the host name")
            os.execvp("ip", lab.command(args.host, command))
    except LabError as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 1
    return 0


def print_status(lab: Lab) -> None:
    print(f"{'host':<8} {'namespace':<14} {'address':<15} {'public address':<15} {'NAT':<15} "
          f"{'delay ms':>8} {'Mbit/s':>7}")
    for h in lab.topology.hosts:
        nat = f"{h.nat}/{h.unsolicited}" if h.nat else "-"
        print(f"{h.name:<8} {lab.netns(h.name):<14} {lab.ip(h.name):<15} {lab.public_ip(h.name):<15} {nat:<15} "
              f"{h.delay_ms:>8.1f} {h.rate_mbit or '-':>7}")


if __name__ == "__main__":
    sys.exit(main())
