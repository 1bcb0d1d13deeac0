"""IGR: diffusion-based garment restoration (virtual try-off) from person images.

Paper: "Improving Diffusion Model for Garment Restoration from Person Image".
"""

__version__ = "0.1.0"
