"""``extract``: turn HTML pages into their main text (trafilatura or resiliparse), safely.

A web crawl is hostile input. Before any extractor sees a page this step rejects, each with a counted reason:

* ``too_large``: over ``max_bytes`` (checked on the length alone, so a 50 MB single-line page costs nothing);
* ``binary_content``: NUL bytes or many control characters (images, archives served as ``text/html``);
* ``broken_encoding``: too many undecodable characters (U+FFFD, lone surrogates) after decoding;
* ``extraction_timeout``: the extractor ran past ``timeout_s`` (trafilatura can take minutes on some pages);
* ``extraction_error``: the extractor raised (also written to the shard's error log);
* ``empty_extraction``: nothing but white space came out.

Records whose ``content`` is ``bytes`` are decoded first (the HTTP ``charset`` in ``meta`` if it works, else
resiliparse's detector). The output record keeps its id and meta, becomes ``modality="text"`` and gains
``meta["title"]`` and ``meta["crawl_date"]`` (copied from ``warc_date``). Non-HTML records pass through untouched.

How the time limit works (``timeout_mode``):

* ``signal`` (the default whenever the step runs in a process's main thread, which is how executors run it):
  ``setitimer``/``SIGALRM`` raises :class:`ExtractionTimeout` inside the extractor. The exception derives from
  ``BaseException`` so a library's ``except Exception`` cannot swallow it, and the alarm re-fires every 50 ms until
  the call unwinds. Limit: a signal is only handled between Python bytecodes, so one long call into C (lxml
  parsing a huge page, resiliparse) is interrupted only when it returns; ``max_bytes`` bounds those calls. A
  timer already armed by the caller (e.g. pytest-timeout) is restored afterwards with its remaining time.
* ``process`` (the default outside the main thread, where signals cannot be used): extraction runs in a child
  process that is killed and replaced when it overruns. Costs a pickle of each page and a child start-up.
* ``none``: no limit (benchmarks).

Precision or recall (``focus``, trafilatura only). The default, ``precision``, is FineWeb's: trafilatura's
``favor_precision`` plus ``deduplicate`` (segments seen several times in the shard are dropped). Both cost recall:
``favor_precision`` prunes more of the page around the main text, and on pages of one site ``deduplicate`` drops
main-text passages the pages share (a manual's recurring notes, an outlet's standard paragraphs). ``balanced``
calls trafilatura with its own defaults, so it scores exactly as the bare ``trafilatura.extract`` (figures in
``benchmarks/extraction_quality.py``); ``recall`` sets ``favor_recall``.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams

#: control bytes that never appear in real text (tab, LF, VT, FF, CR are allowed); NUL included. In UTF-8 these
#: bytes only ever encode themselves, so counting bytes counts characters.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_REPLACEMENT_CHAR_UTF8 = "\ufffd".encode()
_SURROGATES = re.compile("[\ud800-\udfff]")
#: how much of a page (head and tail, bytes) the binary/encoding checks look at: enough to judge, bounded cost
_SAMPLE_BYTES = 65_536


class ExtractionTimeout(BaseException):
    """Raised inside a runaway extraction. A ``BaseException`` so that ``except Exception`` in libraries can't eat it."""


