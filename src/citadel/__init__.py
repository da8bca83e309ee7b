"""Citadel: run Python on machines you don't trust.

Sealed code and data, an engine that proves what it is to a Configuration and Attestation
Service (CAS) before it receives keys, and encrypted volumes the host cannot read or roll back.
"""

__version__ = "0.1.0"
