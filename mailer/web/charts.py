"""The dashboard's charts, as inline SVG built here: no chart library, nothing from a CDN
(the dashboard must work on a machine with no internet). Pure: plain values in, markup
out. Each bar or point carries its number (``data-value``) and a ``<title>`` saying it,
so a reader (and a test) can read what is drawn."""

from __future__ import annotations

from markupsafe import Markup, escape

from mailer.operations.overview import NEW_SUBSCRIBERS, UNSUBSCRIBES

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 16, 40
SUBSCRIBED, UNSUBSCRIBED = "#0b57d0", "#b3261e"


def _nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k that is at least ``value`` (a readable axis top)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def growth_chart(weeks: list[dict]) -> Markup:
    """Grouped bars per week: new subscribers and unsubscribes. ``weeks`` items have
    ``week_start`` (ISO date), ``subscribed`` and ``unsubscribed``."""
    n = max(len(weeks), 1)
    top = _nice_max(max([1] + [max(w[NEW_SUBSCRIBERS], w[UNSUBSCRIBES]) for w in weeks]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / n
    bar = max(slot * 0.38, 1)
    y = lambda v: TOP + plot_h - v / top * plot_h  # noqa: E731
    total_in = sum(w[NEW_SUBSCRIBERS] for w in weeks)
    total_out = sum(w[UNSUBSCRIBES] for w in weeks)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="growth-title" id="growth-chart" style="max-width:{WIDTH}px;font:11px system-ui,sans-serif">',
        f'<title id="growth-title">Per week over {len(weeks)} weeks: {total_in} new subscribers, '
        f'{total_out} unsubscribes</title>',
    ]
    for frac in (0, 0.5, 1):
        value, yy = top * frac, y(top * frac)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5ea"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#6e6e73">{value:g}</text>')
    for i, w in enumerate(weeks):
        x0 = LEFT + i * slot + (slot - 2 * bar) / 2
        for j, (key, colour, label) in enumerate(((NEW_SUBSCRIBERS, SUBSCRIBED, "new subscribers"),
                                                   (UNSUBSCRIBES, UNSUBSCRIBED, "unsubscribes"))):
            v = int(w[key])
            parts.append(
                f'<rect class="{key}" x="{x0 + j * bar:.1f}" y="{y(v):.1f}" width="{bar:.1f}" '
                f'height="{TOP + plot_h - y(v):.1f}" fill="{colour}" data-value="{v}">'
                f'<title>week of {escape(w["week_start"])}: {v} {label}</title></rect>'
            )
        if i % max(n // 6, 1) == 0:
            parts.append(f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" '
                         f'text-anchor="middle" fill="#6e6e73">{escape(w["week_start"][5:])}</text>')
    legend_y = HEIGHT - 8
    parts += [
        f'<rect x="{LEFT}" y="{legend_y - 9}" width="10" height="10" fill="{SUBSCRIBED}"/>',
        f'<text x="{LEFT + 14}" y="{legend_y}">new subscribers ({total_in})</text>',
        f'<rect x="{LEFT + 170}" y="{legend_y - 9}" width="10" height="10" fill="{UNSUBSCRIBED}"/>',
        f'<text x="{LEFT + 184}" y="{legend_y}">unsubscribes ({total_out})</text>',
        "</svg>",
    ]
    return Markup("".join(parts))


def complaint_meter(rate: float, limit: float = 0.003) -> Markup:
    """A campaign's complaint rate as a small bar, next to a line at ``limit`` (Gmail's
    0.3%): the bar's scale is twice the limit, so the line sits in the middle."""
    width, height, scale = 120, 14, 2 * limit
    filled = min(max(rate, 0.0) / scale, 1.0) * width
    over = rate >= limit
    line_x = width * limit / scale
    label = f"{rate * 100:.2f}%"
    return Markup(
        f'<span class="complaint-rate{" over" if over else ""}" data-rate="{rate:.6f}">'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{label} complaints; the limit is {limit * 100:.1f}%">'
        f'<rect x="0" y="2" width="{width}" height="{height - 4}" rx="2" fill="#f5f5f7"/>'
        f'<rect x="0" y="2" width="{filled:.1f}" height="{height - 4}" rx="2" '
        f'fill="{UNSUBSCRIBED if over else SUBSCRIBED}"/>'
        f'<line class="limit" x1="{line_x:.1f}" x2="{line_x:.1f}" y1="0" y2="{height}" stroke="#1d1d1f" '
        f'stroke-width="1.5"><title>Gmail\'s limit: {limit * 100:.1f}%</title></line></svg> '
        f'{escape(label)}</span>'
    )


OPENS, CLICKS, MACHINES = "#0b57d0", "#146c2e", "#8e8e93"


def link_chart(links: list[dict]) -> Markup:
    """Clicks per link, one row each in the issue's order: people's clicks as a bar,
    machines' as a grey bar beneath it. ``links`` items have ``index``, ``url``,
    ``clicks`` and ``machine_clicks`` (``mailer.engagement.links``)."""
    row, label_w, bar_h = 34, 250, 12
    width = WIDTH
    height = TOP + row * max(len(links), 1) + 24
    plot_w = width - label_w - RIGHT - 40
    top = _nice_max(max([1] + [max(int(k["clicks"]), int(k["machine_clicks"])) for k in links]))
    people = sum(int(k["clicks"]) for k in links)
    machines = sum(int(k["machine_clicks"]) for k in links)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="links-title" id="link-chart" style="max-width:{width}px;font:11px system-ui,sans-serif">',
        f'<title id="links-title">Clicks per link over {len(links)} links: {people} by people, '
        f'{machines} by machines</title>',
    ]
    for i, k in enumerate(links):
        y0 = TOP + i * row
        url = str(k["url"])
        shown = url if len(url) <= 40 else url[:39] + "…"
        parts.append(f'<text x="0" y="{y0 + bar_h - 1}" fill="#1d1d1f">{int(k["index"]) + 1}. {escape(shown)}'
                     f'<title>{escape(url)}</title></text>')
        for j, (key, colour, label) in enumerate((("clicks", CLICKS, "clicks by people"),
                                                   ("machine_clicks", MACHINES, "clicks by machines"))):
            v = int(k[key])
            w = v / top * plot_w
            yy = y0 + j * (bar_h + 2)
            parts.append(f'<rect class="{key}" x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h}" '
                         f'fill="{colour}" data-link="{int(k["index"])}" data-value="{v}">'
                         f'<title>link {int(k["index"]) + 1}: {v} {label}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + bar_h - 2}" fill="#6e6e73">{v}</text>')
    legend_y = height - 6
    parts += [
        f'<rect x="{label_w}" y="{legend_y - 9}" width="10" height="10" fill="{CLICKS}"/>',
        f'<text x="{label_w + 14}" y="{legend_y}">people ({people})</text>',
        f'<rect x="{label_w + 120}" y="{legend_y - 9}" width="10" height="10" fill="{MACHINES}"/>',
        f'<text x="{label_w + 134}" y="{legend_y}">machines ({machines})</text>',
        "</svg>",
    ]
    return Markup("".join(parts))


def hours_chart(hours: list[dict]) -> Markup:
    """People's opens and clicks in each hour after the start, as two lines. ``hours``
    items have ``hour``, ``opens`` and ``clicks`` (``mailer.operations.report.hourly``)."""
    n = max(len(hours), 1)
    top = _nice_max(max([1] + [max(int(h["opens"]), int(h["clicks"])) for h in hours]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(n - 1, 1)
    x = lambda i: LEFT + i * step  # noqa: E731
    y = lambda v: TOP + plot_h - v / top * plot_h  # noqa: E731
    opens = sum(int(h["opens"]) for h in hours)
    clicks = sum(int(h["clicks"]) for h in hours)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="hours-title" id="hours-chart" style="max-width:{WIDTH}px;font:11px system-ui,sans-serif">',
        f'<title id="hours-title">By the hour over the first {len(hours)} hours: {opens} opens and {clicks} clicks '
        f'by people</title>',
    ]
    for frac in (0, 0.5, 1):
        value, yy = top * frac, y(top * frac)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5ea"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#6e6e73">{value:g}</text>')
    for i, h in enumerate(hours):
        if int(h["hour"]) % 12 == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" '
                         f'fill="#6e6e73">{int(h["hour"])} h</text>')
    for key, colour, label in (("opens", OPENS, "opens"), ("clicks", CLICKS, "clicks")):
        points = " ".join(f"{x(i):.1f},{y(int(h[key])):.1f}" for i, h in enumerate(hours))
        parts.append(f'<polyline class="{key}" points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, h in enumerate(hours):
            v = int(h[key])
            if v:
                parts.append(f'<circle class="{key}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}" '
                             f'data-hour="{int(h["hour"])}" data-value="{v}"><title>hour {int(h["hour"])}: '
                             f'{v} {label}</title></circle>')
    legend_y = HEIGHT - 8
    parts += [
        f'<rect x="{LEFT}" y="{legend_y - 9}" width="10" height="10" fill="{OPENS}"/>',
        f'<text x="{LEFT + 14}" y="{legend_y}">opens ({opens})</text>',
        f'<rect x="{LEFT + 120}" y="{legend_y - 9}" width="10" height="10" fill="{CLICKS}"/>',
        f'<text x="{LEFT + 134}" y="{legend_y}">clicks ({clicks})</text>',
        "</svg>",
    ]
    return Markup("".join(parts))
