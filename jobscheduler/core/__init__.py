"""The service core: validation, the handler registry, lifecycle rules.

It imports neither grpc, kubernetes nor prometheus_client (an import-linter
contract checks this): adapters translate to and from these types.
"""
