"""Line charts drawn on the server as SVG geometry for the staff pages.

No JavaScript and no network: the template ``admin/widgets/line_chart.html`` turns a
``LineChart`` into inline SVG (scales with the page; a data table beside it serves screen
readers and anyone who wants exact numbers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 30


@dataclass
class Point:
    x: float
    y: float
    label: str
    value: int


@dataclass
class Series:
    name: str
    css_class: str
    points: list[Point] = field(default_factory=list)

    @property
    def path(self) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:.1f},{p.y:.1f}" for i, p in enumerate(self.points))


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class LineChart:
    title: str
    description: str
    labels: list[str]
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM
    right_edge: int = WIDTH - RIGHT

    @property
    def rows(self) -> list[tuple[str, list[int]]]:
        """The data as table rows: a label and one value per series."""
        return [(label, [s.points[i].value for s in self.series]) for i, label in enumerate(self.labels)]


def nice_ceiling(value: int) -> int:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1), for a tidy y axis."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def line_chart(
    *, title: str, description: str, labels: list[str], series: dict[str, tuple[str, list[int]]], x_tick_every: int
) -> LineChart:
    """Lay out ``series`` (name -> (css class, one value per label)) on shared axes."""
    top_value = nice_ceiling(max((v for _, values in series.values() for v in values), default=0))
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    count = len(labels)

    def x_at(index: int) -> float:
        return LEFT + (plot_width * index / (count - 1) if count > 1 else plot_width / 2)

    def y_at(value: int) -> float:
        return TOP + plot_height * (1 - value / top_value)

    laid_out = [
        Series(
            name=name,
            css_class=css_class,
            points=[Point(x_at(i), y_at(v), labels[i], v) for i, v in enumerate(values)],
        )
        for name, (css_class, values) in series.items()
    ]
    y_ticks = [Tick(y_at(top_value * k / 4), f"{top_value * k / 4:,.0f}") for k in range(5)]
    x_ticks = [Tick(x_at(i), labels[i]) for i in range(0, count, max(1, x_tick_every))]
    if count > 1 and x_ticks[-1].label != labels[-1] and x_at(count - 1) - x_ticks[-1].position > 60:
        x_ticks.append(Tick(x_at(count - 1), labels[-1]))
    return LineChart(
        title=title, description=description, labels=labels, series=laid_out, y_ticks=y_ticks, x_ticks=x_ticks
    )
