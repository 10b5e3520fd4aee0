"""The Celery worker service: `process_order_task` (oms_worker.tasks) on the app of
oms_worker.app."""
