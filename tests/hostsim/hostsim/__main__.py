"""`python -m hostsim`: enroll N simulated hosts and keep them answering their MDM until stopped.

Make a push PKI first (`python -m hostsim pki DIR`), start the stack with APNS_CERT/APNS_KEY/
APNS_CA_CERTS from it and APNS_URL=https://127.0.0.1:<apns-port>, then run
`python -m hostsim run --mdm-url URL --enroll-secret S --hosts N --pki DIR --apns-port P`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from .fleet import Fleet, start_fake_apns
from .pki import ApnsPki, make_apns_pki


def _pki_from(directory: Path) -> ApnsPki:
    topic_file = directory / "topic"
    return ApnsPki(topic_file.read_text().strip(), directory / "push.pem", directory / "push.key",
                   directory / "push-ca.pem", directory / "apns-server.pem",
                   directory / "apns-server.key", directory / "apns-server-ca.pem")


def main() -> None:
    parser = argparse.ArgumentParser(prog="hostsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pki = sub.add_parser("pki", help="make a push certificate and fake-APNs TLS files")
    pki.add_argument("directory", type=Path)
    pki.add_argument("--server-name", action="append", default=[],
                     help="extra DNS name of the fake APNs server certificate (e.g. a container)")
    run = sub.add_parser("run", help="enroll hosts and answer their MDM until Ctrl-C")
    run.add_argument("--mdm-url", required=True)
    run.add_argument("--enroll-secret", required=True)
    run.add_argument("--hosts", type=int, default=5)
    run.add_argument("--pki", type=Path, required=True)
    run.add_argument("--apns-port", type=int, required=True)
    run.add_argument("--poll-interval", type=float, default=60.0,
                     help="seconds between unprompted polls (a safety net besides pushes)")
    run.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: never)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hostsim %(message)s")

    if args.command == "pki":
        made = make_apns_pki(args.directory, server_names=tuple(args.server_name))
        (args.directory / "topic").write_text(made.topic)
        print(f"APNS_CERT={made.push_cert}\nAPNS_KEY={made.push_key}\n"
              f"APNS_CA_CERTS={made.server_ca}\ntopic: {made.topic}")
        return

    pki_files = _pki_from(args.pki)
    fleet = Fleet(args.mdm_url, args.hosts, Path(tempfile.mkdtemp(prefix="hostsim-")))
    apns = start_fake_apns(pki_files, fleet, port=args.apns_port)
    started = time.monotonic()
    try:
        fleet.enroll(args.enroll_secret)
        logging.info("%d hosts enrolled; answering pushes", len(fleet.hosts))
        while not args.duration or time.monotonic() - started < args.duration:
            time.sleep(args.poll_interval if not args.duration
                       else min(args.poll_interval, args.duration))
            fleet.poll_all()
    except KeyboardInterrupt:
        pass
    finally:
        apns.stop()
        fleet.close()
        for host in fleet.hosts:
            print(f"{host.udid}  {host.serial_number}  profiles={sorted(host.profiles)}")


if __name__ == "__main__":
    main()
