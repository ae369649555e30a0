"""``python -m mailer.cli``: the ``newsletter`` command."""

from mailer.cli import main

main()
