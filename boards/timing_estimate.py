"""Static timing estimate of a synthesized ECP5 netlist (Yosys JSON), every endpoint at once.

nextpnr prints one critical path per run (13-25 min at 16 lanes); this walks the netlist that
`synth_accelerator` leaves in `build/boards/<name>/top.json` with a fixed delay per cell and
per net (numbers read off nextpnr's ECP5 -6 reports: LUT 0.24 ns, block-RAM clock-to-out
5.83 ns, a routed net ~0.9 ns) and lists every register or memory input whose estimated
arrival exceeds the clock period, grouped by the signal names at both ends. It ranks paths
the way nextpnr does to within a few ns (it cannot know placement), so one Yosys run shows
all paths that need a pipeline stage, not only the worst.

    python boards/timing_estimate.py build/boards/accelerator-ulx3s-l16/top.json --mhz 100
"""

import argparse
import json
import re
import sys
from collections import defaultdict

ROUTE = 0.9          # a general-routing net
CLK_TO_Q = {"TRELLIS_FF": 0.52, "DP16KD": 5.83}      # where paths start (and end)
# combinational cells: input -> any output (LUT RAM: read address -> data; multipliers as
# unregistered)
COMB = {"LUT4": 0.24, "PFUMX": 0.24, "L6MUX21": 0.24, "CCU2C": 0.45,
        "TRELLIS_DPR16X4": 0.6, "MULT18X18D": 4.0, "ALU54B": 4.0}
CARRY_THROUGH = 0.035   # CIN -> COUT per half slice
SEQUENTIAL = set(CLK_TO_Q)               # outputs start paths, inputs end them
DEDICATED = {("PFUMX", "ALUT"), ("PFUMX", "BLUT"), ("L6MUX21", "D0"), ("L6MUX21", "D1"),
             ("CCU2C", "CIN")}            # in-slice wires: no general routing


def load(path):
    mod = json.load(open(path))["modules"]["top"]
    names = {}
    for name, net in mod["netnames"].items():
        for i, bit in enumerate(net["bits"]):
            if isinstance(bit, int) and (bit not in names or
                                         (net.get("hide_name") == 0 and len(name) < len(names[bit][0]))):
                names[bit] = (name, i)
    return mod["cells"], names


def analyse(cells, names):
    drivers, sinks = {}, defaultdict(list)
    for cname, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            for bit in bits:
                if not isinstance(bit, int):
                    continue
                if dirs.get(port) == "output":
                    drivers[bit] = (cname, port)
                else:
                    sinks[bit].append((cname, port))
    fanout = {bit: len(s) for bit, s in sinks.items()}
    arrival, origin = {}, {}                 # bit -> ns, bit -> (previous bit or None)

    def net_delay(bit, cell_type, port):
        if (cell_type, re.sub(r"\d+$", "", port)) in DEDICATED:
            return 0.0
        return ROUTE + 0.05 * min(fanout.get(bit, 1), 40)

    sys.setrecursionlimit(1_000_000)
    visiting = set()

    def arrive(bit):
        if bit in arrival:
            return arrival[bit]
        if bit not in drivers:
            arrival[bit], origin[bit] = 0.0, None
            return 0.0
        cname, port = drivers[bit]
        cell = cells[cname]
        kind = cell["type"]
        if kind in SEQUENTIAL:
            arrival[bit], origin[bit] = CLK_TO_Q[kind], None
            return arrival[bit]
        if kind not in COMB:
            arrival[bit], origin[bit] = 0.0, None
            return 0.0
        if bit in visiting:                  # a loop (should not happen): cut it
            return 0.0
        visiting.add(bit)
        best, best_in = 0.0, None
        dirs = cell.get("port_directions", {})
        for p, bits in cell["connections"].items():
            if dirs.get(p) != "input":
                continue
            if kind == "TRELLIS_DPR16X4" and not p.startswith("RAD"):
                continue
            if kind == "CCU2C" and p == "CIN":
                step = CARRY_THROUGH * 2 if port == "COUT" else 0.4
            else:
                step = COMB[kind]
            for b in bits:
                if not isinstance(b, int):
                    continue
                t = arrive(b) + net_delay(b, kind, p) + step
                if t > best:
                    best, best_in = t, b
        visiting.discard(bit)
        arrival[bit], origin[bit] = best, best_in
        return best

    analyse.arrival = arrival

    ends = []
    for cname, cell in cells.items():
        kind = cell["type"]
        ends_here = kind in SEQUENTIAL or kind == "TRELLIS_DPR16X4"
        if not ends_here:
            continue
        dirs = cell.get("port_directions", {})
        for p, bits in cell["connections"].items():
            if dirs.get(p) != "input" or p.startswith("CLK") or (
                    kind == "TRELLIS_DPR16X4" and p.startswith("RAD")):
                continue
            for b in bits:
                if isinstance(b, int):
                    ends.append((arrive(b) + net_delay(b, kind, p), cname, p, b))
    return ends, origin


