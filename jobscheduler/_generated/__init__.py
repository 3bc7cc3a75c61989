"""Generated protobuf and gRPC code. Do not edit: run `task proto:generate`."""
