"""The edge to NATS JetStream: events, subscriptions, dead letters, grants, the embedded server and its users."""