class ExtractParams(StepParams):
    engine: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="trafilatura (best precision, ~30 ms/page) or resiliparse (~8x faster)")
    timeout_s: float = Field(5.0, ge=0, description="per-page limit in seconds (0: none); over it: "
                                                    "extraction_timeout")
    timeout_mode: Literal["auto", "signal", "process", "none"] = Field(
        "auto", description="signal (SIGALRM, main thread), process (killable child) or auto (signal when "
                            "possible)")
    max_bytes: int = Field(10_000_000, gt=0, description="larger pages (bytes; characters once decoded) are "
                                                         "rejected as too_large")
    max_control_ratio: float = Field(0.01, ge=0, description="control characters (NUL...) per byte of the "
                                                             "sampled page above which: binary_content")
    max_undecodable_ratio: float = Field(0.02, ge=0, description="U+FFFD and lone surrogates per byte above "
                                                                 "which: broken_encoding")
    # trafilatura; defaults as FineWeb: precision first, no comments, repeated-boilerplate removal
    focus: Literal["precision", "balanced", "recall"] = Field(
        "precision", description="trafilatura: precision (FineWeb: favor_precision, with deduplicate), balanced "
                                  "(the library's defaults: as bare trafilatura.extract) or recall (favor_recall)")
    include_comments: bool = Field(False, description="keep the comment sections of pages")
    include_tables: bool = Field(True, description="trafilatura: keep the text of tables")
    deduplicate: bool | None = Field(None, description="trafilatura: drop segments repeated many times in the "
                                                       "shard (LRU reset per shard); default: on with focus "
                                                       "precision only")
    # resiliparse
    preserve_formatting: bool = Field(True, description="resiliparse: keep line breaks and paragraphs")
    list_bullets: bool = Field(True, description="resiliparse: bullets before list items")


# -- checks before extraction ------------------------------------------------------------------------------------
class PageHealth(NamedTuple):
    control_ratio: float  # share of control characters (NUL and friends, not white space)
    undecodable_ratio: float  # share of U+FFFD and lone surrogates
    has_surrogates: bool  # lone surrogates anywhere (the page cannot be written as UTF-8 as it is)


def inspect_page(text: str) -> PageHealth:
    """How binary-looking and how badly decoded ``text`` is, judged on a head+tail sample of its UTF-8 bytes.

    Costs one UTF-8 encoding of the page (the fastest full scan Python has, and it is what finds lone
    surrogates) plus two C-speed byte counts on the sample: about 0.4 ms for a 170 kB page."""
    try:
        data = text.encode("utf-8")
        surrogates = 0
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
        surrogates = -1  # counted on the sample below
    if len(data) > 2 * _SAMPLE_BYTES:
        data = data[:_SAMPLE_BYTES] + data[-_SAMPLE_BYTES:]
    if not data:
        return PageHealth(0.0, 0.0, False)
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    undecodable = data.count(_REPLACEMENT_CHAR_UTF8)
    if surrogates:
        sample = data.decode("utf-8", "surrogatepass")
        undecodable += len(_SURROGATES.findall(sample))
    return PageHealth(controls / len(data), undecodable / len(data), surrogates != 0)


def decode_html_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode a page: the declared ``charset`` if it decodes cleanly, else resiliparse's detection (meta tag,
    uchardet), falling back to UTF-8 / cp1252 and finally to replacement characters (which the encoding check
    then counts)."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    encoding = detect_encoding(data, from_html_meta=True)
    try:
        return bytes_to_str(data, encoding, errors="replace")
    except (LookupError, UnicodeError):
        return data.decode("utf-8", errors="replace")


# -- the extractors ----------------------------------------------------------------------------------------------
class _Engine:
    """Extraction proper, with the step's settings: ``__call__(html, url) -> (text, title)``.

    Picklable (plain settings only), so the ``process`` mode can ship it to its child."""

    def __init__(self, params: ExtractParams) -> None:
        self.params = params
        self._dedup_cache: Any = None

    def reset(self) -> None:
        """Forget repeated segments seen so far (called per shard so that a shard's output does not depend on
        which shards the worker handled before)."""
        self._dedup_cache = None

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params, "_dedup_cache": None}

    def warm_up(self) -> None:
        """Import the extraction libraries (so that import time never counts against a page's limit)."""
        import resiliparse.extract.html2text  # noqa: F401
        import resiliparse.parse.html  # noqa: F401

        if self.params.engine == "trafilatura":
            import trafilatura  # noqa: F401

    def __call__(self, html: str, url: str | None) -> tuple[str, str]:
        from resiliparse.parse.html import HTMLTree

        p = self.params
        tree = HTMLTree.parse(html)
        title = (tree.title or "").strip()
        if p.engine == "resiliparse":
            from resiliparse.extract.html2text import extract_plain_text

            text = extract_plain_text(tree, preserve_formatting=p.preserve_formatting, main_content=True,
                                      list_bullets=p.list_bullets, comments=p.include_comments)
            return text, title
        import trafilatura

        dedup: Any = False
        if p.deduplicate or (p.deduplicate is None and p.focus == "precision"):
            if self._dedup_cache is None:
                from trafilatura.deduplication import LRU_SIZE, LRUCache

                self._dedup_cache = LRUCache(maxsize=LRU_SIZE)
            dedup = self._dedup_cache
        text = trafilatura.extract(html, url=url, favor_precision=p.focus == "precision",
                                   favor_recall=p.focus == "recall", include_comments=p.include_comments,
                                   include_tables=p.include_tables, deduplicate=dedup)
        return text or "", title


