-- edge-agent hub schema, version 1. Applied once, in a transaction, by `edge-agent hub run`
-- (and `edge-agent hub migrate`); recorded in hub_schema_version. Documented in docs/hub.md.

-- One row per agent: its latest birth/death (status.v1, or the plain online/offline of older
-- agents) and when the hub last heard anything from it.
CREATE TABLE agents (
    agent           text PRIMARY KEY,
    site            text NOT NULL,
    line            text NOT NULL,
    state           text,              -- online | offline | offline-clean
    version         text,
    config_digest   text,
    boot_id         text,
    started_at      timestamptz,
    status_ts       timestamptz,
    queue_depth     bigint,
    oldest_unsent_s double precision,
    devices         jsonb,
    status          jsonb,             -- the whole status.v1 payload (null: plain text status)
    status_at       timestamptz,       -- when the hub received the latest status
    last_seen       timestamptz NOT NULL DEFAULT now()
);

-- Every status message received (births, wills, clean stops): the agent's history.
CREATE TABLE agent_births (
    msg_hash    bytea PRIMARY KEY,     -- sha256(topic, payload): a redelivery is a no-op
    agent       text NOT NULL,
    state       text NOT NULL,
    payload     jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Readings (reading.v1, single or inside batch.v1): the id is the key; a re-sent reading is a
-- no-op. (agent, device, seq) is what gap tracking reads.
CREATE TABLE readings (
    id          uuid PRIMARY KEY,
    agent       text NOT NULL,
    site        text NOT NULL,
    line        text NOT NULL,
    device      text NOT NULL,
    seq         bigint NOT NULL,
    kind        text NOT NULL,
    value       text,
    ts          timestamptz NOT NULL,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX readings_stream ON readings (agent, device, seq);

CREATE TABLE parcels (
    id          uuid PRIMARY KEY,
    agent       text NOT NULL,
    site        text NOT NULL,
    line        text NOT NULL,
    station     text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    parcel      text NOT NULL,
    waybill     text,
    carrier     text,
    weight_g    double precision,
    flags       text[] NOT NULL DEFAULT '{}',
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parcels_station_ts ON parcels (agent, station, ts);

CREATE TABLE exceptions (
    id          uuid PRIMARY KEY,
    agent       text NOT NULL,
    site        text NOT NULL,
    line        text NOT NULL,
    station     text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    exception   text NOT NULL,
    parcel      text,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exceptions_station_ts ON exceptions (agent, station, ts);

-- The latest (retained) KPI snapshot per station, as the agent computed it.
CREATE TABLE kpi_snapshots (
    agent       text NOT NULL,
    station     text NOT NULL,
    ts          timestamptz,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, station)
);

CREATE TABLE alarms (
    msg_hash    bytea PRIMARY KEY,
    agent       text NOT NULL,
    alarm       text NOT NULL,
    ts          timestamptz,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alarms_agent ON alarms (agent, received_at);

CREATE TABLE device_states (
    agent       text NOT NULL,
    device      text NOT NULL,
    state       text NOT NULL,
    reason      text,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, device)
);

-- Messages the hub could not use (bad JSON, wrong schema, unknown topic): kept, counted.
CREATE TABLE rejects (
    msg_hash    bytea PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Gap tracking: one row per (agent, device) seq stream.
CREATE TABLE streams (
    agent       text NOT NULL,
    device      text NOT NULL,
    max_seq     bigint NOT NULL,
    checked_to  bigint NOT NULL DEFAULT 0,  -- every seq <= checked_to is present, filled or gone
    dirty       boolean NOT NULL DEFAULT true,
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, device)
);

-- A hole in a stream, as first seen. state: open -> filled (every seq arrived) or gone (the
-- agent answered a resend that the rest was purged / refused at its queue bound / unknown).
CREATE TABLE gaps (
    agent         text NOT NULL,
    device        text NOT NULL,
    seq_from      bigint NOT NULL,
    seq_to        bigint NOT NULL,
    missing       bigint NOT NULL,
    state         text NOT NULL DEFAULT 'open',
    reason        text,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    resend_at     timestamptz,
    resend_tries  integer NOT NULL DEFAULT 0,
    resend_id     uuid,
    closed_at     timestamptz,
    PRIMARY KEY (agent, device, seq_from)
);
CREATE INDEX gaps_open ON gaps (state) WHERE state = 'open';

-- Ranges an agent reported as gone in a resend response.
CREATE TABLE gone_ranges (
    agent       text NOT NULL,
    device      text NOT NULL,
    seq_from    bigint NOT NULL,
    seq_to      bigint NOT NULL,
    reason      text NOT NULL,
    request_id  uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, device, seq_from, seq_to)
);
