#!/usr/bin/env python3
"""Draws the two plots of docs/benchmarks.md from a `berth bench --json` report.

usage: scripts/plot_bench.py REPORT.json OUT_DIR
Writes OUT_DIR/throughput.svg (MB/s against blob size, berth and its limits)
and OUT_DIR/requests.svg (manifest requests/s against connections).
Plain SVG, no plotting library.
"""
import json
import re
import sys

report = json.load(open(sys.argv[1]))
out = sys.argv[2]
W, H, L, B, T, R = 640, 360, 70, 50, 30, 160


def units(detail):
    m = re.search(r"([\d.]+) (B|KiB|MiB|GiB)", detail)
    mult = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]
    return float(m.group(1)) * mult


def plot(name, title, xlabel, ylabel, series, xlabels):
    ymax = max(y for _, pts, _ in series for _, y in pts) * 1.1
    n = len(xlabels)
    xs = lambda i: L + (W - L - R) * (i / max(n - 1, 1))
    ys = lambda v: H - B - (H - B - T) * (v / ymax)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
           f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">{xlabel}</text>',
           f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">{ylabel}</text>']
    for k in range(6):
        v = ymax * k / 5
        svg.append(f'<text x="{L-6}" y="{ys(v)+4}" text-anchor="end">{v:.0f}</text>')
        svg.append(f'<line x1="{L}" y1="{ys(v)}" x2="{W-R}" y2="{ys(v)}" stroke="#ddd"/>')
    for i, lab in enumerate(xlabels):
        svg.append(f'<text x="{xs(i)}" y="{H-B+16}" text-anchor="middle">{lab}</text>')
    for j, (label, pts, color) in enumerate(series):
        path = " ".join(f"{'M' if i == 0 else 'L'}{xs(x)},{ys(y)}" for i, (x, y) in enumerate(pts))
        svg.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            svg.append(f'<circle cx="{xs(x)}" cy="{ys(y)}" r="3" fill="{color}"/>')
        svg.append(f'<rect x="{W-R+12}" y="{T+j*20}" width="12" height="3" fill="{color}"/>')
        svg.append(f'<text x="{W-R+30}" y="{T+j*20+5}">{label}</text>')
    svg.append("</svg>")
    open(f"{out}/{name}", "w").write("\n".join(svg))


figs = report["figures"]
sizes = sorted({units(f["detail"]) for f in figs if f["scenario"] in ("push", "pull")})
labels = [f"{s/(1<<30):.0f} GiB" if s >= 1 << 30 else f"{s/(1<<20):.0f} MiB" for s in sizes]
def series_for(pred):
    return [(sizes.index(units(f["detail"])), f["rate"]) for f in figs if pred(f)]
push_mono = series_for(lambda f: f["scenario"] == "push" and "monolithic" in f["detail"])
push_chunk = series_for(lambda f: f["scenario"] == "push" and "chunked" in f["detail"])
pull = series_for(lambda f: f["scenario"] == "pull")
nginx = [(sizes.index(units(f["detail"])), f["limit"]) for f in figs if f["scenario"] == "pull" and f.get("limit")]
sha = [(i, report["sha256_mb_s"]) for i in range(len(sizes))]
plot("throughput.svg", "Blob throughput against size", "blob size", "MB/s",
     [("pull", pull, "#0b63c5"), ("nginx, same bytes", nginx, "#999"), ("push (monolithic)", push_mono, "#c55a0b"),
      ("push (chunked)", push_chunk, "#e8a33d"), ("SHA-256, one core", sha, "#444")], labels)

man = [f for f in figs if f["scenario"] == "manifest"]
conns = sorted({int(re.search(r"(\d+) connections", f["detail"]).group(1)) for f in man})
def mseries(method, key):
    return [(conns.index(int(re.search(r"(\d+) connections", f["detail"]).group(1))), f[key])
            for f in man if f["detail"].startswith(method) and f.get(key)]
plot("requests.svg", "Manifest requests against connections", "connections", "requests/s",
     [("GET", mseries("GET", "rate"), "#0b63c5"), ("HEAD", mseries("HEAD", "rate"), "#2e9d5b"),
      ("nginx GET", mseries("GET", "limit"), "#999"), ("nginx HEAD", mseries("HEAD", "limit"), "#ccc")],
     [str(c) for c in conns])