def endpoint_name(cells, cname, port, names):
    cell = cells[cname]
    if cell["type"] == "TRELLIS_FF":
        return label(cell["connections"]["Q"][0], names)
    return re.sub(r"\.\d+\.\d+$", "", cname.removeprefix("device.")) + "." + re.sub(
        r"\d+$", "", port)


def label(bit, names):
    """The signal a netlist bit belongs to, without the suffixes techmapping appends."""
    name, i = names.get(bit, (f"${bit}", 0))
    name = re.split(r"_(?:TRELLIS_FF|LUT4|CCU2C|PFUMX|L6MUX21|TRELLIS_DPR16X4)", name)[0]
    return re.sub(r"\$\d+", "$", name).removeprefix("device.")


def trace(bit, origin, names, arrival=None):
    path = []
    while bit is not None:
        path.append(label(bit, names) if arrival is None else
                    f"{arrival.get(bit, 0):6.2f}  {names.get(bit, ('$' + str(bit), 0))[0]}")
        bit = origin.get(bit)
    return list(reversed(path))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist")
    ap.add_argument("--mhz", type=float, default=100.0)
    ap.add_argument("--top", type=int, default=40, help="endpoint groups to list")
    ap.add_argument("--detail", default=None,
                    help="print every net of the worst path into this destination signal")
    args = ap.parse_args(argv)
    cells, names = load(args.netlist)
    ends, origin = analyse(cells, names)
    period = 1000.0 / args.mhz
    groups = {}
    for t, cname, port, bit in ends:
        if t <= period:
            continue
        path = trace(bit, origin, names)
        key = endpoint_name(cells, cname, port, names)
        if key not in groups or groups[key][0] < t:
            groups[key] = (t, path, 1 + (groups[key][2] if key in groups else 0))
        else:
            groups[key] = (groups[key][0], groups[key][1], groups[key][2] + 1)
    worst = max((t for t, *_ in ends), default=0.0)
    print(f"{len(ends)} endpoints; estimated worst {worst:.2f} ns ({1000 / worst:.1f} MHz); "
          f"{sum(1 for t, *_ in ends if t > period)} over {period:.2f} ns "
          f"in {len(groups)} destination signals")
    if args.detail:
        t, cname, port, bit = max(e for e in ends
                                  if endpoint_name(cells, e[1], e[2], names) == args.detail)
        print(f"worst path into {args.detail} ({cname}.{port}): {t:.2f} ns")
        print("\n".join(trace(bit, origin, names, analyse.arrival)))
        return
    for dst, (t, path, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:args.top]:
        short = []
        for step in path[1:-1]:
            if "$" not in step and step not in short:
                short.append(step)
        src = re.sub(r"\.\d+\.\d+_DO([AB])\d+$", r".DO\1", path[0])
        print(f"{t:6.2f} ns  x{n:<4} {src} -> {dst}\n           via {' > '.join(short[:10])}")


if __name__ == "__main__":
    main()
