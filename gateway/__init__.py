"""DutyLink gateway: gRPC in front of NATS JetStream for a city's public-safety agencies."""
