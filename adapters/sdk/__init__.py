"""The client SDK for department systems: the client, its retry policy, and the checkpoint keeper."""
