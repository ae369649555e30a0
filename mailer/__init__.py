"""Newsletter delivery: issue -> rendered once -> campaign with a frozen audience ->
batches -> one message per recipient -> transport -> recorded result.

Modules, in pipeline order:
  issues.py      parse an editor's Markdown issue (front matter + body)
  render.py      Markdown -> Jinja2 -> MJML -> HTML with CSS inlined, plus plain text (once)
  merge.py       the per-recipient merge fields left as markers in the rendered issue
  message.py     compile the rendered issue into a MIME template; per-recipient assembly
  dkim.py        DKIM signing (RSA through OpenSSL)
  campaigns.py   create/start/pause/resume/cancel/retry campaigns (start freezes the audience)
  schedules.py   weekly slots per list and the dispatcher that starts due campaigns
  queries.py     the SQL that must be right under concurrency: freeze, claim, mark, record
  sending.py     send one claimed batch through a transport and record each result
  replies.py     SMTP replies classified in one place (sent / transient / permanent)
  ratelimit.py   shared send-rate limit, per-domain cap, backoff on 4xx
  transports/    SMTP, an outbox folder of .eml files, in-memory
  bounces.py     DSNs and complaints coming back (VERP), recorded on their deliveries
  dispatch.py    the glue Celery tasks call (settings -> engine config, queueing)
  celeryapp.py   Celery configuration; the tasks themselves are in ../worker.py
Around it: config.py (settings), db.py (engines, SQLite made safe), models.py,
migrate.py + migrations/, accounts.py (dashboard users, API tokens), testsend.py,
demo.py, cli.py (the ``newsletter`` command) and web/ (the FastAPI app).
"""