# -- time limits -------------------------------------------------------------------------------------------------
def _raise_timeout(signum: int, frame: Any) -> None:
    raise ExtractionTimeout()


def run_with_alarm(fn: Any, seconds: float, *args: Any) -> Any:
    """Call ``fn(*args)``; raise :class:`ExtractionTimeout` if it runs longer than ``seconds``.

    Main thread only (``SIGALRM``). The alarm repeats every 50 ms until ``fn`` unwinds, in case the first one was
    caught. The caller's own SIGALRM handler and timer are restored afterwards (the timer with its remaining time).
    """
    old_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    started = time.monotonic()
    try:
        return fn(*args)
    finally:
        while True:  # an alarm may land on any line here, even after fn returned: disarm until it sticks
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except ExtractionTimeout:
                continue
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), old_interval)


def _child_main(read_fd: int, write_fd: int) -> None:
    """Body of the ``process``-mode child (``python -m assay.harvest.extract READ_FD WRITE_FD``): receive the
    engine, then extract pages until the parent closes the pipe."""
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    engine: _Engine = inbox.recv()
    engine.warm_up()
    outbox.send(("ready", None))
    while True:
        try:
            html, url = inbox.recv()
        except EOFError:
            return
        try:
            outbox.send(("ok", engine(html, url)))
        except Exception as e:  # reported to the parent, which rejects the record with extraction_error
            outbox.send(("error", f"{type(e).__name__}: {e}"))


class _IsolatedExtractor:
    """Runs an :class:`_Engine` in a child process; kills and replaces the child when a page overruns.

    The child is a fresh interpreter running this module (not ``multiprocessing``'s spawn, which would re-import
    the caller's ``__main__``), talking through two pipes."""

    STARTUP_TIMEOUT_S: ClassVar[float] = 120.0

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self._proc: Any = None
        self._inbox: Any = None
        self._outbox: Any = None

    def _start(self) -> None:
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "assay.harvest.extract", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._outbox = Connection(to_child_w, readable=False)
        self._inbox = Connection(from_child_r, writable=False)
        self._outbox.send(self.engine)
        # start-up (imports) must not count against the first page's limit, but must not hang forever either
        if not self._inbox.poll(self.STARTUP_TIMEOUT_S):
            self.close()
            raise RuntimeError("extraction process did not start")
        self._receive()

    def _receive(self) -> Any:
        try:
            return self._inbox.recv()
        except (EOFError, OSError):  # the child died (e.g. a crash inside a C extension)
            self.close()
            raise RuntimeError("extraction process died") from None

    def __call__(self, html: str, url: str | None, timeout: float) -> tuple[str, str]:
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        try:
            self._outbox.send((html, url))
        except OSError:
            self.close()
            raise RuntimeError("extraction process died") from None
        if not self._inbox.poll(timeout):
            self.close()
            raise ExtractionTimeout()
        status, value = self._receive()
        if status == "error":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
        for conn in (self._inbox, self._outbox):
            if conn is not None:
                conn.close()
        self._proc = self._inbox = self._outbox = None


