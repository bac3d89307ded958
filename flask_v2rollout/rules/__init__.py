"""The runbook as data: the condition grammar, alert rules, gates and rollback matrices (pure)."""
