"""Newsletter delivery: issue -> rendered once -> campaign with a frozen audience ->
batches -> one message per recipient -> transport -> recorded result.

Modules, in pipeline order:
  issues.py     parse an editor's Markdown issue (front matter + body)
  render.py     Markdown -> Jinja2 -> MJML -> HTML with CSS inlined, plus plain text (once)
  message.py    compile the rendered issue into a MIME template; per-recipient assembly
  campaigns.py  create/start/pause/resume/cancel campaigns (freeze the audience)
  queries.py    the concurrency-sensitive SQL: freeze, claim, record
  sending.py    send one claimed batch through a transport and record each result
  transports/   SMTP, outbox folder of .eml files, in-memory
"""
