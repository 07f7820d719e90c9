"""A module that fails while it is imported, for the command line tests."""

raise RuntimeError("configuration missing: DATABASE_URL")
