"""The networks: feature_extractor E (image -> feature maps), projection of points, decoder D (paper §4.1)."""

from trainer.models.network import OccupancyNetwork, build_model

__all__ = ["OccupancyNetwork", "build_model"]
