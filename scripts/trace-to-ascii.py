#!/usr/bin/env python3
"""Render a --trace-events file as one ASCII row per connection.

    scripts/trace-to-ascii.py trace.json [columns]

Each row is one connection's life, left to right: = Open, ? Draining,
> Flushing, ~ Lingering, | closed (the reason follows the row). Loop-wide
instants (drain begins, drained) are listed below with their column.
"""
import json
import sys

events = json.load(open(sys.argv[1]))
width = int(sys.argv[2]) if len(sys.argv) > 2 else 64
conns, instants = {}, []
for e in events:
    if e.get("cat") == "conn":
        conns.setdefault(e["id"], []).append(e)
    elif e.get("ph") == "i":
        instants.append(e)
stamps = [e["ts"] for es in conns.values() for e in es]
t0, t1 = min(stamps), max(stamps)
scale = max((t1 - t0) / width, 1e-9)
symbol = {"Open": "=", "Draining": "?", "Flushing": ">", "Lingering": "~"}
print(f"one column = {scale / 1000:.1f} ms")
for cid, es in sorted(conns.items(), key=lambda kv: kv[1][0]["ts"]):
    row, why, start = [" "] * (width + 2), "", t0
    for e in es:
        if e["ph"] == "b":
            start = e["ts"]
            continue
        a, b = int((start - t0) / scale), int((e["ts"] - t0) / scale)
        for i in range(a, max(a, b) + 1):
            row[i] = symbol[e["name"]]
        if "closed" in e.get("args", {}):
            why = e["args"]["closed"]
            row[min(b + 1, width + 1)] = "|"
    loop, generation = cid.split(".")
    print(f"loop {loop} conn #{generation:<3} {''.join(row)} {why}")
for e in instants:
    print(f"{e['name']:>13} (loop {e['tid']}) at column {int((e['ts'] - t0) / scale)}")
