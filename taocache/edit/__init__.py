"""Training-free non-rigid editing of real images: text optimisation, latent inversion, text injection."""

from .config import INVERSIONS, EditConfig, default_config
from .editor import Edit, NonRigidEditor, PreparedImage

__all__ = ["INVERSIONS", "Edit", "EditConfig", "NonRigidEditor", "PreparedImage", "default_config"]
