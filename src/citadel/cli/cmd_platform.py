"""Register the platforms whose engines a CAS accepts (operators).

sim: no TEE vouches for the engine; a machine signs its engines' evidence with an Ed25519 platform
key, and a CAS accepts it only from registered platforms, and only for sessions that tolerate
`sim`. Sim mode does not protect memory from the machine's root.

tpm: the CAS accepts a TPM quote only when it is signed by a registered attestation key (AK).
Registering reads the AK from the TPM (Citadel's AK is derived from the TPM's endorsement seed, so it
is the same every time) and is the operator's statement that this key lives in that machine's TPM.
A quote proves the TPM, a fresh nonce and the boot PCRs; it does not protect the engine's memory
from that machine's root.

examples:
  citadel platform add build-host-1                  # makes ~/.config/citadel/platform.key if absent
  citadel platform add ci --key /etc/citadel/platform.key
  citadel platform add remote-7 --public-key 3b6a27bc...   # a key made on another machine
  citadel platform add tpm-host --kind tpm           # reads the AK from /dev/tpmrm0
  citadel platform add swtpm-1 --kind tpm --tpm tcp:127.0.0.1:2321
  citadel platform add tpm-7 --kind tpm --ak-pem ak.pem    # an AK read on that machine
  citadel platform list
  citadel platform remove ci
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from citadel.cli.cmd_session import add_client_arguments, call, check_name, open_client
from citadel.cli.helptext import add_action
from citadel.cli.output import emit_json, info
from citadel.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = add_action(sub, "add", "register a platform key (sim: made if the key file does not exist)", [
        "citadel platform add build-host-1                  # makes ~/.config/citadel/platform.key if absent",
        "citadel platform add remote-7 --public-key 3b6a27bc...",
        "citadel platform add swtpm-1 --kind tpm --tpm tcp:127.0.0.1:2321",
        "citadel platform add tpm-7 --kind tpm --ak-pem ak.pem",
    ])
    p.add_argument("name", help="a name for the platform (policies may list it under attestation.platforms)")
    p.add_argument("--kind", choices=["sim", "tpm"], default="sim", help="sim (default) or tpm")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="sim: the platform key file (default: $CITADEL_PLATFORM_KEY or ~/.config/citadel/platform.key)",
    )
    source.add_argument("--public-key", metavar="HEX", help="sim: a public key made elsewhere (64 hex digits)")
    source.add_argument(
        "--tpm",
        metavar="CHANNEL",
        help="tpm: read the AK from this TPM: tcp:HOST:PORT (swtpm) or a device (default /dev/tpmrm0)",
    )
    source.add_argument("--ak-pem", type=Path, metavar="FILE", help="tpm: the AK's PEM public key, read elsewhere")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = add_action(sub, "list", "list the registered platforms",
                   ["citadel platform list", "citadel platform list --json"])
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = add_action(sub, "remove", "unregister a platform", ["citadel platform remove build-host-1"])
    p.add_argument("name")
    add_client_arguments(p)


def _public_key(args: argparse.Namespace) -> str:
    from citadel.attest import sim

    if args.public_key:
        value = args.public_key.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise UsageError(
                "--public-key takes 64 hex digits (a raw Ed25519 public key)",
                "print it on the platform with `citadel platform add NAME --key PATH --json`",
            )
        return value
    path = args.key or sim.default_platform_key_path()
    if path.exists():
        key = sim.load_platform_key(path)
    else:
        key = sim.create_platform_key(path)
        info(f"citadel: made the platform key {path} (engines on this machine sign sim evidence with it)")
    return sim.public_bytes(key).hex()


def _ak_pem(args: argparse.Namespace) -> str:
    if args.key or args.public_key:
        raise UsageError("--key and --public-key register sim platforms", "use --tpm CHANNEL or --ak-pem FILE")
    if args.ak_pem is not None:
        try:
            return args.ak_pem.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise UsageError(f"cannot read the AK file {str(args.ak_pem)!r}: {why}",
                             "give the AK's PEM public key (tpm2_readpublic -f pem), or read it with --tpm") from None
    from citadel.attest.collect.tpm import read_ak_public_pem

    return read_ak_public_pem(args.tpm).decode("ascii")


def _add_tpm(args: argparse.Namespace, pem: str) -> Dict[str, Any]:
    from citadel.cas import clientconf

    client, endpoint = open_client(args)
    with client:
        row: Dict[str, Any] = client.transport.call(
            "POST", "/v1/platforms", {"name": args.name, "kind": "tpm", "ak_pem": pem}
        )
    if endpoint.explicit:
        clientconf.remember(endpoint)
    return row


def run(args: argparse.Namespace) -> int:
    if args.action in ("add", "remove"):
        check_name(args.name, "platform")
    if args.action == "add":
        if args.kind == "tpm":
            row = _add_tpm(args, _ak_pem(args))
        elif args.tpm or args.ak_pem:
            raise UsageError("--tpm and --ak-pem register TPM platforms", "add --kind tpm")
        else:
            row = call(args, "add_platform", args.name, _public_key(args))
        if args.json:
            emit_json(row)
        elif args.kind == "tpm":
            print(f"platform {row['name']} registered: TPM attestation key ak:{row['fingerprint']}")
            print(
                "tpm: quotes prove this TPM, a fresh nonce and the boot PCRs; the engine's memory is not "
                "protected from this machine's administrator"
            )
        else:
            print(f"platform {row['name']} registered: fingerprint {row['fingerprint']}")
            print("sim mode: engines on it prove which machine they run on, not that their memory is protected")
        return 0
    if args.action == "list":
        rows = call(args, "list_platforms")
        if args.json:
            emit_json(rows)
        else:
            for row in rows:
                print(f"{row['name']}\t{row['kind']}\t{row.get('platform') or row['fingerprint']}")
        return 0
    call(args, "remove_platform", args.name)
    print(f"platform {args.name} removed")
    return 0
