"""Quality metrics against a reference run (PSNR, SSIM, LPIPS, ColorVideoVDP), the uncertainty of success
rates, and paired comparisons of two methods."""

from .perceptual import VideoVDP, load_cvvdp, video_quality
from .quality import LPIPS, as_frames, load_lpips, psnr, quality_row, ssim
from .rates import format_rate, rate_interval

__all__ = [
    "LPIPS",
    "VideoVDP",
    "as_frames",
    "format_rate",
    "load_cvvdp",
    "load_lpips",
    "psnr",
    "quality_row",
    "rate_interval",
    "ssim",
    "video_quality",
]
