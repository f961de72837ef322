"""Ready-made ways for an application to use dbledger.

- ``dbledger.integrations.startup.migrate_or_exit``: run migrations before the server listens;
  log and exit 1 on any failure (no framework needed).
- ``dbledger.integrations.fastapi``: a router with ``GET /api/db/version`` and the probes
  ``GET /health/live`` (liveness), ``GET /health/ready`` and ``GET /health`` (readiness), and a
  lifespan that migrates before a FastAPI application accepts traffic.
- ``dbledger.integrations.views``: what those endpoints show, and what makes readiness fail
  (``HealthPolicy``), with no web framework.
- ``dbledger.integrations.pytest_plugin``: the pytest plugin (entry point ``pytest11``, opt-in with
  ``dbledger_migrations``): a migrated database per test, and the built-in migration checks
  (``dbledger.integrations.pytest_fixtures``).

Each module imports its framework only when imported itself.
"""
