"""``python -m jobscheduler.healthcheck``: run the health-check program."""

from jobscheduler.healthcheck import main

raise SystemExit(main())
