"""Prometheus metrics of one CAS process (served at /metrics).

With several workers (`--workers`), each process counts its own; scrape them through the load
balancer's per-process targets or run one worker per replica.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "citadel_cas_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "citadel_cas_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.attestations = Counter(
            "citadel_cas_attestations",
            "Attestations by outcome and reason",
            ["kind", "outcome", "reason"],
            registry=self.registry,
        )
        self.attestation_seconds = Histogram(
            "citadel_cas_attestation_seconds",
            "Time to verify, evaluate, release and audit one attestation",
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.session_changes = Counter(
            "citadel_cas_session_changes", "Session creates, updates, deletes", ["op"], registry=self.registry
        )
        self.audit_head = Gauge(
            "citadel_cas_audit_head_seq",
            "Sequence number of the newest audit entry written by this process",
            registry=self.registry,
        )
