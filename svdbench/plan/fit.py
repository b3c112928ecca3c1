"""Which opt presets fit on which GPU, and how fast each is expected to be.

Card sizes are as sold ("80 GB"). A card's memory is the total nvidia-smi reports for a card of that size
(CARD_TOTAL_MIB, with its source), or, for a size without a reported total, the nominal size in GiB x 15/16,
the lowest ratio among the reported cards (GDDR cards with ECC); minus a CUDA context overhead of 1.1 GiB
(the driver's view of the process,
NVML, at the end of the offload and lowmem runs of docs/benchmarks.md, when the weights were back on the
host: 1.08 and 1.10 GiB): memory outside the caching allocator's "allocated" count. A configuration fits when
its predicted peak allocated memory is at most what remains; the margin is the difference.

Time estimates are FLOPs / (the GPU's dense peak x an efficiency measured with the same opt preset on the
H100, docs/benchmarks.md: the FLOPs of that measured call divided by its median latency and the H100's
989.4 TFLOP/s). They are estimates: efficiency changes with the size of the work and with the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30
CARD_SIZES_GB = (8, 12, 16, 24, 32, 40, 48, 80, 141)
# Total memory nvidia-smi reports for a card sold as N GB, MiB: H100 80GB HBM3 81559 (also the nvidia-smi output in
# NVIDIA/nccl issue #1264), L40S 46068, A100 40GB 40960, A10 23028, T4 15360, as listed in modal-labs/modal-client
# pull request #2797 ("nvidia quotes GB on their GPUs not GiB").
CARD_TOTAL_MIB = {80: 81559, 48: 46068, 40: 40960, 24: 23028, 16: 15360}
# For other sizes: N GiB x 15/16, the lowest reported ratio (T4 15360/16384, A10 23028/24576, L40S 46068/49152).
UNREPORTED_RATIO = 15 / 16
CONTEXT_GIB = 1.1  # CUDA context and library workspaces outside the allocator's count (see the docstring)

# docs/benchmarks.md, "SVD-XT on an NVIDIA H100 (random weights)": SVD-XT 576x1024, 25 frames, 25 steps, fp16,
# guidance on. opt -> (median latency s, peak allocated GiB, peak reserved GiB).
H100_MEASURED = {
    "none": (19.37, 32.44, 60.83),
    "compile": (14.91, 32.44, 65.00),
    "offload": (21.96, 28.37, 54.67),
    "chunking": (88.05, 32.44, 64.18),
    "lowmem": (90.90, 7.56, 12.09),
    "group_offload": (26.92, 28.19, 60.97),
    "deepcache": (10.05, 38.37, 67.81),
}
# The same table's FLOPs of that call (UNet 25 steps + VAE decode of 25 frames + conditioning), TFLOP, and the
# H100 SXM's dense fp16 peak the table's MFU uses.
H100_CALL_TFLOP = 3997 + 173.6 + 2.9
H100_PEAK_TFLOPS = 989.4


def card_total_gib(card_gb: float) -> float:
    """The memory of a card sold as `card_gb` GB, GiB: reported where known, else the conservative ratio."""
    reported = CARD_TOTAL_MIB.get(int(card_gb)) if float(card_gb).is_integer() else None
    return reported / 1024 if reported is not None else card_gb * UNREPORTED_RATIO


def usable_gib(card_gb: float) -> float:
    """Device memory left for tensors on a card sold as `card_gb` GB."""
    return card_total_gib(card_gb) - CONTEXT_GIB


def efficiency(opt_name: str) -> float | None:
    """Share of the peak FLOP rate a whole call achieved with this preset on the H100 (None: not measured).
    For DeepCache it is an effective figure: full-UNet FLOPs over a latency in which most blocks were skipped."""
    measured = H100_MEASURED.get(opt_name)
    if measured is None:
        return None
    return H100_CALL_TFLOP / (measured[0] * H100_PEAK_TFLOPS)


def reserved_ratios() -> dict[str, float]:
    """Peak reserved / peak allocated of each measured preset (allocator behaviour, for information)."""
    return {name: reserved / allocated for name, (_, allocated, reserved) in H100_MEASURED.items()}


@dataclass
class FitRow:
    """One preset: its predicted peak and whether it fits each card (margin in GiB), or why it is not modelled."""

    opt: str
    peak_gib: float | None = None
    peak_phase: str | None = None
    reason: str | None = None  # set when not modelled
    margins_gib: dict[str, float] = field(default_factory=dict)  # card "80" -> usable - peak
    efficiency: float | None = None
    time_s: float | None = None

    @property
    def modelled(self) -> bool:
        return self.peak_gib is not None

    def fits(self, card: str) -> bool:
        return self.margins_gib.get(card, -1.0) >= 0

    def to_dict(self) -> dict:
        return {
            "opt": self.opt,
            "status": "modelled" if self.modelled else "not modelled",
            "reason": self.reason,
            "peak_gib": self.peak_gib,
            "peak_phase": self.peak_phase,
            "cards": {
                card: {"fits": self.fits(card), "margin_gib": margin} for card, margin in self.margins_gib.items()
            },
            "efficiency": self.efficiency,
            "time_s": self.time_s,
        }


def fit_row(opt: str, peak_gib: float, peak_phase: str) -> FitRow:
    margins = {str(card): usable_gib(card) - peak_gib for card in CARD_SIZES_GB}
    return FitRow(opt=opt, peak_gib=peak_gib, peak_phase=peak_phase, margins_gib=margins, efficiency=efficiency(opt))


def fitting(rows: list[FitRow], memory_gib: float) -> list[FitRow]:
    """The modelled presets whose peak fits in `memory_gib` of device memory (less the context overhead),
    fastest first; presets without a measured efficiency come last."""
    room = memory_gib - CONTEXT_GIB
    chosen = [row for row in rows if row.peak_gib is not None and row.peak_gib <= room]
    return sorted(chosen, key=lambda row: (row.efficiency is None, -(row.efficiency or 0.0), row.peak_gib))
