-- The probe feature's own table: proves a feature's migration runs on PostgreSQL.
CREATE TABLE probe_notes (
    note_id bigserial PRIMARY KEY,
    note text NOT NULL
);
