"""Real parts for tests, drills and adapter authors: a real nats-server, an in-process or subprocess gateway,
a fault proxy, a local cluster, a history checker and fuzzers."""
