"""The runbook as data: the condition grammar, alert rules, gates, rollback matrices and their loader (pure)."""
