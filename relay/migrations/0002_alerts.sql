-- Alerts the relay raises itself (as opposed to the incidents appliances send): for now, an
-- appliance offline for longer than the relay's grace period. Same rules as 0001: TEXT and
-- BIGINT only, ids made by the relay, times in microseconds since the Unix epoch.
--
-- An alert is open while cleared_at is NULL. At most one alert of a kind is open per appliance
-- (the partial unique index): two relay replicas raising the same alert at the same moment
-- insert one row, and the other's `INSERT ... ON CONFLICT DO NOTHING` inserts nothing.
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    appliance_id  TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('appliance_offline')),
    raised_at     BIGINT NOT NULL,
    cleared_at    BIGINT,
    detail        TEXT NOT NULL,
    FOREIGN KEY (tenant_id, appliance_id) REFERENCES appliances (tenant_id, id),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id),
    CHECK (cleared_at IS NULL OR cleared_at >= raised_at)
);
CREATE UNIQUE INDEX alerts_one_open_per_appliance ON alerts (appliance_id, kind)
    WHERE cleared_at IS NULL;
CREATE INDEX alerts_by_tenant ON alerts (tenant_id, raised_at);
