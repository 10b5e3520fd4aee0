"""Messaging contracts shared by the producer (outbox relay), the consumer and the worker."""
