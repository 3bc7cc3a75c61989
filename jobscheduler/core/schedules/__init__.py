"""Recurring schedules: the model, the store port, cron rules, the service and the due-time loop."""
