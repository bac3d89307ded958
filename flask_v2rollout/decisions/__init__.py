"""Acting on the rules: evaluation under a lease, auto-rollback, autopilot, notifications."""
