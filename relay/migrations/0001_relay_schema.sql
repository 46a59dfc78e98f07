-- The relay's schema. One file for PostgreSQL and SQLite: only types and syntax both accept
-- (TEXT, BIGINT, composite keys, ON CONFLICT). Ids are TEXT chosen by the relay (no SERIAL,
-- no AUTOINCREMENT); timestamps are BIGINT microseconds since the Unix epoch (UTC); booleans
-- are BIGINT 0/1 (sqlx's Any driver cannot read SQLite BOOLEAN columns); JSON is TEXT.
-- Every tenant-level table carries tenant_id so every query can be scoped without a join.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE sites (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, id)
);

-- An appliance exists from the moment a claim code is made for it; claimed_at is set when
-- the code is redeemed. The composite foreign key keeps an appliance in its site's tenant.
CREATE TABLE appliances (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    site_id           TEXT NOT NULL,
    name              TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    claimed_at        BIGINT,
    cert_fingerprint  TEXT,
    -- health, from the appliance's status messages (status_at orders them)
    online            BIGINT NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    last_seen_at      BIGINT,
    offline_since     BIGINT,
    outbox_backlog    BIGINT NOT NULL DEFAULT 0,
    status_at         BIGINT,
    -- every record 1..=acked_seq is stored (or was evicted by the appliance): the ack
    acked_seq         BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id)
);
CREATE INDEX appliances_by_site ON appliances (tenant_id, site_id);
CREATE INDEX appliances_by_offline_since ON appliances (online, offline_since);

-- Only a SHA-256 of the code is kept.
CREATE TABLE claim_codes (
    code_hash     TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT,
    FOREIGN KEY (tenant_id, appliance_id) REFERENCES appliances (tenant_id, id)
);

-- What appliances send, once per (appliance, seq). through_seq is seq, except for an
-- eviction marker, which stands for seq..=through_seq.
CREATE TABLE records (
    tenant_id     TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    through_seq   BIGINT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    device        TEXT,
    point         TEXT,
    incident_id   BIGINT,
    body          TEXT NOT NULL,
    PRIMARY KEY (appliance_id, seq),
    FOREIGN KEY (tenant_id, appliance_id) REFERENCES appliances (tenant_id, id),
    CHECK (seq >= 1 AND through_seq >= seq)
);
CREATE INDEX records_by_time ON records (tenant_id, recorded_at, appliance_id, seq);

-- The latest known state of each incident; last_seq is the record it was taken from.
CREATE TABLE incidents (
    tenant_id     TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    incident_id   BIGINT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    severity      TEXT NOT NULL,
    title         TEXT NOT NULL,
    opened_at     BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (appliance_id, incident_id),
    FOREIGN KEY (tenant_id, appliance_id) REFERENCES appliances (tenant_id, id)
);
CREATE INDEX incidents_by_time ON incidents (tenant_id, opened_at, appliance_id, incident_id);
CREATE INDEX incidents_by_state ON incidents (tenant_id, state, opened_at);

-- Operators' notes and lifecycle steps taken at the relay.
CREATE TABLE incident_comments (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    incident_id   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    author        TEXT NOT NULL,
    step          TEXT NOT NULL CHECK (step IN ('comment', 'acknowledge', 'resolve')),
    comment       TEXT,
    FOREIGN KEY (appliance_id, incident_id) REFERENCES incidents (appliance_id, incident_id)
);
CREATE INDEX incident_comments_by_incident
    ON incident_comments (appliance_id, incident_id, created_at);

-- Only a SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
