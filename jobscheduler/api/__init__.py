"""The gRPC adapter: decode requests, call the core, encode answers, map errors to status codes."""
