"""The REST API: accounts, 2FA, API keys, webhooks and audit over PostgreSQL, Redis and RabbitMQ."""
