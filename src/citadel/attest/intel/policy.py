"""Tolerances for Intel evidence: kept as an import path; the checks are kind-agnostic.

`check_tolerances` moved to `citadel.attest.policy` (it serves every evidence kind and the CAS);
this module re-exports it so existing imports keep working. Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

from citadel.attest.policy import NOT_EVALUATED, REVOKED, check_tolerances

__all__ = ["NOT_EVALUATED", "REVOKED", "check_tolerances"]
