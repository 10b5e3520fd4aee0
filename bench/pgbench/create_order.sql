-- The writes of one POST /orders/ (no Idempotency-Key): the order row and its outbox event in
-- one transaction, as OrderService.create issues them. The ids are made client-side (two
-- random 64-bit halves) like the API does, so both rows share the order id without an extra
-- round trip. :user_id is set by the harness (-D user_id=...).
\set hi random(0, 9223372036854775806)
\set lo random(0, 9223372036854775806)
\set ehi random(0, 9223372036854775806)
\set elo random(0, 9223372036854775806)
BEGIN;
INSERT INTO orders (id, user_id, items, total_price, status, created_at, updated_at, processed_at, version)
VALUES ((lpad(to_hex(:hi::bigint), 16, '0') || lpad(to_hex(:lo::bigint), 16, '0'))::uuid, :user_id,
        '[{"name": "book", "quantity": 2}, {"name": "pen", "quantity": 1}]'::jsonb, 21.40,
        'PENDING', now(), now(), NULL, 1);
INSERT INTO outbox_events (id, event_type, aggregate_id, payload, headers, created_at, sent_at, attempts)
VALUES ((lpad(to_hex(:ehi::bigint), 16, '0') || lpad(to_hex(:elo::bigint), 16, '0'))::uuid, 'order.created',
        (lpad(to_hex(:hi::bigint), 16, '0') || lpad(to_hex(:lo::bigint), 16, '0'))::uuid,
        '{"event": "order.created", "version": 1, "event_id": "00000000-0000-0000-0000-000000000000", "order_id": "00000000-0000-0000-0000-000000000000", "occurred_at": "2025-01-01T00:00:00+00:00"}'::jsonb,
        '{}'::jsonb, now(), NULL, 0);
END;
