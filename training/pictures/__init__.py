"""Pictures of training and evaluation, saved as PNG (matplotlib, ``vcl[train]``).

- :func:`plot_training_curves`: every logged scalar of a run's ``metrics.csv`` against step.
- :func:`plot_embedding_map`: a 2-D map (PCA, or t-SNE when scikit-learn is installed) of
  video embeddings coloured by class.
- :func:`plot_activation_maps`: class-agnostic activation maps over a clip's frames, as in
  FAME's Figure 1 (Ding et al. 2022): the channel mean of the magnitude of the last feature
  map, upsampled to the frame and overlaid.

The numeric parts (:func:`pca_2d`, :func:`activation_map`, :func:`read_metrics`) need no
matplotlib.
"""

from training.pictures.activations import activation_map, plot_activation_maps
from training.pictures.curves import plot_training_curves, read_metrics, training_curves_figure
from training.pictures.embedding_map import embedding_2d, pca_2d, plot_embedding_map

__all__ = [
    "activation_map",
    "embedding_2d",
    "pca_2d",
    "plot_activation_maps",
    "plot_embedding_map",
    "plot_training_curves",
    "read_metrics",
    "training_curves_figure",
]
