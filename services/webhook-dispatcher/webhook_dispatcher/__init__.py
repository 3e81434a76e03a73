"""The webhook-dispatcher consumer service: signed webhook deliveries (issue 4 adds delivery)."""
