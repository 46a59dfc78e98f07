-- HQ operators' incident steps on their way to appliances (acknowledge, resolve): the command
-- queue of the relay. Same rules as 0001: TEXT and BIGINT only, ids made by the relay, times
-- in microseconds since the Unix epoch.
--
-- A row is written in the transaction of the step itself (Store::step_incident_with_downlink),
-- so the relay never shows a step its appliance cannot hear of. sent_at is the last time a
-- replica handed it to the broker (sends counts them); done_at is set, in the transaction of
-- the batch, when a record from the appliance shows the incident at or past the step. Until
-- then the relay sends it again: when the appliance comes back online, and periodically.
CREATE TABLE downlinks (
    command_id    TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    incident_id   BIGINT NOT NULL,
    step          TEXT NOT NULL CHECK (step IN ('acknowledge', 'resolve')),
    author        TEXT NOT NULL,
    comment       TEXT,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT,
    sends         BIGINT NOT NULL DEFAULT 0,
    done_at       BIGINT,
    FOREIGN KEY (tenant_id, appliance_id) REFERENCES appliances (tenant_id, id),
    FOREIGN KEY (appliance_id, incident_id) REFERENCES incidents (appliance_id, incident_id)
);
-- What ingestion completes and an appliance coming back online is sent again.
CREATE INDEX downlinks_pending_by_incident ON downlinks (appliance_id, incident_id)
    WHERE done_at IS NULL;
-- What the periodic sweep sends again.
CREATE INDEX downlinks_pending_by_age ON downlinks (created_at) WHERE done_at IS NULL;
