"""datatrove's Megatron tokenizer step over an Assay run's data/ files (run in .venv-peers by benchmarks/pack.py).

    .venv-peers/bin/python benchmarks/peers/datatrove_tokenize.py DATA_DIR TOKENIZER_JSON EOS OUT_DIR TASKS

Prints one JSON line: wall seconds of the pipeline (reader + tokenizer + writer) and the files written.
"""

import json
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer


def main() -> None:
    data_dir, tokenizer, eos, out, tasks = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline=[
        JsonlReader(data_dir, text_key="content", glob_pattern="*.jsonl.gz"),
        MegatronDocumentTokenizer(f"{out}/tokens", tokenizer_name_or_path=tokenizer, eos_token=eos),
    ], tasks=tasks, workers=tasks, logging_dir=f"{out}/logs", skip_completed=False).run()
    print(json.dumps({"seconds": time.perf_counter() - t0}))


if __name__ == "__main__":  # datatrove's worker processes import this file again
    main()
