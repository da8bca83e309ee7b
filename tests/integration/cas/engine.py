"""The engine's side of an attestation, with knobs to make each kind of bad request."""

from __future__ import annotations

from typing import Any, Callable, Optional

from citadel.attest import binding, client, sim

from .policies import MEASUREMENT


def attest(
    url: str,
    fingerprint: str,
    config_id: str,
    platform_key: Any,
    *,
    measurement: str = MEASUREMENT,
    debug: bool = False,
    nonce: Optional[bytes] = None,
    bind_key: Optional[bytes] = None,
    tamper: Optional[Callable[[bytes], bytes]] = None,
) -> client.ReleasedConfig:
    """Attest like the engine does; `nonce` reuses one, `bind_key` binds evidence to another key."""
    with client.CasClient(url, fingerprint) as cas:
        used = nonce if nonce is not None else cas.nonce()
        private, public = binding.generate_key_pair()
        evidence = sim.make_evidence(
            platform_key, binding.report_data(used, bind_key or public), {"engine": measurement}, debug=debug
        )
        if tamper is not None:
            evidence = tamper(evidence)
        answer = cas.transport.call(
            "POST",
            "/v1/attest",
            {
                "config_id": config_id,
                "kind": "sim",
                "nonce": client.b64(used),
                "public_key": client.b64(public),
                "evidence": client.b64(evidence),
            },
        )
        sealed = client.unb64(answer["release"], "release")
        plain = binding.open_sealed(private, sealed, context=binding.release_context(used, config_id))
        return client.parse_release(plain, config_id)
