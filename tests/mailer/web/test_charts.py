"""The report's charts (``mailer.web.charts``): pure functions, plain values in, SVG out.
Read back with an XML parser: what is drawn is what was given, in proportion."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mailer.web.charts import hours_chart, link_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def test_link_chart_draws_people_and_machines_apart_in_proportion():
    links = [{"index": 0, "url": "https://example.com/one?a=1&b=<2>", "clicks": 10, "readers": 7, "machine_clicks": 5},
             {"index": 1, "url": "https://example.com/" + "x" * 80, "clicks": 2, "readers": 2, "machine_clicks": 0}]
    svg = parse(link_chart(links))  # parses: the URL's & and < are escaped
    assert svg.get("id") == "link-chart"
    assert svg.find(f"{SVG}title").text == "Clicks per link over 2 links: 12 by people, 5 by machines"
    bars = {(r.get("class"), r.get("data-link")): r for r in svg.iter(f"{SVG}rect") if r.get("data-link")}
    assert {k: int(r.get("data-value")) for k, r in bars.items()} == {
        ("clicks", "0"): 10, ("machine_clicks", "0"): 5, ("clicks", "1"): 2, ("machine_clicks", "1"): 0}
    width = {k: float(r.get("width")) for k, r in bars.items()}
    assert width[("clicks", "0")] == pytest.approx(2 * width[("machine_clicks", "0")], abs=0.2)
    assert width[("clicks", "0")] == pytest.approx(5 * width[("clicks", "1")], abs=0.5)
    assert width[("machine_clicks", "1")] == 0
    labels = [t for t in svg.iter(f"{SVG}text") if t.find(f"{SVG}title") is not None]
    assert labels[0].find(f"{SVG}title").text == links[0]["url"]  # the whole URL on hover
    assert labels[1].text.endswith("…") and len(labels[1].text) < 50  # a long one shortened


def test_link_chart_of_no_clicks_draws_empty_bars():
    svg = parse(link_chart([{"index": 0, "url": "https://example.com", "clicks": 0, "readers": 0,
                             "machine_clicks": 0}]))
    assert [float(r.get("width")) for r in svg.iter(f"{SVG}rect") if r.get("data-link")] == [0.0, 0.0]


def hours(values: dict[int, tuple[int, int]], n: int = 72) -> list[dict]:
    return [{"hour": h, "opens": values.get(h, (0, 0))[0], "clicks": values.get(h, (0, 0))[1],
             "machine_opens": 99, "machine_clicks": 99} for h in range(n)]


def test_hours_chart_has_a_point_per_hour_and_marks_the_busy_ones():
    svg = parse(hours_chart(hours({0: (4, 1), 3: (2, 2), 71: (1, 0)})))
    assert svg.get("id") == "hours-chart"
    assert svg.find(f"{SVG}title").text == "By the hour over the first 72 hours: 7 opens and 3 clicks by people"
    lines = {p.get("class"): p.get("points").split() for p in svg.iter(f"{SVG}polyline")}
    assert set(lines) == {"opens", "clicks"} and all(len(points) == 72 for points in lines.values())
    ys = {key: [float(p.split(",")[1]) for p in points] for key, points in lines.items()}
    zero = ys["opens"][1]
    assert ys["opens"][0] < ys["opens"][3] < ys["opens"][71] < zero  # higher is more (SVG's y grows down)
    height = zero - ys["opens"][0]  # coordinates are rounded to 0.1
    assert 2 * (zero - ys["opens"][3]) == pytest.approx(height, abs=0.2)
    assert 4 * (zero - ys["opens"][71]) == pytest.approx(height, abs=0.4)
    xs = [float(p.split(",")[0]) for p in lines["opens"]]
    assert xs == sorted(xs) and len(set(xs)) == 72
    points = sorted((c.get("class"), int(c.get("data-hour")), int(c.get("data-value"))) for c in svg.iter(f"{SVG}circle"))
    assert points == [("clicks", 0, 1), ("clicks", 3, 2), ("opens", 0, 4), ("opens", 3, 2), ("opens", 71, 1)]
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.text and t.text.endswith(" h")]
    assert ticks == ["0 h", "12 h", "24 h", "36 h", "48 h", "60 h"]
    # Machines are never drawn: with people's zeros, both lines lie flat on the axis.
    quiet = parse(hours_chart(hours({})))
    assert list(quiet.iter(f"{SVG}circle")) == []
    assert {p.split(",")[1] for line in quiet.iter(f"{SVG}polyline") for p in line.get("points").split()} == {"200.0"}
