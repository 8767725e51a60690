"""PostgreSQL migrations, numbered like SQLite's: the same version means the same data on both."""
