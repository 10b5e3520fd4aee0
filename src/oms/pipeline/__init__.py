"""The order pipeline: outbox relay, RabbitMQ topology, processing, Celery configuration."""
