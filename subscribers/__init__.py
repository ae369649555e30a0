"""People: subscribers, lists and memberships, suppressions, consent and tokens,
import/export. This package never sends mail; it hands addresses to ``mailer``."""
