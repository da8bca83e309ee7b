"""Create, update and inspect sessions (policies) on a CAS.

A session is a YAML policy (docs/policy.md): which engines may receive which configuration,
image key and secrets. Requests are signed with your client key (made on first use in
~/.config/citadel/client.key); `citadel session whoami` prints the identity access policies name.

examples:
  citadel session validate app.yaml                 # local check, errors point at lines
  citadel session create app.yaml --cas https://cas.example:8443 --cas-fingerprint sha256:...
  citadel session show app                          # prints the hash the next update names
  citadel session update app.yaml                   # app.yaml has `predecessor: <hash>`
  citadel session schema > session.schema.json      # JSON Schema for editors
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from citadel.cli.helptext import add_action
from citadel.cli.output import emit_json, info
from citadel.errors import CitadelError, UsageError


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CAS connection")
    group.add_argument("--cas", metavar="URL", help="the CAS (default: $CITADEL_CAS_ADDR or https://127.0.0.1:8443)")
    group.add_argument(
        "--cas-fingerprint",
        metavar="SHA256",
        help="pin the CAS's key (from `citadel cas fingerprint`); remembered for this address",
    )
    group.add_argument(
        "--client-key",
        metavar="PATH",
        type=Path,
        help="your signing key (default: $CITADEL_CLIENT_KEY or ~/.config/citadel/client.key)",
    )


def open_client(args: argparse.Namespace) -> Tuple[Any, Any]:
    """(AdminClient, Endpoint) for the CAS the arguments name; the client key is made on first use."""
    from citadel.cas import clientconf
    from citadel.cas.admin_client import AdminClient
    from citadel.cas.auth import default_client_key_path, identity_of, load_or_create_client_key, public_raw

    endpoint = clientconf.resolve(args.cas, args.cas_fingerprint)
    path = args.client_key or default_client_key_path()
    key, created = load_or_create_client_key(path)
    if created:
        info(f"citadel: made your client key {path} (identity {identity_of(public_raw(key))})")
    return AdminClient(endpoint.url, endpoint.fingerprint, key), endpoint


def call(args: argparse.Namespace, method: str, *params: Any) -> Any:
    from citadel.cas import clientconf

    client, endpoint = open_client(args)
    with client:
        result = getattr(client, method)(*params)
    if endpoint.explicit:
        clientconf.remember(endpoint)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text, examples in (
        ("create", "create a session from a YAML policy", [
            "citadel session create app.yaml --cas https://cas.example:8443 --cas-fingerprint sha256:...",
            "citadel session create app.yaml --json"]),
        ("update", "replace a session (the policy names its predecessor's hash)", [
            "citadel session update app.yaml                     # app.yaml has `predecessor: <hash>`",
            "citadel session update app.yaml --predecessor $(citadel session show app --json | jq -r .hash)"]),
    ):
        p = add_action(sub, name, help_text, examples)
        p.add_argument("policy", type=Path, help="the YAML policy file ('-' for stdin)")
        if name == "update":
            p.add_argument("--predecessor", metavar="HASH", help="the current hash, if the file does not name it")
        p.add_argument("--json", action="store_true", help="print JSON")
        add_client_arguments(p)
    p = add_action(sub, "show", "print a session's policy (secrets hidden) and hash",
                   ["citadel session show app", "citadel session show app --json"])
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = add_action(sub, "list", "list the sessions you may read", ["citadel session list --cas https://cas.example:8443"])
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_arguments(p)
    p = add_action(sub, "delete", "delete a session", ["citadel session delete app"])
    p.add_argument("name")
    add_client_arguments(p)
    p = add_action(sub, "whoami", "print your client identity (for access policies)",
                   ["citadel session whoami", "citadel session whoami --check --cas https://cas.example:8443"])
    p.add_argument("--check", action="store_true", help="also ask the CAS (shows whether you are an operator)")
    add_client_arguments(p)
    add_action(sub, "schema", "print the policy's JSON Schema (for editors)",
               ["citadel session schema > session.schema.json"])
    p = add_action(sub, "validate", "check a policy locally; errors point at lines",
                   ["citadel session validate app.yaml", "sed s/v1/v2/ app.yaml | citadel session validate -"])
    p.add_argument("policy", type=Path, help="the YAML policy file ('-' for stdin)")


def _read(path: Path) -> Tuple[str, str]:
    if str(path) == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read policy {str(path)!r}: {getattr(exc, 'strerror', None) or exc}",
            "give the path of a YAML policy file",
        ) from None


#: names of sessions, services and platforms (the CAS's rule)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """Refuse a name the CAS would refuse, before any request, in words rather than a pattern."""
    if not NAME_RE.match(value):
        raise UsageError(f"{what} {value!r} is not a valid name",
                         "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def check_hash(value: str, flag: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"{flag} {value!r} is not a session hash (64 hex digits)",
                         "copy the hash `citadel session show NAME` prints")
    return text


def _print_issues(issues: List[Dict[str, Any]], source: str, remedy: str) -> int:
    for issue in issues:
        if "line" in issue or not issue.get("path"):
            where = f"{source}:{issue.get('line', 1)}:{issue.get('column', 1)}"
        else:  # a request field the CAS refused, not a place in the policy file
            where = str(issue["path"])
        print(f"citadel: error: {where}: {issue.get('message')}", file=sys.stderr)
    print(f"citadel: hint: {remedy}", file=sys.stderr)
    return 1


def _validated(path: Path) -> Tuple[str, str, Any]:
    from citadel.cas.policy.parse import parse_policy

    text, source = _read(path)
    return text, source, parse_policy(text, source)


def run(args: argparse.Namespace) -> int:
    from citadel.attest.client import CasRequestFailed
    from citadel.cas.errors import PolicyInvalid

    try:
        return _run(args)
    except PolicyInvalid as exc:
        return _print_issues(exc.issues, getattr(exc, "source", "policy"), exc.remedy)
    except CasRequestFailed as exc:
        if exc.issues:
            source = str(args.policy) if getattr(args, "policy", None) else "policy"
            return _print_issues(exc.issues, source, exc.remedy)
        raise


def _run(args: argparse.Namespace) -> int:
    action = args.action
    if action == "schema":
        from citadel.cas.policy.schema import SCHEMA

        emit_json(SCHEMA)
        return 0
    if action == "validate":
        _, source, parsed = _validated(args.policy)
        print(
            f"{source}: valid policy for session {parsed.name!r} "
            f"({len(parsed.policy.services)} services, {len(parsed.policy.secrets)} secrets)"
        )
        return 0
    if action == "whoami":
        return _whoami(args)
    if action in ("create", "update"):
        if getattr(args, "predecessor", None) is not None:
            args.predecessor = check_hash(args.predecessor, "--predecessor")
        text, source, parsed = _validated(args.policy)
        if action == "create":
            result = call(args, "create_session", text, source)
        else:
            result = call(args, "update_session", parsed.name, text, source, args.predecessor)
        if args.json:
            emit_json(result)
        else:
            print(f"session {result['name']} {action}d, generation {result['generation']}")
            print(f"hash: {result['hash']}   (the predecessor of its next update)")
        return 0
    if action == "show":
        result = call(args, "show_session", check_name(args.name, "session"))
        if args.json:
            emit_json(result)
        else:
            _show(result)
        return 0
    if action == "list":
        items = call(args, "list_sessions")
        if args.json:
            emit_json(items)
        else:
            for item in items:
                print(f"{item['name']}\t{item['hash']}\tgeneration {item['generation']}")
        return 0
    if action == "delete":
        call(args, "delete_session", check_name(args.name, "session"))
        print(f"session {args.name} deleted")
        return 0
    raise CitadelError(f"unknown action {action!r}", "see `citadel session --help`")


def _show(result: Dict[str, Any]) -> None:
    import yaml

    print(f"# session {result['name']}, generation {result['generation']}, creator {result['creator']}")
    print(f"# hash: {result['hash']}")
    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    print(yaml.dump(result["policy"], Dumper=_Dumper, sort_keys=False, default_flow_style=False).rstrip())


def _whoami(args: argparse.Namespace) -> int:
    from citadel.cas.auth import default_client_key_path, identity_of, load_or_create_client_key, public_raw

    path = args.client_key or default_client_key_path()
    key, created = load_or_create_client_key(path)
    if created:
        info(f"citadel: made your client key {path}")
    print(identity_of(public_raw(key)))
    if args.check:
        answer = call(args, "whoami")
        print(f"operator of this CAS: {'yes' if answer.get('operator') else 'no'}")
    return 0


__all__ = ["add_arguments", "run", "add_client_arguments", "call", "open_client"]
