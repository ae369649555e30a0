"""A small hierarchy of errors. Every error a user can cause is an ``InvalidInput``
(shown as one line, CLI exit code 2, HTTP 4xx); delivery errors say whether trying again
can help. Raise them ``from`` their cause so the chain is kept for operators."""


class NewsletterError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(NewsletterError):
    """A setting is wrong. The message names the setting (``NEWSLETTER_...``)."""


class InvalidInput(NewsletterError, ValueError):
    """Something a user gave us is wrong: a file, an address, a time, a CSV row."""


class NotFound(InvalidInput, LookupError):
    """A named thing (list, issue, campaign, subscriber) does not exist."""


class ConflictError(InvalidInput):
    """The request is well formed but the thing is in a state that forbids it."""


class Forbidden(InvalidInput):
    """The request does not prove who sent it: a webhook whose signature does not verify."""


class ServiceUnavailable(NewsletterError):
    """A service we depend on (the database, the broker, the relay) does not answer.
    Trying again later can help; nothing the user gave was wrong. One line naming the
    service (CLI exit code 2, HTTP 503)."""


class DeliveryError(NewsletterError):
    """Sending one message failed. ``reply`` is the SMTP reply text, when there was one."""

    def __init__(self, message: str, *, code: int | None = None, reply: str = ""):
        super().__init__(message)
        self.code = code
        self.reply = reply or message


class TransientDeliveryError(DeliveryError):
    """Trying again later can help: 4xx replies, dropped connections, timeouts."""


class PermanentDeliveryError(DeliveryError):
    """Trying again will not help: 5xx replies."""
