"""SQLite migrations, one module per schema version (modules ship in every wheel; .sql files would not)."""
