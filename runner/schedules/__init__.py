"""Recurring schedules: cron entries read from KSR_SCHEDULES (`config`), their tick
arithmetic in a time zone (`cron`), and the leader's firing of due ticks (`ticker`)."""
