"""``python -m jobscheduler.webhook``: run the webhook program."""

from jobscheduler.webhook import main

raise SystemExit(main())
