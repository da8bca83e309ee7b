"""Attestation: evidence kinds, their verifiers, and the binding between evidence and an engine's key."""
