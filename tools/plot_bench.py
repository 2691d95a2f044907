#!/usr/bin/env python3
"""Draws the scale and throughput benches' CSV files (issue 16) as PNG charts.

    tools/plot_bench.py [--csv-dir DIR] [--out-dir DIR]

Reads scale.csv (and scale_ramp.csv, if there) and throughput.csv from --csv-dir (default docs/bench), as
`WG_BENCH_SCALE=... WG_BENCH_THROUGHPUT=1 cargo bench --bench container_start` writes them under
target/bench/, and writes scale.png and throughput.png to --out-dir (default docs/bench). A file that is
missing is skipped, saying so.

Needs python3 and matplotlib (`pip install matplotlib`): only to redraw the charts, not for building or
testing the project.
"""

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

# One colour and marker per daemon, the same in every chart.
STYLE = {
    "built-in": {"color": "#1f77b4", "marker": "o"},
    "wireguard-go": {"color": "#d62728", "marker": "s"},
}


def style(daemon):
    return STYLE.get(daemon, {"color": "#555555", "marker": "^"})


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_scale(csv_dir, out_dir):
    path = csv_dir / "scale.csv"
    if not path.exists():
        print(f"{path}: not there, scale.png not drawn", file=sys.stderr)
        return
    by_daemon = defaultdict(list)
    for row in read_csv(path):
        by_daemon[row["daemon"]].append(row)
    ramp_path = csv_dir / "scale_ramp.csv"
    ramp = defaultdict(list)
    if ramp_path.exists():
        for row in read_csv(ramp_path):
            ramp[row["daemon"]].append(row)

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.2))
    levels = sorted({int(r["live_tunnels"]) for rows in by_daemon.values() for r in rows})
    for k, (daemon, rows) in enumerate(sorted(by_daemon.items())):
        # Value labels above the line for the first daemon, below for the next, so that they do not collide.
        dy = 8 if k % 2 == 0 else -14
        s = style(daemon)
        # A level whose bring-up failed (a start past a limit) has no figures: a dotted line where it failed.
        for r in rows:
            if r.get("failed_at"):
                for ax in (ax_t, ax_m):
                    ax.axvline(int(r["failed_at"]), color=s["color"], linestyle=":", linewidth=1.5,
                               label=f"{daemon}: start {r['failed_at']} of {r['live_tunnels']} failed")
        rows = [r for r in rows if r["create_ms_median"]]
        if not rows:
            continue
        rows.sort(key=lambda r: int(r["live_tunnels"]))
        n = [int(r["live_tunnels"]) for r in rows]
        med = [float(r["create_ms_median"]) for r in rows]
        lo = [float(r["create_ms_median"]) - float(r["create_ms_min"]) for r in rows]
        hi = [float(r["create_ms_max"]) - float(r["create_ms_median"]) for r in rows]
        # The bring-up starts (each against the tunnels live before it) of the highest level, faint behind.
        top = max((int(r["level"]) for r in ramp.get(daemon, [])), default=0)
        pts = [(int(r["live_before"]), float(r["create_ms"])) for r in ramp.get(daemon, [])
               if int(r["level"]) == top]
        if pts:
            ax_t.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.25,
                         color=s["color"], label=f"{daemon}: each bring-up start (N before it)")
        ax_t.errorbar(n, med, yerr=[lo, hi], capsize=3, linewidth=2, markersize=6,
                      label=f"{daemon}: median of the timed starts (min–max)", **s)
        pss = [float(r["pss_kib_per_tunnel"]) / 1024 for r in rows]
        rss = [float(r["rss_kib_per_tunnel"]) / 1024 for r in rows]
        ax_m.plot(n, pss, linewidth=2, markersize=6, label=f"{daemon}: PSS", **s)
        ax_m.plot(n, rss, linewidth=1.2, linestyle="--", markersize=5, markerfacecolor="none",
                  label=f"{daemon}: RSS", **s)
        for x, y in zip(n, pss):
            ax_m.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, dy),
                          ha="center", fontsize=8, color=s["color"])
        for x, y in zip(n, med):
            ax_t.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(7, dy),
                          ha="left", fontsize=8, color=s["color"])

    for ax in (ax_t, ax_m):
        # Logarithmic past 1 (the levels spread evenly), linear below, where the first bring-up start (none
        # live before it) sits at 0.
        ax.set_xscale("symlog", linthresh=1, linscale=0.4)
        ax.set_xticks(levels)
        ax.set_xticklabels([str(n) for n in levels])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlim(-0.2, max(levels) * 1.5)
    # The axis fits the timed starts and 99% of the bring-up starts; the rest, if any, are counted.
    ramp_ms = sorted(float(r["create_ms"]) for rows in ramp.values() for r in rows)
    timed_max = max((float(r["create_ms_max"]) for rows in by_daemon.values() for r in rows
                     if r["create_ms_max"]), default=0.0)
    ymax = max(timed_max, ramp_ms[int(len(ramp_ms) * 0.99)] if ramp_ms else 0.0) * 1.15
    above = sum(1 for v in ramp_ms if v > ymax)
    ax_t.set_ylim(0, ymax)
    if above:
        ax_t.text(0.99, 0.01, f"{above} bring-up start(s) above {ymax:.0f} ms not shown",
                  transform=ax_t.transAxes, ha="right", va="bottom", fontsize=8, color="#555555")
    ax_t.set_title("createRuntime with N tunnels live")
    ax_t.set_xlabel("live tunnels (N; logarithmic)")
    ax_t.set_ylabel("createRuntime wall time (ms)")
    ax_t.grid(True, alpha=0.3)
    ax_t.legend(fontsize=8, loc="upper left")

    ax_m.set_title("daemon memory per live tunnel")
    ax_m.set_xlabel("live tunnels (N; logarithmic)")
    ax_m.set_ylabel("MiB per tunnel (sum over the N daemons / N)")
    ax_m.set_ylim(bottom=0)
    ax_m.grid(True, alpha=0.3)
    ax_m.legend(fontsize=8, loc="best")

    loads = [float(r["load1"]) for rows in by_daemon.values() for r in rows]
    fig.suptitle("wg-oci-hook: createRuntime and memory against live tunnels, per userspace daemon "
                 f"(load average {min(loads):.1f}–{max(loads):.1f})", fontsize=11)
    fig.tight_layout()
    out = out_dir / "scale.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def plot_throughput(csv_dir, out_dir):
    path = csv_dir / "throughput.csv"
    if not path.exists():
        print(f"{path}: not there, throughput.png not drawn", file=sys.stderr)
        return
    rows = read_csv(path)
    daemons = sorted({r["daemon"] for r in rows})
    directions = ["upload", "download"]

    def med(daemon, direction, key):
        v = [float(r[key]) for r in rows if r["daemon"] == daemon and r["direction"] == direction]
        return statistics.median(v) if v else 0.0

    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / len(daemons)
    for i, daemon in enumerate(daemons):
        xs = [d + (i - (len(daemons) - 1) / 2) * width for d in range(len(directions))]
        rate = [med(daemon, d, "gbit_s") for d in directions]
        cpu = [med(daemon, d, "daemon_cpu_s_per_gbit") for d in directions]
        server = [med(daemon, d, "server_cpu_s_per_gbit") for d in directions]
        s = style(daemon)
        bars = ax_r.bar(xs, rate, width, color=s["color"], label=daemon)
        ax_r.bar_label(bars, fmt="%.2f", fontsize=9)
        bars = ax_c.bar(xs, cpu, width, color=s["color"], label=f"{daemon} (the container's end)")
        ax_c.bar_label(bars, fmt="%.2f", fontsize=9, label_type="center", color="white")
        # The lab server's wireguard-go over the same runs: a black tick across each bar.
        ax_c.scatter(xs, server, marker="_", s=1400, linewidths=2.5, color="black", zorder=3,
                     label="lab server's wireguard-go, same runs" if i == 0 else None)
    for ax in (ax_r, ax_c):
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
    for ax in (ax_r, ax_c):
        ax.set_xticks(range(len(directions)))
        ax.set_xticklabels(["upload (container → server)", "download (server → container)"])
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax_r.set_title("iperf3 TCP through wg0")
    ax_r.set_ylabel("Gbit/s (received)")
    ax_r.legend(fontsize=9, loc="upper right")
    ax_c.set_title("daemon CPU per Gbit moved")
    ax_c.set_ylabel("CPU seconds (user + system) per Gbit")
    ax_c.legend(fontsize=8, loc="upper right", markerscale=0.4)
    seconds = statistics.median([float(r["seconds"]) for r in rows])
    loads = [float(r["load1"]) for r in rows]
    rounds = len({r["round"] for r in rows})
    fig.suptitle(f"wg-oci-hook: throughput per userspace daemon ({seconds:.0f} s per run, median of {rounds} "
                 f"round(s))\nthe server end is wireguard-go on the same 2-CPU machine; load average "
                 f"{min(loads):.1f}–{max(loads):.1f}, the runs' own included", fontsize=10)
    fig.tight_layout()
    out = out_dir / "throughput.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def main():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv-dir", type=Path, default=root / "docs" / "bench")
    p.add_argument("--out-dir", type=Path, default=root / "docs" / "bench")
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_scale(args.csv_dir, args.out_dir)
    plot_throughput(args.csv_dir, args.out_dir)


if __name__ == "__main__":
    main()
