-- Connectors (the connectors service's configuration): settings as JSON text, secrets sealed
-- with AES-256-GCM by the service (the database never holds them in clear).

CREATE TABLE connectors (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    config          TEXT NOT NULL,
    sealed_secrets  BLOB NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
