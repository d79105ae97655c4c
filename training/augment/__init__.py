"""Augmentations and generators applied to batches of clips on the device.

- :mod:`training.augment.colour`: MoCo v2 / SimCLR colour jitter, grayscale and blur (every method).
- :mod:`training.augment.fame`: FAME's foreground-background merging.
- :mod:`training.augment.frame_drop`: VideoMoCo's adversarial frame dropping.
- :mod:`training.augment.segment_order`: VCLR's segment-order shuffles.

The colour pipeline is re-exported here, so ``from training.augment import ColorAugment`` works.
"""

from training.augment.colour import NO_AUGMENT, ColorAugment, gaussian_blur, grayscale, hsv_to_rgb, rgb_to_hsv

__all__ = ["NO_AUGMENT", "ColorAugment", "gaussian_blur", "grayscale", "hsv_to_rgb", "rgb_to_hsv"]
