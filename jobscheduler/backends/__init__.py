"""Backend adapters: where jobs actually run (Kubernetes, or local processes)."""
