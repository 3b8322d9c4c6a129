"""Deduplication steps for harvested text.

* ``exact_dedup``: identical content (optionally after lower-casing and folding whitespace).
* ``minhash_dedup``: near-duplicates, MinHash-LSH over word 5-grams (FineWeb's 14 bands × 8 rows by default),
  candidate pairs checked by estimated Jaccard similarity.
* ``line_dedup``: lines repeated across documents (CCNet-style boilerplate removal).
* ``simhash_dedup``: near-duplicates, 64-bit SimHash over word 3-grams, banded Hamming lookup (Data-Juicer's
  document_simhash_deduplicator).
* ``semantic_dedup``: the same meaning in other words (SemDedup as NeMo Curator runs it: MiniLM embeddings, k-means,
  within-cluster cosine threshold).

All are global steps: ``collect`` per shard writes compact state files, ``reduce`` runs once over every
shard's state with bounded memory, ``apply`` per shard acts on the decisions. The records kept do not depend on the
number of shards or workers (each cluster keeps the record with the smallest hash of id and content). In a recipe::

    steps:
      - extract
      - exact_dedup
      - minhash_dedup: {min_jaccard: 0.7}
"""

from assay.harvest.dedup.exact import ExactDedup
from assay.harvest.dedup.lines import LineDedup
from assay.harvest.dedup.minhash import MinHashDedup
from assay.harvest.dedup.semantic import SemanticDedup
from assay.harvest.dedup.simhash import SimHashDedup

__all__ = ["ExactDedup", "LineDedup", "MinHashDedup", "SemanticDedup", "SimHashDedup"]
