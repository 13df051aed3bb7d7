"""Training and evaluation plots, drawn by plotext (textual-plotext) in the terminal.

`LossPlot`: the loss of one training (all its attempts) against the
iteration, with the learning rate on a second y axis at the right (scaled to
a power of ten, so its ticks stay short). `ScorePlot`: held-out IoU, F1 and
object F1 (objects matched by centroid) per round, one line per target class
and score, with markers; a round that scores lower than the round before it on
the same held-out regions is marked ✗ in red and the warning is printed in red
under the plot (and in the border subtitle).

Both take plain data (`sessions.metrics.curve` / `round_scores` /
`regressions`), redraw only when it changed, and lay the figure out for the
size they get: the numbers go in a header line (two when narrow), axis
labels only where there are rows to spare; with no data, one dim line.
"""

from __future__ import annotations

import math
import re

from rich.console import Group
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

LOSS_RGB, LR_RGB, OTHER_RGB = (80, 170, 255), (255, 165, 0), (190, 120, 255)
IOU_RGB, F1_RGB, OBJ_RGB, WARN_RGB = (80, 170, 255), (0, 210, 120), (255, 190, 40), (255, 70, 70)
# the scores plotted per round: key, label, marker, colour
SERIES = (("iou", "IoU", "●", IOU_RGB), ("f1", "F1", "◆", F1_RGB), ("object_f1", "object F1", "▲", OBJ_RGB))
MIN_BODY = 3          # rows of plot below which only the header line is shown
LABEL_ROWS = 14       # from this many rows of plot, the x axis gets a label line
WARNED = re.compile(r"^round (\d+) ")


def rgb(c: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*c)


def pack(parts: list[Text], width: int, lines: int) -> list[Text]:
    """Header parts joined by two spaces, wrapped between parts onto at most `lines` lines (the last cut)."""
    out = [Text()]
    for part in parts:
        line = out[-1]
        if line.cell_len and line.cell_len + 2 + part.cell_len > width and len(out) < lines:
            out.append(Text())
            line = out[-1]
        if line.cell_len:
            line.append("  ")
        line.append_text(part)
    for line in out:
        line.no_wrap, line.overflow = True, "ellipsis"
    return out


