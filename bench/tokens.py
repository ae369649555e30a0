"""Cost of the per-recipient unsubscribe token (HMAC), next to the message assembly it
sits beside on the send path. Prints figures; asserts nothing."""

from __future__ import annotations

import time

from mailer.core import signing


def main(n: int = 50_000) -> None:
    start = time.perf_counter()
    for i in range(n):
        signing.unsubscribe_token("secret", i + 1, 9)
    made = (time.perf_counter() - start) / n
    token = signing.unsubscribe_token("secret", 1, 9)
    start = time.perf_counter()
    for _ in range(n):
        signing.read_unsubscribe_token(["secret"], token)
    read = (time.perf_counter() - start) / n
    print(f"unsubscribe_token: {made * 1e6:.1f} µs/recipient; read_unsubscribe_token: {read * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
