"""``python -m jobscheduler.timer``: run the timer program."""

from jobscheduler.timer import main

raise SystemExit(main())
