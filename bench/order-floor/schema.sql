-- Scratch tables shaped like the order path's (saga, order, lines, timeline, outbox,
-- stock, reservation, member, purchases, lots, ledger, idempotency keys), for
-- bench/order-floor/order.sql. Load into a scratch database, never a service's own.
DROP TABLE IF EXISTS i_saga, i_orders, i_lines, i_timeline, i_outbox, i_stock, i_res, i_alloc, i_members, i_purchases, i_lots, i_entries, i_idem;
CREATE TABLE i_saga (order_id text PRIMARY KEY, request_key text UNIQUE, state text, updated_at timestamptz);
CREATE TABLE i_orders (id text PRIMARY KEY, member_id text, state text, total bigint, paid bigint, payment_reference text, created_at timestamptz, updated_at timestamptz);
CREATE INDEX ON i_orders (member_id, created_at); CREATE INDEX ON i_orders (state, created_at);
CREATE TABLE i_lines (order_id text, ordinal int, sku text, qty bigint, unit bigint, PRIMARY KEY (order_id, ordinal));
CREATE TABLE i_timeline (id bigserial PRIMARY KEY, order_id text, kind text, at timestamptz); CREATE INDEX ON i_timeline (order_id);
CREATE TABLE i_outbox (id bigserial PRIMARY KEY, log_position bigint, event_type text, aggregate_id text, payload bytea, occurred_at timestamptz);
CREATE UNIQUE INDEX ON i_outbox (log_position);
CREATE TABLE i_stock (sku text PRIMARY KEY, total bigint, sellable bigint, reserved bigint);
INSERT INTO i_stock SELECT 'sku-'||g, 1000000000, 1000000000, 0 FROM generate_series(1,1000) g;
CREATE TABLE i_res (order_id text PRIMARY KEY, state text, sku text, qty bigint, expires_at timestamptz);
CREATE TABLE i_members (id text PRIMARY KEY, tier text, points bigint, version bigint);
INSERT INTO i_members SELECT 'm-'||g, 'basic', 0, 0 FROM generate_series(1,2000) g;
CREATE TABLE i_purchases (id bigserial PRIMARY KEY, member_id text, order_id text UNIQUE, amount bigint, at timestamptz); CREATE INDEX ON i_purchases (member_id, at);
CREATE TABLE i_lots (id bigserial PRIMARY KEY, member_id text, points bigint, remaining bigint, expires_at timestamptz); CREATE INDEX ON i_lots (member_id, expires_at);
CREATE TABLE i_entries (id bigserial PRIMARY KEY, member_id text, points bigint, kind text, at timestamptz); CREATE INDEX ON i_entries (member_id, at);
CREATE TABLE i_idem (scope text, request_id text, response bytea, PRIMARY KEY (scope, request_id));
