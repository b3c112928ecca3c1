"""Full-reference comparisons: PSNR and SSIM, and the paired decode check of `decode_chunk_size`.

The paired check decodes the same latents twice, once with every frame in one VAE chunk and once with
the run's chunk size; the PSNR between the two videos is what chunking alone costs (the VAE's temporal
layers only see their own chunk, which is why small chunks flicker).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# PSNR of identical inputs. JSON has no infinity, so identical inputs get a finite value above anything
# a real difference can reach: one grey level off in one of 10**12 values still scores under 170 dB.
PSNR_IDENTICAL = 200.0
# SSIM constants of Wang et al. 2004: an 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def _same_shape(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(
            f"PSNR and SSIM compare two uint8 arrays of one shape; got {a.dtype} {a.shape} and {b.dtype} {b.shape}. "
            "Resize or convert one of them first."
        )
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images or videos of the same shape, peak 255, over all values.

    Identical inputs give PSNR_IDENTICAL (200 dB) instead of infinity, which JSON cannot hold.
    """
    a, b = _same_shape(a, b)
    # cv2.norm sums squared differences of uint8 data exactly (integer blocks, double total).
    sse = cv2.norm(np.ascontiguousarray(a).reshape(-1, 1), np.ascontiguousarray(b).reshape(-1, 1), cv2.NORM_L2SQR)
    if sse == 0:
        return PSNR_IDENTICAL
    return 10.0 * math.log10(255.0**2 * a.size / sse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of two uint8 H x W x C images, per channel, averaged over channels and pixels.

    Gaussian window 11 x 11, sigma 1.5, reflected borders; the usual constants for peak 255.
    """
    a, b = _same_shape(a, b)
    x, y = a.astype(np.float32), b.astype(np.float32)

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + _SSIM_C1) * (2 * cxy + _SSIM_C2)
    den = (mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)
    return float((num / den).mean(dtype=np.float64))


def decode_to_uint8(pipe, latents, num_frames: int, decode_chunk_size: int) -> np.ndarray:
    """Latents to uint8 frames (B x T x H x W x 3) exactly as the pipeline's decode and postprocessing do."""
    import torch

    from svdbench.media.video import BadFrames, quantize

    with torch.no_grad():
        frames = pipe.decode_latents(latents, num_frames, decode_chunk_size)
        video = np.asarray(pipe.video_processor.postprocess_video(video=frames, output_type="np"))
    if not np.isfinite(video).all():
        raise BadFrames(
            f"Decoding with decode_chunk_size={decode_chunk_size} gave NaN or Inf values (fp16 overflow is the "
            "usual cause: try dtype=bf16 or dtype=fp32)."
        )
    return quantize(video)  # as svdbench.media.video.to_uint8 made the run's frames


def paired_chunk_psnr(pipe, latents, num_frames: int, decode_chunk_size: int) -> float:
    """PSNR between the latents decoded in one chunk and decoded `decode_chunk_size` frames at a time.

    `latents` are what the pipeline returns with output_type="latent" (batch x frames x channels x h x w).
    PSNR_IDENTICAL means chunking changed nothing.
    """
    whole = decode_to_uint8(pipe, latents, num_frames, num_frames)
    chunked = decode_to_uint8(pipe, latents, num_frames, decode_chunk_size)
    return psnr(whole, chunked)
