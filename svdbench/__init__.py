"""svdbench: what Stable Video Diffusion costs, and what each optimization buys."""

__version__ = "0.1.0"
