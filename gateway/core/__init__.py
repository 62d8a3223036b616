"""The pure core: the envelope, the stream and subject registry, admission, validation, quota accounting.

Nothing here does I/O: no grpc, nats, files or clocks (tests/test_layers.py checks it)."""
