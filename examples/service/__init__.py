"""A notes API on FastAPI: settings, a database and a cache, declared once."""
