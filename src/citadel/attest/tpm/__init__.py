"""TPM 2.0: quote structures, Citadel's TPM evidence container, and the verifier."""
