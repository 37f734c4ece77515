-- What a real shop database holds beside pgbench's tables: the things that other upgrade
-- tools lose on the way (tables without a primary key, unconstrained numerics, timestamptz,
-- large objects, sequences).
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers,
  status order_status NOT NULL DEFAULT 'new',
  total numeric NOT NULL,
  placed_at timestamptz NOT NULL DEFAULT now(),
  details jsonb
);
-- An audit log without a primary key: UPDATE and DELETE on it would not replicate.
CREATE TABLE audit_log (at timestamptz NOT NULL DEFAULT now(), who text, what text);
INSERT INTO customers (email) SELECT 'customer' || g || '@example.com' FROM generate_series(1, 1000) g;
INSERT INTO orders (customer_id, status, total, details)
SELECT 1 + g % 1000, (ARRAY['new','paid','shipped']::order_status[])[1 + g % 3], g * 1.0000000001 / 7,
       jsonb_build_object('items', g % 5 + 1)
FROM generate_series(1, 20000) g;
INSERT INTO audit_log (who, what) SELECT 'app', 'login ' || g FROM generate_series(1, 500) g;
SELECT lo_from_bytea(0, convert_to('invoice ' || g, 'UTF8')) FROM generate_series(1, 3) g;
CREATE MATERIALIZED VIEW revenue_by_status AS SELECT status, sum(total) AS revenue FROM orders GROUP BY status;
