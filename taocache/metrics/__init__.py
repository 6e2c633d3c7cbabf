"""Quality metrics against a reference run (PSNR, SSIM, LPIPS), and the uncertainty of success rates."""

from .quality import LPIPS, as_frames, load_lpips, psnr, quality_row, ssim
from .rates import format_rate, rate_interval

__all__ = ["LPIPS", "as_frames", "format_rate", "load_lpips", "psnr", "quality_row", "rate_interval", "ssim"]
