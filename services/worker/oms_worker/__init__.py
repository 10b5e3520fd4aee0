"""The Celery worker service: runs `process_order_task` (see oms_worker.app)."""
