"""The gRPC edge: servicers, interceptors, and the mapping of refusals to gRPC status."""
