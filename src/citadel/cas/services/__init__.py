"""The CAS's rules: routers call these; these call storage. No HTTP here."""
