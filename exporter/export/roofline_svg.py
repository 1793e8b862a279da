"""The status page's roofline picture: one stream's speed, the hardware ceiling and the measured
point, as inline SVG on log axes (no script). Pure: figures in, markup out."""

from __future__ import annotations

import math

from exporter import human

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 300, 64, 16, 16, 40


def roofline_svg(
    stream: float,
    hardware: float,
    ridge: float,
    batch: float | None,
    batch_ceiling: float | None,
    actual: float | None,
    spread: tuple[float, float] | None = None,
) -> str:
    """Decode throughput against batch size, both axes logarithmic: the memory-bound slope of
    the one-stream ceiling (``stream × B``), the compute-bound roof, the ridge between them,
    the ceiling at the current batch, and the measured point with the spread of the active
    windows' own throughputs."""
    x_hi = max(ridge * 4, (batch or 1) * 2, 8.0)
    ys = [stream, hardware] + [v for v in (actual, batch_ceiling, *(spread or ())) if v and v > 0]
    y_lo, y_hi = min(ys) / 3, hardware * 3

    def x(b: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * math.log(max(b, 1.0)) / math.log(x_hi)

    def y(t: float) -> float:
        frac = (math.log10(t) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        return H - PAD_B - (H - PAD_T - PAD_B) * frac

    parts = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        'aria-label="Roofline: decode throughput against batch size (estimate)">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
        f'height="{H - PAD_T - PAD_B}" class="plot"/>',
    ]
    # Axes: powers of two of the batch, decades of tokens/s.
    b = 1.0
    while b <= x_hi:
        parts.append(
            f'<line x1="{x(b):.1f}" y1="{PAD_T}" x2="{x(b):.1f}" y2="{H - PAD_B}" '
            f'class="grid"/><text x="{x(b):.1f}" y="{H - PAD_B + 14}" '
            f'class="tick" text-anchor="middle">{b:g}</text>'
        )
        b *= 4 if x_hi > 256 else 2
    d = math.floor(math.log10(y_lo)) + 1
    while 10**d < y_hi:
        parts.append(
            f'<line x1="{PAD_L}" y1="{y(10**d):.1f}" x2="{W - PAD_R}" '
            f'y2="{y(10**d):.1f}" class="grid"/><text x="{PAD_L - 6}" '
            f'y="{y(10**d) + 4:.1f}" class="tick" text-anchor="end">'
            f"{human.si(10**d)}</text>"
        )
        d += 1
    parts.append(
        f'<text x="{(W + PAD_L) / 2}" y="{H - 6}" class="axis" text-anchor="middle">'
        "concurrent sequences (batch)</text>"
    )
    parts.append(
        f'<text x="14" y="{(H - PAD_B) / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {(H - PAD_B) / 2})">decode tokens/s</text>'
    )
    # The roof: memory-bound slope up to the ridge, then flat at the compute-bound maximum.
    parts.append(
        f'<polyline class="roof" points="{x(1):.1f},{y(stream):.1f} '
        f'{x(ridge):.1f},{y(hardware):.1f} {x(x_hi):.1f},{y(hardware):.1f}"/>'
    )
    parts.append(
        f'<line class="ridge" x1="{x(ridge):.1f}" y1="{PAD_T}" x2="{x(ridge):.1f}" '
        f'y2="{H - PAD_B}"/><text class="note" x="{x(ridge) + 4:.1f}" y="{PAD_T + 12}">'
        f"ridge {ridge:,.0f}</text>"
    )
    if batch and batch > 0 and batch_ceiling:
        parts.append(
            f'<line class="batch" x1="{x(batch):.1f}" y1="{PAD_T}" x2="{x(batch):.1f}" '
            f'y2="{H - PAD_B}"/><circle class="ceiling" cx="{x(batch):.1f}" '
            f'cy="{y(batch_ceiling):.1f}" r="5"><title>ceiling at batch {batch:.1f}: '
            f"{human.si(batch_ceiling)} tok/s</title></circle>"
        )
        if spread and spread[0] > 0:
            # The active windows' own throughputs: how far the measured mean moved.
            parts.append(
                f'<line class="spread" x1="{x(batch):.1f}" y1="{y(spread[0]):.1f}" '
                f'x2="{x(batch):.1f}" y2="{y(spread[1]):.1f}"><title>active windows: '
                f"{human.si(spread[0])} to {human.si(spread[1])} tok/s</title></line>"
            )
        if actual and actual > 0:
            parts.append(
                f'<circle class="measured" cx="{x(batch):.1f}" cy="{y(actual):.1f}" '
                f'r="6"><title>measured: {human.si(actual)} tok/s at batch {batch:.1f}'
                f'</title></circle><text class="note" x="{x(batch) + 9:.1f}" '
                f'y="{y(actual) + 4:.1f}">measured {human.si(actual)} tok/s</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# --- sections ----------------------------------------------------------------------------------
