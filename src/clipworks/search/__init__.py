"""Search a folder of images by text or image: a persistent index (SQLite metadata and vectors, FAISS search).

``Index.create(index_dir, root, encoder)`` then ``index.add()``; ``Index.open(index_dir)`` later. The query side
(combined queries, filters, paging, output formats) builds on ``Index.search_vectors`` and ``Index.items``.
"""

from .index import AddReport, Index
from .store import FORMAT_VERSION, IndexFormatError, Item
from .vectors import KINDS, VectorIndex

__all__ = ["FORMAT_VERSION", "KINDS", "AddReport", "Index", "IndexFormatError", "Item", "VectorIndex"]
