"""Step 3: what travels through RabbitMQ and how it is laid out: the versioned event contract,
AMQP message translations, the exchange/queue topology, queue depth and the Celery app settings
(task name and queue) shared by the consumer, which sends tasks, and the worker, which runs them."""
