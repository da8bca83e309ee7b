"""The API fuzzed from its own OpenAPI document (schemathesis): no request makes the CAS fail (5xx).

Requests are signed with the operator's key, so the authenticated endpoints are explored too, and
TLS is verified against the CAS's own CA (its certificate names 127.0.0.1).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from citadel.attest.client import CasTransport
from citadel.cas.auth import default_client_key_path, load_or_create_client_key, sign_headers

from .policies import policy


class SignedAuth(requests.auth.AuthBase):
    def __init__(self, home: str) -> None:
        self.key, _ = load_or_create_client_key(default_client_key_path({"HOME": home}))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers.update(sign_headers(self.key, str(request.method), request.path_url, body))
        return request


@pytest.fixture(scope="module")
def api_schema(sqlite_deployment: Any) -> Any:
    server = sqlite_deployment.server
    with CasTransport(server.url, server.fingerprint) as transport:
        status, document = transport.request("GET", "/openapi.json")
    assert status == 200
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def signed(sqlite_deployment: Any) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the CAS's own CA
    session.auth = SignedAuth(str(sqlite_deployment.alice))
    session.verify = str(sqlite_deployment.server.state_dir / "tls" / "ca.pem")
    # something to find: one session the fuzzer may read, update or delete
    response = session.post(sqlite_deployment.server.url + "/v1/sessions", json={"policy": policy("fuzz")})
    assert response.status_code == 201, response.text
    yield session
    session.close()


@pytest.mark.slow
def test_no_server_errors(api_schema: Any, sqlite_deployment: Any, signed: requests.Session) -> None:
    """Every operation, with generated (valid and invalid) inputs: never a 5xx.

    Hypothesis drives each operation's strategy directly (schemathesis's pytest plugin does not
    run under this pytest version).
    """
    url = sqlite_deployment.server.url
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(base_url=url, session=signed, verify=signed.verify, checks=[not_a_server_error])

        run()
