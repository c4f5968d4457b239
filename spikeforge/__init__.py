"""spikeforge: spiking-network accelerator cores, golden model to bitstream."""

__version__ = "0.1.0"