class MetricPlot(PlotextPlot):
    """A plotext plot with a Rich header above it and optional red lines below it."""

    DEFAULT_CSS = """
    MetricPlot {
        width: 1fr;
        height: 1fr;
        min-height: 3;
        content-align: center middle;
    }
    """
    NOTICE = "no data yet"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._key: object = None      # the data last shown: an unchanged show() does nothing
        self.builds = 0               # figures drawn (tests and benchmarks count redraws)

    def _changed(self, key: object) -> bool:
        if key == self._key:
            return False
        self._key = key
        self.refresh()
        return True

    @property
    def empty(self) -> bool:
        raise NotImplementedError

    def header(self) -> list[Text]:
        """The numbers, as parts of one or two lines above the plot."""
        raise NotImplementedError

    def footer(self, rows: int) -> list[Text]:
        return []

    def draw(self, width: int, height: int) -> None:
        """Issue the plotext calls for a figure of width × height cells."""
        raise NotImplementedError

    def render(self) -> RenderResult:
        width, height = self.size
        if self.empty:
            return Text(self.NOTICE, style="dim", no_wrap=True, overflow="ellipsis")
        head = pack(self.header(), width, 2 if height >= 12 else 1)
        feet = self.footer(max(1, height // 4))
        body = height - len(head) - len(feet)
        if body < MIN_BODY or width < 20:
            return Group(*head, *feet)
        plt = self._plot
        plt.clear_figure()
        plt.plotsize(width, body)
        plt._set_size(width, body)  # see PlotextPlot.render: resizing needs both
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        self.draw(width, body)
        self.builds += 1
        try:
            figure = Text.from_ansi(plt.build().rstrip("\n"), no_wrap=True)
        except Exception as e:  # plotext gives up on odd sizes; the numbers are in the header anyway
            figure = Text(f"(plot unavailable: {e})", style="dim")
        return Group(*head, figure, *feet)


class LossPlot(MetricPlot):
    """Loss against iteration over the attempts of one training; lr on the right axis; the validation IoU
    (the held-apart part of the crops, which chooses the model) on the left, with the loss."""

    NOTICE = "no training loss yet"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.curves: dict[str, tuple[list[int], list[float]]] = {}
        self.title = ""

    def show(self, curves: dict[str, tuple[list[int], list[float]]], title: str) -> bool:
        """Plot `curves` ({name: (steps, values)}, as `sessions.metrics.curve` returns them) under `title`
        (the job or jobs). Returns whether anything changed (and so will be redrawn)."""
        curves = {k: (list(v[0]), list(v[1])) for k, v in (curves or {}).items() if v and len(v[0])}
        if not self._changed((title, curves)):
            return False
        self.curves, self.title = curves, title
        return True

    @property
    def empty(self) -> bool:
        return not self.curves

    def lr_scale(self) -> int:
        """Power of ten the lr axis is in (its ticks read 1.0, not 0.0001)."""
        top = max((abs(v) for v in self.curves.get("lr", ((), ()))[1]), default=0.0)
        return math.floor(math.log10(top)) if top > 0 else 0

    def header(self) -> list[Text]:
        parts = []
        for name, (_, values) in self.curves.items():
            colour = LOSS_RGB if name == "loss" else LR_RGB if name == "lr" else OTHER_RGB
            part = Text("━ ", style=rgb(colour)).append(
                f"{name} {values[-1]:.1e}" if name == "lr" else f"{name} {values[-1]:.4g}", style="bold")
            if name == "lr" and self.lr_scale():
                part.append(f" (axis ×1e{self.lr_scale()})", style="dim")
            parts.append(part)
        parts.append(Text(f"it {max(steps[-1] for steps, _ in self.curves.values())}", style="dim"))
        if self.title:
            parts.append(Text(self.title, style="dim"))
        return parts

    def draw(self, width: int, height: int) -> None:
        plt = self._plot
        scale = 10.0 ** self.lr_scale()
        for name, (steps, values) in self.curves.items():
            if name == "lr":
                plt.plot(steps, [v / scale for v in values], yside="right", marker="hd", color=LR_RGB)
            else:
                plt.plot(steps, values, marker="hd", color=LOSS_RGB if name == "loss" else OTHER_RGB)
        if height >= LABEL_ROWS:
            plt.xlabel("iteration")


class ScorePlot(MetricPlot):
    """Held-out IoU, F1 and object F1 per round; regressions marked and spelled out in red."""

    NOTICE = "no evaluation yet"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scores: list[dict] = []
        self.warnings: list[str] = []

    def show(self, scores: list[dict], warnings: list[str]) -> bool:
        """`scores` as `sessions.metrics.round_scores` returns them, `warnings` as `regressions(scores)`.
        Returns whether anything changed (and so will be redrawn)."""
        scores = [dict(s) for s in scores or [] if any(s.get(key) is not None for key, *_ in SERIES)]
        warnings = list(warnings or [])
        if not self._changed((scores, warnings)):
            return False
        self.scores, self.warnings = scores, warnings
        self.border_subtitle = Text(f"⚠ {warnings[-1]}", style=f"bold {rgb(WARN_RGB)}") if warnings else None
        return True

    @property
    def empty(self) -> bool:
        return not self.scores

    def header(self) -> list[Text]:
        last = self.scores[-1]
        parts = []
        if self.warnings:
            n = len(self.warnings)
            parts.append(Text(f"✗ {n} regression{'s' * (n > 1)}", style=f"bold {rgb(WARN_RGB)}"))
        for key, label, marker, colour in SERIES:
            if last.get(key) is not None:
                parts.append(Text(f"━{marker} ", style=rgb(colour)).append(f"{label} {last[key]:.3f}", style="bold"))
        regions = last.get("regions")
        parts.append(Text(f"round {last['round']}" + (f" · {len(regions)} held-out regions" if regions else ""),
                          style="dim"))
        return parts

    def footer(self, rows: int) -> list[Text]:
        if not self.warnings:
            return []
        style = f"bold {rgb(WARN_RGB)}"
        shown = self.warnings[-rows:]
        lines = [Text(f"⚠ {w}", style=style, no_wrap=True, overflow="ellipsis") for w in shown]
        if len(shown) < len(self.warnings):
            lines[0] = Text(f"⚠ (+{len(self.warnings) - len(shown)} earlier) {shown[0]}", style=style,
                            no_wrap=True, overflow="ellipsis")
        return lines

    def marked(self) -> dict[int, set[str]]:
        """{round: {"iou", "f1"}} that a warning names as lower than the round before."""
        out: dict[int, set[str]] = {}
        for w in self.warnings:
            m = WARNED.match(w)
            if m:
                out.setdefault(int(m.group(1)), set()).update(
                    k for k, label in (("iou", "IoU "), ("f1", "F1 ")) if label in w)
        return out

    def draw(self, width: int, height: int) -> None:
        plt = self._plot
        rounds = [s["round"] for s in self.scores]
        values = []
        targets = list(dict.fromkeys(s.get("target") for s in self.scores))
        for key, _, marker, colour in SERIES:
            pts = [(s["round"], s[key]) for s in self.scores if s.get(key) is not None]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            values += ys
            for target in targets:  # one line per target class: an envelope round is not followed by a pore one
                line = [(s["round"], s[key]) for s in self.scores if s.get(key) is not None and s.get("target") == target]
                if len(line) > 1:
                    plt.plot([x for x, _ in line], [y for _, y in line], marker="hd", color=colour)
            plt.scatter(xs, ys, marker=marker, color=colour)
        by_round = {s["round"]: s for s in self.scores}
        for r, keys in self.marked().items():
            for key in keys:
                if by_round.get(r, {}).get(key) is not None:
                    plt.scatter([r], [by_round[r][key]], marker="✗", color=WARN_RGB)
        lo, hi = min(values), max(values)
        pad = max(0.02, 0.1 * (hi - lo))
        y0, y1 = max(0.0, lo - pad), min(1.0, hi + pad)
        plt.ylim(y0, y1 if y1 > y0 else y0 + 0.05)
        first, last = min(rounds), max(rounds)
        margin = 0.5 if first == last else 0.05 * (last - first) + 0.2
        plt.xlim(first - margin, last + margin)
        every = max(1, math.ceil(len(rounds) * 5 / max(width - 8, 1)))  # ~5 cells per tick label
        ticks = rounds[::every]
        name = {s["round"]: s.get("target") or "" for s in self.scores}
        plt.xticks(ticks, [f"r{r}" + (f" {name[r][:4]}" if len(targets) > 1 else "") for r in ticks])
        if height >= LABEL_ROWS:
            plt.xlabel("round (held-out IoU, F1, object F1)")
