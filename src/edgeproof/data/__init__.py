"""Data loading: npz, csv, image folders, IDX, CIFAR-10 binary, and built-in datasets."""

from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data

__all__ = ["Dataset", "load_data"]
