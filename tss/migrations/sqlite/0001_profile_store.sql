-- Floorwire TSS profile store, SQLite. Times are Unix milliseconds (BIGINT);
-- short ordered lists (a site's TPOs and recorders) are JSON arrays in TEXT.
-- Keep in step with ../mysql and ../postgres (same tables, same columns).

CREATE TABLE store_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL);
INSERT INTO store_revision (id, revision) VALUES (1, 0);

CREATE TABLE sites (
    name VARCHAR(64) PRIMARY KEY,
    description TEXT NOT NULL,
    civic_address TEXT NOT NULL,
    tpos TEXT NOT NULL,
    recorders TEXT NOT NULL
);

CREATE TABLE users (
    name VARCHAR(64) PRIMARY KEY,
    display_name TEXT NOT NULL,
    role VARCHAR(16) NOT NULL,
    site VARCHAR(64) NOT NULL,
    password_hash TEXT
);

CREATE TABLE turret_lines (
    id VARCHAR(64) PRIMARY KEY,
    kind VARCHAR(32) NOT NULL,
    number VARCHAR(64) NOT NULL,
    label TEXT NOT NULL,
    far_end VARCHAR(64)
);
CREATE INDEX turret_lines_number ON turret_lines (number);

CREATE TABLE appearances (
    user_name VARCHAR(64) NOT NULL,
    line_id VARCHAR(64) NOT NULL,
    access_right VARCHAR(16) NOT NULL,
    button BIGINT NOT NULL,
    PRIMARY KEY (user_name, line_id)
);
CREATE INDEX appearances_line ON appearances (line_id);

CREATE TABLE speaker_channels (
    user_name VARCHAR(64) NOT NULL,
    channel BIGINT NOT NULL,
    line_id VARCHAR(64) NOT NULL,
    PRIMARY KEY (user_name, channel)
);

CREATE TABLE speed_dials (
    user_name VARCHAR(64) NOT NULL,
    position BIGINT NOT NULL,
    label TEXT NOT NULL,
    number VARCHAR(64) NOT NULL,
    PRIMARY KEY (user_name, position)
);

CREATE TABLE turrets (
    device_id VARCHAR(64) PRIMARY KEY,
    user_name VARCHAR(64),
    model VARCHAR(64) NOT NULL,
    site VARCHAR(64) NOT NULL,
    software_package VARCHAR(64),
    software_version VARCHAR(64)
);
CREATE INDEX turrets_user ON turrets (user_name);

CREATE TABLE software_packages (
    name VARCHAR(64) NOT NULL,
    version VARCHAR(64) NOT NULL,
    file_name VARCHAR(255) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE dial_plan (
    position BIGINT PRIMARY KEY,
    prefix VARCHAR(64) NOT NULL,
    route VARCHAR(16) NOT NULL,
    description TEXT NOT NULL
);

CREATE TABLE sip_credentials (
    username VARCHAR(128) PRIMARY KEY,
    device_id VARCHAR(64) NOT NULL,
    user_name VARCHAR(64) NOT NULL,
    realm VARCHAR(128) NOT NULL,
    ha1_md5 VARCHAR(32) NOT NULL,
    ha1_sha256 VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sip_credentials_device ON sip_credentials (device_id);

CREATE TABLE call_records (
    record_id VARCHAR(128) PRIMARY KEY,
    tpo VARCHAR(64) NOT NULL,
    call_id VARCHAR(255) NOT NULL,
    user_name VARCHAR(64),
    line_id VARCHAR(64),
    direction VARCHAR(16) NOT NULL,
    calling VARCHAR(64) NOT NULL,
    called VARCHAR(64) NOT NULL,
    started_at BIGINT NOT NULL,
    answered_at BIGINT,
    ended_at BIGINT NOT NULL,
    outcome VARCHAR(32) NOT NULL,
    recordings TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX call_records_started ON call_records (started_at);
CREATE INDEX call_records_user ON call_records (user_name, started_at);
CREATE INDEX call_records_line ON call_records (line_id, started_at);

CREATE TABLE changes (
    revision BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor VARCHAR(255) NOT NULL,
    entity VARCHAR(32) NOT NULL,
    entity_key VARCHAR(255) NOT NULL,
    action VARCHAR(16) NOT NULL,
    before_doc TEXT,
    after_doc TEXT,
    PRIMARY KEY (revision, seq)
);
CREATE INDEX changes_entity ON changes (entity, entity_key);

CREATE TABLE profile_versions (
    user_name VARCHAR(64) NOT NULL,
    version BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor VARCHAR(255) NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (user_name, version)
);
