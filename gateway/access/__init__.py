"""Who is calling and what they may do: identities (tokens, client certificates, revocation) and the policy in force."""
