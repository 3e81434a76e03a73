"""The notifier consumer service: one-time codes by SMS (Twilio) and email (SMTP)."""
