"""The ops surface: readiness state and the health/metrics HTTP sidecar."""
