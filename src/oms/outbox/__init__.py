"""Step 2 of an order's path: the outbox rows written with the order, the relay that hands them
to RabbitMQ (or, embedded, straight to processing), and the tools for events that could not go
on (dead letters in `new_order.dlq`, parked outbox rows)."""
