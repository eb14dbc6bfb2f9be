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
    anchor: str = "middle"  # SVG text-anchor: the outermost labels stay inside the chart


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


Y_INTERVALS = 4


def nice_step(value: float) -> int:
    """The smallest whole 1/2/5 x 10^n at or above ``value``: a tidy gap between y ticks."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def line_chart(
    *, title: str, description: str, labels: list[str], series: dict[str, tuple[str, list[int]]], x_tick_every: int
) -> LineChart:
    """Lay out ``series`` (name -> (css class, one value per label)) on shared axes."""
    step = nice_step(max((v for _, values in series.values() for v in values), default=0) / Y_INTERVALS)
    top_value = step * Y_INTERVALS
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
    y_ticks = [Tick(y_at(step * k), f"{step * k:,}") for k in range(Y_INTERVALS + 1)]
    # Ticks counted back from the newest label, which is always shown.
    shown = sorted(range(count - 1, -1, -max(1, x_tick_every)))
    x_ticks = [Tick(x_at(i), labels[i]) for i in shown]
    if x_ticks and count > 1:
        x_ticks[-1].anchor = "end"
        if shown[0] == 0:
            x_ticks[0].anchor = "start"
    return LineChart(
        title=title, description=description, labels=labels, series=laid_out, y_ticks=y_ticks, x_ticks=x_ticks
    )
