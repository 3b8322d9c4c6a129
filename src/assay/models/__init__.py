"""The models every stage uses, in one place: LLM backends (:mod:`assay.models.llm`), text embedders
(:mod:`assay.models.embeddings`) and image-text embedders (:mod:`assay.models.image_embeddings`).

Importing this package, or any of its modules, loads no model library: torch, transformers, sentence-transformers,
onnxruntime and llama.cpp are imported when a model is first loaded.
"""
