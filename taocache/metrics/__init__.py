"""Quality metrics against a reference run (PSNR, SSIM, LPIPS)."""

from .quality import LPIPS, as_frames, load_lpips, psnr, ssim

__all__ = ["LPIPS", "as_frames", "load_lpips", "psnr", "ssim"]
