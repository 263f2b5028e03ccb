"""Image–text training data: every source (CSV/TSV, folder + sidecars, WebDataset shards, Fashion-MNIST,
openclipart) opens to one map-style ``PairSource`` of ``Pair`` samples; ``PairLoader`` batches it
deterministically; ``export`` writes any source back out as shards or an open_clip CSV."""

from .export import ExportResult, export_csv, export_shards
from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_TEMPLATES, FashionMNIST
from .folder import FolderSource
from .loader import Batch, PairLoader
from .open import open_source
from .openclipart import OpenClipart
from .pairs import BatchSource, DataError, Pair, PairSource
from .shards import ShardSource, ShardWriter
from .table import TableSource

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_TEMPLATES",
    "Batch",
    "BatchSource",
    "DataError",
    "ExportResult",
    "FashionMNIST",
    "FolderSource",
    "OpenClipart",
    "Pair",
    "PairLoader",
    "PairSource",
    "ShardSource",
    "ShardWriter",
    "TableSource",
    "export_csv",
    "export_shards",
    "open_source",
]
