"""Run and operate a Configuration and Attestation Service (CAS).

The CAS keeps sessions (policies) and their secrets, verifies engines' evidence, and releases a
service's configuration (image key, command, environment, injected files) only to an engine whose
evidence matches the policy. It always speaks TLS; clients pin its key's fingerprint.

examples:
  citadel cas serve                                  # state in ~/.local/share/citadel/cas, SQLite
  citadel cas serve --port 9443 --state-dir /var/lib/citadel-cas
  citadel cas serve --db-url postgresql://cas@db/cas --master-key-file /run/secrets/cas.key --workers 2
  citadel cas serve --collateral /var/cache/citadel/collateral --trust trust.json   # hardware evidence
  citadel cas fingerprint                            # what clients give as --cas-fingerprint
  citadel cas audit verify                           # check the audit log's hash chain
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List

from citadel.cli.helptext import add_action
from citadel.cli.output import emit_json, info


def _state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the CAS's state (default: $CITADEL_CAS_STATE_DIR or ~/.local/share/citadel/cas)",
    )
    parser.add_argument(
        "--db-url",
        metavar="URL",
        help="database (default: SQLite cas.db in the state directory; or postgresql://...)",
    )
    parser.add_argument(
        "--master-key-file",
        type=Path,
        metavar="PATH",
        help="the master key (default: master.key in the state directory, made on first start)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = add_action(sub, "serve", "run the CAS (HTTPS, with OpenAPI at /docs and /openapi.json)", [
        "citadel cas serve                                   # ~/.local/share/citadel/cas, SQLite, port 8443",
        "citadel cas serve --port 9443 --state-dir /var/lib/citadel-cas",
        "citadel cas serve --db-url postgresql://cas@db/cas --master-key-file /run/secrets/cas.key --workers 2",
        "citadel cas serve --collateral /var/cache/citadel/collateral --trust trust.json",
    ])
    _state_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve this certificate chain instead of the CAS's own")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument(
        "--tls-san",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP for the CAS's own certificate (repeatable)",
    )
    p.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="IDENTITY",
        help="a client identity that may register platforms (repeatable; default: your own client key)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--nonce-ttl", type=float, default=60.0, help="seconds a nonce stays valid (default 60)")
    p.add_argument("--trust", type=Path, metavar="JSON", help="trust anchors of the hardware verifiers, per kind")
    p.add_argument(
        "--collateral",
        type=Path,
        metavar="DIR",
        help="collateral cache for SGX/TDX/SEV-SNP evidence (`citadel collateral fetch` fills it; never fetched)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p = add_action(sub, "fingerprint", "print the fingerprint clients pin", [
        "citadel cas fingerprint",
        "citadel cas fingerprint --state-dir /var/lib/citadel-cas",
    ])
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the CAS's state directory")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="an operator-supplied certificate instead")
    p = add_action(sub, "migrate", "bring the database schema up to date (serve does this too)", [
        "citadel cas migrate --db-url postgresql://cas@db/cas",
    ])
    _state_arguments(p)
    p = add_action(sub, "audit", "check the audit log", ["citadel cas audit verify --state-dir /var/lib/citadel-cas"])
    audit_sub = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    v = add_action(audit_sub, "verify", "recompute the hash chain and check the head's MAC", [
        "citadel cas audit verify",
        "citadel cas audit verify --db-url postgresql://cas@db/cas --master-key-file cas.key --json",
    ])
    _state_arguments(v)
    v.add_argument("--json", action="store_true", help="print JSON")


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from citadel.cas.settings import CasSettings

    return CasSettings.build(
        state_dir=args.state_dir, db_url=args.db_url, master_key_file=args.master_key_file, **extra
    )


def _local_operator() -> List[str]:
    from citadel.cas.auth import default_client_key_path, identity_of, load_or_create_client_key, public_raw

    key, _ = load_or_create_client_key(default_client_key_path())
    return [identity_of(public_raw(key))]


def _serve(args: argparse.Namespace) -> int:
    from citadel.cas.server import serve
    from citadel.cas.settings import load_trust
    from citadel.cas.tls import format_fingerprint

    operators = args.operator or _local_operator()
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_sans=args.tls_san,
        operators=operators,
        workers=args.workers,
        nonce_ttl=args.nonce_ttl,
        log_level=args.log_level,
        trust=load_trust(args.trust),
        collateral=args.collateral,
    )

    def ready(url: str, tls: Any) -> None:
        database = (
            "PostgreSQL" if settings.database_url.startswith("postgres") else f"SQLite {settings.database_url[10:]}"
        )
        print(f"citadel CAS listening on {url}", flush=True)
        print(f"TLS fingerprint (clients pin this): {format_fingerprint(tls.fingerprint)}", flush=True)
        print(f"state: {settings.state_dir}  database: {database}", flush=True)
        print(f"operators: {', '.join(operators)}", flush=True)
        if settings.collateral is not None:
            print(f"collateral cache: {settings.collateral}", flush=True)

    serve(settings, on_ready=ready)
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from citadel.cas.settings import default_state_dir
    from citadel.cas.tls import fingerprint_of, format_fingerprint
    from citadel.errors import UsageError

    cert = args.tls_cert or (args.state_dir or default_state_dir()) / "tls" / "server.pem"
    if not cert.exists():
        raise UsageError(
            f"no CAS certificate at {cert}", "start the CAS once (`citadel cas serve`), or give --tls-cert"
        )
    print(format_fingerprint(fingerprint_of(cert)))
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from citadel.cas.services.audit_view import verify_database
    from citadel.errors import UsageError

    settings = _settings(args)
    if settings.db_url is None and not (settings.state_dir / "cas.db").exists():
        raise UsageError(f"no CAS database in {settings.state_dir}", "give --state-dir or --db-url")
    key = settings.master_key_path if settings.master_key_path.exists() else None
    summary = verify_database(settings.database_url, key)
    if args.json:
        emit_json(
            {
                "entries": summary.entries,
                "head_seq": summary.head_seq,
                "head_hash": summary.head_hash,
                "head_authenticated": summary.head_authenticated,
            }
        )
        return 0
    print(f"audit log intact: {summary.entries} entries, head {summary.head_seq} {summary.head_hash}")
    if not summary.head_authenticated and summary.entries:
        info("citadel: warning: the master key was not available, so the head's MAC was not checked")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from citadel.cas.storage import db

    settings = _settings(args)
    engine = db.make_engine(settings.database_url, pool_size=1)
    try:
        db.migrate(engine)
    finally:
        engine.dispose()
    print("database schema is current")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError:
        from citadel.errors import UsageError

        raise UsageError("the CAS needs the `cas` extra", "pip install 'citadel[cas]'") from None
    if args.action == "serve":
        return _serve(args)
    if args.action == "fingerprint":
        return _fingerprint(args)
    if args.action == "migrate":
        return _migrate(args)
    return _audit_verify(args)
