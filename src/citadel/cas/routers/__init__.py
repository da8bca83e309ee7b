"""One router per resource: health, attest, sessions, platforms, audit."""
