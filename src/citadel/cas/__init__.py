"""The Configuration and Attestation Service: policies (sessions), attestation, configuration release.

Layers (FastAPI full-stack template habits): `routers/` parse HTTP and call `services/`; services
hold the rules and call `storage/` (SQLAlchemy, Alembic migrations). Pure pieces sit beside them:
`policy/` (the session language), `envelope` (encryption under the master key), `audit` (the hash
chain), `nonces`, `auth` (signed requests), `secrets` (generation), `tls` (the CA and the pin).
Importing this package imports nothing heavy; `app` and `server` need the `cas` extra.
"""
