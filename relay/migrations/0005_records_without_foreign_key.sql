-- Records lose their foreign key (tenant_id, appliance_id) -> appliances (tenant_id, id).
--
-- Why: PostgreSQL checks a foreign key row by row (a trigger per inserted row, each running a
-- key lookup with a row lock); for a backlog drain that check was about a third of the
-- database's time per record. What guards the same two properties now, at no cost per row:
--
-- - A record's tenant is its appliance's: the one statement that inserts records
--   (relay/src/store/ingest.rs, insert_records) binds neither column; it copies tenant_id and
--   appliance_id from the appliance's own row (INSERT ... SELECT appliances.tenant_id,
--   appliances.id ... FROM appliances, batch WHERE appliances.id = $n), the row the batch's
--   transaction has locked.
-- - A record's appliance exists: it existed when the record was inserted (the same join), and
--   an appliance row is never deleted and never moves to another tenant. No statement of the
--   relay deletes an appliance or writes its tenant_id, and the database refuses both anyway:
--   every appliance is created with its claim code in one transaction, claim codes are never
--   deleted, and claim_codes (tenant_id, appliance_id) -> appliances (tenant_id, id) forbids
--   deleting or re-keying an appliance that a claim code names.
--
-- Same rules as 0001 (TEXT and BIGINT only). SQLite cannot drop a constraint, so the table is
-- rebuilt, in SQL both databases accept: the rows are set aside, the table is made again
-- exactly as in 0001 without the foreign key (so its primary key and index keep their names
-- on PostgreSQL), and the rows are put back. That copies the records twice: a one-off cost
-- paid when this migration runs, under the migration's transaction.
CREATE TABLE records_set_aside AS
    SELECT tenant_id, appliance_id, seq, through_seq, recorded_at, kind, device, point,
           incident_id, body
    FROM records;

DROP TABLE records;

-- What appliances send, once per (appliance, seq). through_seq is seq, except for an
-- eviction marker, which stands for seq..=through_seq. tenant_id and appliance_id are the
-- appliance row's (see above).
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
    CHECK (seq >= 1 AND through_seq >= seq)
);

INSERT INTO records (tenant_id, appliance_id, seq, through_seq, recorded_at, kind, device,
                     point, incident_id, body)
    SELECT tenant_id, appliance_id, seq, through_seq, recorded_at, kind, device, point,
           incident_id, body
    FROM records_set_aside;

DROP TABLE records_set_aside;

CREATE INDEX records_by_time ON records (tenant_id, recorded_at, appliance_id, seq);
