"""Search a folder of images by text or image: a persistent index (SQLite metadata and vectors, FAISS search).

``Index.create(index_dir, root, encoder)`` then ``index.add()``; ``Index.open(index_dir)`` later. The query side
(combined queries, filters, paging, output formats) builds on ``Index.search_vectors`` and ``Index.items``.
"""

from .duplicates import duplicates
from .filters import FIELDS, Filters
from .index import AddReport, Index
from .query import QuerySyntaxError, QueryTerm, parse_query, query_vector
from .retrieve import Hit, Page, search
from .store import FORMAT_VERSION, IndexFormatError, Item
from .vectors import KINDS, VectorIndex

__all__ = ["FIELDS", "FORMAT_VERSION", "KINDS", "AddReport", "Filters", "Hit", "Index", "IndexFormatError", "Item",
           "Page", "QuerySyntaxError", "QueryTerm", "VectorIndex", "duplicates", "parse_query", "query_vector", "search"]