# -- the step ----------------------------------------------------------------------------------------------------
class Extract(Step):
    """Extract the main text of HTML pages (trafilatura or resiliparse), with per-page time and size limits."""

    name = "extract"
    version = "1"
    Params: ClassVar[type[StepParams]] = ExtractParams

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._engine = _Engine(self.params)  # type: ignore[arg-type]
        self._isolated: _IsolatedExtractor | None = None
        self._warm = False

    def setup(self, ctx: StepContext) -> None:
        self._engine.warm_up()
        self._warm = True

    def process(self, batches: Any, ctx: StepContext) -> Any:
        self._engine.reset()  # per-shard dedup memory: same shard in, same text out
        try:
            for batch in batches:
                yield self.process_batch(batch, ctx)
        finally:
            if self._isolated is not None:
                self._isolated.close()
                self._isolated = None

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for record in batch:
            if record.drop is None and record.modality == "html":
                self._extract_one(record, ctx)
        return batch

    # -- one page ----------------------------------------------------------------------------------------------
    def _mode(self) -> str:
        mode = self.params.timeout_mode  # type: ignore[attr-defined]
        if mode == "auto":
            return "signal" if threading.current_thread() is threading.main_thread() else "process"
        return mode

    def _extract_one(self, record: Record, ctx: StepContext) -> None:
        p: ExtractParams = self.params  # type: ignore[assignment]
        html = record.content
        if isinstance(html, (bytes, bytearray, memoryview)):
            html = bytes(html)
            if len(html) > p.max_bytes:
                return self.reject(record, "too_large")
            html = decode_html_bytes(html, record.meta.get("charset"))
        if not isinstance(html, str):
            return self.reject(record, "not_html")
        if len(html) > p.max_bytes:
            return self.reject(record, "too_large")
        health = inspect_page(html)
        if health.control_ratio > p.max_control_ratio:
            return self.reject(record, "binary_content")
        if health.undecodable_ratio > p.max_undecodable_ratio:
            return self.reject(record, "broken_encoding")
        if health.has_surrogates:  # a few lone surrogates: make the page encodable, then go on
            html = html.encode("utf-8", "replace").decode("utf-8")

        url = record.meta.get("url")
        started = time.perf_counter()
        try:
            text, title = self._run(html, url, p.timeout_s)
        except ExtractionTimeout:
            self.count("extract.timeout_seconds", round(time.perf_counter() - started))
            ctx.errors.add("extraction_timeout", str(url or record.id), record.meta.get("offset"),
                           f"extraction took longer than {p.timeout_s}s")
            return self.reject(record, "extraction_timeout")
        except Exception as e:  # a bug or a crash in the extractor on this page: count it and go on
            ctx.errors.add("extraction_error", str(url or record.id), record.meta.get("offset"),
                           f"{type(e).__name__}: {e}")
            return self.reject(record, "extraction_error")
        text = text.strip()
        if not text:
            return self.reject(record, "empty_extraction")
        record.content = text
        record.modality = "text"
        record.meta["title"] = title
        if "warc_date" in record.meta:
            record.meta["crawl_date"] = record.meta["warc_date"]
        record.meta["extractor"] = p.engine

    def _run(self, html: str, url: str | None, timeout: float) -> tuple[str, str]:
        if not self._warm:
            self._engine.warm_up()
            self._warm = True
        mode = self._mode()
        if mode == "none" or timeout <= 0:
            return self._engine(html, url)
        if mode == "signal":
            return run_with_alarm(self._engine, timeout, html, url)
        if self._isolated is None:
            self._isolated = _IsolatedExtractor(self._engine)
        return self._isolated(html, url, timeout)


if __name__ == "__main__":  # the process-mode child, started by _IsolatedExtractor
    import sys

    _child_main(int(sys.argv[1]), int(sys.argv[2]))
