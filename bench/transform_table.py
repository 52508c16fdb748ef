#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Reads herald-bench JSON files of fanout runs with and without --transform and prints the
Markdown table of scripts/bench.sh's "cost of subscription transforms" (median per variant)."""
import json
import sys

runs = {}
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            for r in json.load(f):
                runs.setdefault(r["scenario"], []).append(r)
    except (OSError, ValueError):
        pass


def median(name):
    rs = sorted((r for r in runs.get(name, []) if r["ok"]),
                key=lambda r: r["results"]["del_msgs_per_s"])
    return rs[len(rs) // 2] if rs else None


base = median("fanout+none") or median("fanout")
print("| subscribers ask for | payload | deliveries/s | vs. no transform, same payloads"
      " | Herald CPU | lost |")
print("|---|---|---|---|---|---|")
for name in ["fanout", "fanout+none", "fanout+filter", "fanout+fields", "fanout+rate",
             "fanout+conflate", "fanout+batch"]:
    r = median(name)
    if not r:
        continue
    x = r["results"]
    labels = {"fanout": "nothing (plain fanout)", "fanout+none": "nothing, map payloads"}
    label = labels[name] if name in labels else "`%s`" % name.split("+")[1]
    ratio = "%.2fx" % (x["del_msgs_per_s"] / base["results"]["del_msgs_per_s"]) if base else "-"
    print("| %s | %d B | %s | %s | %.0f%% | %d |" % (
        label, r["params"]["size"], "{:,.0f}".format(x["del_msgs_per_s"]), ratio,
        x["broker_cpu_pct"], x["lost"]))
