"""The audit consumer service: the audit log (issue 5 adds the writer)."""
