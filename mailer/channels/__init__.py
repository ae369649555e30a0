"""The ways inbound mail reaches the service besides the MTA pipe, each a thin loop
around the one handler (``mailer.operations.inbound.receive``):

  listener.py  an SMTP or LMTP server (aiosmtpd) for the bounce domain's MX or a
               local MTA's LMTP transport; it takes mail for the bounce domain only
  mailbox.py   a poller of a bounce mailbox over IMAP (handled messages marked \\Seen)
               or POP3 (handled messages deleted: POP3 has no flags)

Either answers "done" (250, a mark) only after the handler recorded the message, and
"try again later" (451, the message left as it was) when it could not. Provider
webhooks are routes of the web app (``mailer.web.webhooks``).
"""
