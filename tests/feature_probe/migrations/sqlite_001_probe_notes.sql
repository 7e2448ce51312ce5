-- The probe feature's own table: proves a feature's migration runs on SQLite.
CREATE TABLE probe_notes (
    note_id INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
