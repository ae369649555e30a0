"""Newsletter delivery: issue -> rendered once -> campaign with a frozen audience ->
batches -> one message per recipient -> transport -> recorded result.

The layers, top to bottom (written down as contracts in ``.importlinter``):

  cli/, web/     the adapters: the ``newsletter`` command, the admin API, the dashboard,
                 the public pages and the providers' webhooks; each parses input, calls an
                 operation, shows it
  channels/      inbound mail besides the pipe: the SMTP/LMTP listener, the mailbox poller
  operations/    each editor action once; returns what to queue after the commit
  dispatch.py    the glue Celery tasks call (settings -> engine config, queueing)
  the pipeline, in order:
    issues.py      parse an editor's Markdown issue (front matter + body)
    render.py      Markdown -> Jinja2 -> MJML -> HTML with CSS inlined, plus plain text (once)
    images.py      an issue's local images: read, scaled down, content-hashed for publishing
    merge.py       the per-recipient merge fields left as markers in the rendered issue
    message.py     compile the rendered issue into a MIME template; per-recipient assembly
    dkim.py        DKIM signing (RSA through OpenSSL)
    campaigns.py   create/start/pause/resume/cancel/retry campaigns (start freezes the audience)
    schedules.py   weekly slots per list and the dispatcher that starts due campaigns
    queries.py     every SQL statement that decides who gets what or changes a campaign
    sending.py     the send loop over one claimed batch, each result recorded
    outcomes.py    what a reply means for a delivery (decide), as a value
    replies.py     SMTP replies classified in one place (sent / transient / permanent)
    ratelimit.py   shared send-rate limit, per-domain cap, backoff on 4xx
    transports/    SMTP, an outbox folder of .eml files, in-memory
    reports.py     what comes back, read: DSNs, ARF complaints, auto-replies, every common
                   MTA's bounce format (flufl.bounce); one verdict per recipient
    webhooks.py    the relay providers' signed bounce and complaint events, read likewise
    bounces.py     reports tied to their deliveries (VERP, Message-ID, address) and
                   recorded; soft-bounce limit; what cannot be acted on kept unprocessed
  told to other systems (outbound webhooks):
    hooks.py       event types, payloads, Standard Webhooks signatures (pure)
    outbox.py      an event's deliveries written in the change's own transaction, queued after it
    hookdelivery.py  one signed POST with a short timeout, recorded; the sweep of lost tasks
  around it: models.py (the tables and status enums of the sending side), accounts.py
  (dashboard users, API tokens), testsend.py, celeryapp.py, migrate.py + migrations/
  ../subscribers  people: subscribers, lists, suppressions, consent, import/export
  core/          plumbing: settings, database, errors, signing, time, templates
"""
