"""Draws docs/bench.png from docs/bench.json: throughput of every configuration (log scale, the
peers are orders of magnitude apart) and the time each adds to a stream's first byte."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"direct": "#9e9e9e", "envoy": "#1f77b4", "peer": "#d62728"}


def main(source, target):
    with open(source) as f:
        report = json.load(f)
    rows = report["configurations"]
    names = [r["name"] for r in rows]
    colours = [COLOURS.get(r["kind"], "#1f77b4") for r in rows]
    highlight = [r["name"] == "Envoy + full suite" for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.6), sharey=True)
    y = list(range(len(rows)))[::-1]

    rps = [r["c16"]["rps"] for r in rows]
    bars = left.barh(y, rps, color=colours)
    for bar, bold in zip(bars, highlight):
        if bold:
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
    left.set_xscale("log")
    left.set_xlabel("requests/s, 16 connections (log scale, higher is better)")
    left.set_yticks(y)
    left.set_yticklabels(names)
    for yi, value in zip(y, rps):
        left.text(value, yi, f" {value:,.0f}", va="center", fontsize=8)

    added = [r["stream"]["added_ttfb_p50_ms"] for r in rows]
    right.barh(y, added, color=colours)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xscale("symlog", linthresh=1.0)
    right.set_xlabel("added time to first byte of a stream, p50 ms vs bare Envoy (lower is better)")
    for yi, value in zip(y, added):
        right.text(value, yi, f" {value:+.2f}", va="center", fontsize=8)

    ratios = report["ratios"]
    title = "Non-streaming throughput and streaming latency on one mock provider, same run"
    if ratios.get("full_suite_vs_bare_rps") is not None:
        title += f"\nfull suite = {ratios['full_suite_vs_bare_rps']:.2f}x bare Envoy"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
