"""The notifier consumer service: SMS and email notifications (issue 6 adds the senders)."""
