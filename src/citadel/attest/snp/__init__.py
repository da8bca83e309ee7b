"""AMD SEV-SNP: the attestation report layout, AMD's certificate chain, and the verifier."""
