"""Shared plumbing, below every feature: settings, the database, errors, signing, time
and the template loader. Nothing here imports the sending side of ``mailer`` or the
``subscribers`` package (an import-linter contract in ``.importlinter`` checks it), so
both can build on it without an import circle.

  config.py     every setting, read once from NEWSLETTER_* (pydantic-settings)
  db.py         engines (SQLite made safe for concurrent workers), sessions, column types
  errors.py     the project's small error hierarchy
  signing.py    every token and MAC, with key rotation handled once
  clock.py      the one ``utcnow`` and the one "stored time to aware UTC" rule
  templates.py  the Jinja2 environments over the operator's and the shipped templates
"""
