"""The consumer service: reads `new_order` and hands each event to Celery (see service.py)."""
