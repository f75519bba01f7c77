"""The Nexmark benchmark: a seeded event generator, the queries as strom pipelines, DuckDB
reference answers, and the runner behind ``strom bench nexmark`` (see :mod:`.runner`)."""
