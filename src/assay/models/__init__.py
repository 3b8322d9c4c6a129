"""The models every stage uses, in one place: LLM backends (:mod:`assay.models.llm`), text embedders
(:mod:`assay.models.embeddings`), image-text embedders (:mod:`assay.models.image_embeddings`) and the quality
classifier (:mod:`assay.models.quality_classifier`).

Importing this package, or any of its modules, loads no model library: torch, transformers, sentence-transformers,
onnxruntime, scikit-learn and llama.cpp are imported when a model is first loaded or trained.
"""
