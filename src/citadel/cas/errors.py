"""Errors the CAS answers with: each has an HTTP status, a stable code, a cause and a remedy."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from citadel.errors import CitadelError


class CasServiceError(CitadelError):
    """A request the CAS will not carry out; rendered as {"error": {...}} with `http_status`."""

    http_status = 400
    code = "bad_request"
    kind = "error"

    def __init__(self, cause: str, remedy: str = "", *, code: Optional[str] = None) -> None:
        super().__init__(cause, remedy)
        if code is not None:
            self.code = code

    def body(self) -> Dict[str, Any]:
        return {"error": {"kind": self.kind, "code": self.code, "cause": self.cause, "remedy": self.remedy}}


class Unauthenticated(CasServiceError):
    http_status = 401
    code = "unauthenticated"


class Forbidden(CasServiceError):
    http_status = 403
    code = "forbidden"


class NotFound(CasServiceError):
    http_status = 404
    code = "not_found"


class Conflict(CasServiceError):
    http_status = 409
    code = "conflict"


class PolicyInvalid(CasServiceError):
    """A session policy failed validation; `issues` point at lines of the YAML."""

    http_status = 422
    code = "policy_invalid"

    def __init__(self, issues: List[Dict[str, Any]], source: str = "policy") -> None:
        first = issues[0] if issues else {"message": "invalid"}
        where = f"{source}:{first['line']}:{first['column']}: " if first.get("line") else f"{source}: "
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(
            f"{where}{first['message']}{more}",
            "fix the policy at the line shown; `citadel session schema` prints the schema",
        )
        self.issues = issues
        self.source = source

    def body(self) -> Dict[str, Any]:
        doc = super().body()
        doc["error"]["issues"] = self.issues
        return doc


class Refused(CasServiceError):
    """An attestation the CAS verified and refused; `code` is one of docs/attestation-protocol.md."""

    http_status = 403
    kind = "refusal"

    def __init__(self, code: str, cause: str, remedy: str = "") -> None:
        super().__init__(cause, remedy, code=code)


class StateError(CitadelError):
    """The CAS's state directory, master key, TLS files or database cannot be used."""
