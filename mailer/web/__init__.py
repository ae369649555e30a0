"""The web app (FastAPI): every route, one router module per resource, each a thin
adapter over ``mailer.operations``.

  app.py          create_app: the routers, and errors mapped to HTTP once
  deps.py         typed dependencies: settings, a session, the engine
  templating.py   the Jinja2 environment of the pages
  auth.py         API tokens; the dashboard's session cookie and CSRF token
  charts.py       the dashboard's inline SVG charts (growth, clicks per link, 72 hours)
  public/         what anyone may open: the archive, signup, unsubscribe, preferences
  api/            /api/admin: issues, campaigns, schedules, subscribers (bearer token)
  dashboard/      /admin: the editor's pages (session cookie + CSRF)
  ops.py          /healthz, /readyz, /metrics: for load balancers, healthchecks and Prometheus
  webhooks.py     /webhooks/{provider}: relay providers' bounce and complaint events (their signatures)
"""
