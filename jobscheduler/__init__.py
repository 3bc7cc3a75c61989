"""jobscheduler: typed job requests in, Kubernetes batch/v1 Jobs out."""
