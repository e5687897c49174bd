-- The example resource. The idempotency key is unique so a retried create is absorbed by
-- INSERT ... ON CONFLICT in the same transaction as the insert (no separate idempotency store);
-- request_sha256 lets a reused key with a different body be refused.
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    quantity integer NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    idempotency_key text UNIQUE CHECK (char_length(idempotency_key) BETWEEN 1 AND 128),
    request_sha256 text,
    created_at timestamptz NOT NULL DEFAULT now()
);
