"""The "corpus" artifact: a real text corpus from the Python source on this machine.

Why Python source: it is real, varied text (code, comments, docstrings, prose in
modules like email or argparse), several MB of it ship with every Python install, and
nothing has to be downloaded. The gpu scale adds the ``.py`` files of the installed
wheels (site-packages: torch, transformers, scipy, ...) for ~20x more text.

build() writes, into the artifact folder:

    train.npy, val.npy   uint16 token ids; every file's tokens followed by <|endoftext|>
    tokenizer.json       byte-level BPE (`tokenizers`), trained on the train files only
    docstrings.jsonl     {module, package, qualname, summary, code, split} per documented function
    files.csv            path, module, package, split, bytes, tokens of every kept file
    stats.json           counts, sha256 of each split's text, python version, what was dropped and why

The pipeline, in order:

1. collect ``*.py`` files under the source roots, skipping ``exclude_dirs`` (tests, idlelib, ...),
   sorted by relative path (``stdlib/email/parser.py``);
2. clean: drop files over ``max_file_bytes``, that are not UTF-8, empty, or generated (a marker
   such as "auto-generated" in the first lines); normalise newlines; drop exact duplicates
   (the first path wins);
3. optionally keep a subset of ``max_total_bytes``, chosen by a hash of the path, so a small corpus
   still samples every package instead of the alphabetically first ones;
4. split train/val by file with a stable hash of the path (sha256, not ``hash()``, which is
   salted per process): the same file lands in the same split on every machine and run;
5. train the tokenizer on train, encode both splits (batch encoding, all cores);
6. extract documented functions with ``ast`` (split = their file's split, hence by module).

Everything is a pure function of the source files and the params: the same Python
install gives byte-identical outputs (tested). ``seed`` is not used (the split is by
hash, BPE training is deterministic); it only travels into stats.json.

Reading it back: load_tokens, load_tokenizer, TokenBatches (random training windows),
eval_batches (fixed windows), load_docstrings, package_classification.
"""

from __future__ import annotations

import ast
import csv
import fnmatch
import hashlib
import itertools
import json
import os
import platform
import re
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.progress import silent

ARTIFACT = "corpus"
REQUIRES: tuple[str, ...] = ()
# The input (the installed standard library) lies outside the repository, so DVC cannot hash
# it: the stage reruns on every repro, and what reads the corpus reruns only if it changed.
ALWAYS_REBUILD = True

EOT = "<|endoftext|>"  # the one special token: separates files in the token streams
SPLITS = ("train", "val")
GENERATED_HEADER_LINES = 3  # generated-file markers are looked for in this many first lines
ENCODE_CHUNK = 256  # files per encode_batch call (a progress step; tokenizers parallelises within)
MISSING_HINT = "build the corpus artifact with `dvc repro corpus` (tests: shared.artifacts.build_into)"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Literal["stdlib", "site-packages"]] = Field(
        min_length=1, description="source roots: the standard library, and/or the installed wheels (purelib)"
    )
    exclude_dirs: list[str] = Field(
        description="directory names (fnmatch patterns) skipped at any depth, e.g. test, idlelib, config-*"
    )
    generated_markers: list[str] = Field(
        description=f"a file whose first {GENERATED_HEADER_LINES} lines contain one (case-insensitive) is "
        "generated and dropped"
    )
    max_file_bytes: int = Field(gt=0, description="larger files are dropped (data tables, generated code)")
    max_total_bytes: int = Field(
        ge=0, description="keep a hash-chosen subset of about this many bytes of text; 0 keeps everything"
    )
    val_fraction: float = Field(gt=0.0, le=0.5, description="share of files (by path hash) in the val split")
    vocab_size: int = Field(
        ge=258, le=65536, description="BPE vocabulary incl. 256 bytes and <|endoftext|>; ids fit uint16"
    )
    min_frequency: int = Field(ge=1, description="a pair is merged only if it occurs at least this often")
    docstring_min_words: int = Field(ge=1, description="docstring summaries shorter than this are skipped")

    @field_validator("sources")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("sources must not repeat an entry; allowed: stdlib, site-packages")
        return value


# ---------------------------------------------------------------------------------------
# 1-4: collect, clean, subset and split the files


@dataclass(frozen=True)
class SourceFile:
    path: str  # "<source>/<relative path>", e.g. "stdlib/email/parser.py": sort key and split key
    module: str  # "email.parser" ("email" for email/__init__.py)
    package: str  # top-level package or module: "email"
    text: str  # newline-normalised UTF-8 text
    split: str  # "train" | "val"

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8"))


def source_roots(sources) -> list[tuple[str, Path]]:
    """(name, folder) of each source. site-packages is this interpreter's purelib (the venv's
    wheels), plus platlib where it differs."""
    paths = sysconfig.get_paths()
    roots: list[tuple[str, Path]] = []
    for name in sources:
        if name == "stdlib":
            roots.append((name, Path(paths["stdlib"])))
        else:
            for key in ("purelib", "platlib"):
                path = Path(paths[key])
                if all(path != p for _, p in roots):
                    roots.append((name, path))
    return roots


def _walk(root: Path, exclude_dirs: list[str]):
    """Relative posix paths of the .py files under root, pruning excluded folders (never entered)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not any(fnmatch.fnmatchcase(d, p) for p in exclude_dirs))
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield (rel / name).as_posix()


def _unit_hash(salt: str, key: str) -> float:
    """A stable number in [0, 1) from a string: the same on every machine and run."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def collect_files(params: Params, progress=None) -> tuple[list[SourceFile], dict[str, int]]:
    """The kept files (sorted by path, each with its split) and the count dropped per reason."""
    progress = progress or silent
    markers = [m.lower() for m in params.generated_markers]
    candidates: dict[str, tuple[Path, str]] = {}
    for name, root in source_roots(params.sources):
        for rel in _walk(root, params.exclude_dirs):
            candidates.setdefault(f"{name}/{rel}", (root / rel, rel))  # purelib wins over platlib
    dropped = dict.fromkeys(["too_large", "undecodable", "empty", "generated", "duplicate", "over_budget"], 0)
    seen: set[bytes] = set()
    kept: list[tuple[str, str, str]] = []
    for key in progress(sorted(candidates), desc="corpus: read files", total=len(candidates)):
        path, rel = candidates[key]
        try:
            if path.stat().st_size > params.max_file_bytes:
                dropped["too_large"] += 1
                continue
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):  # not UTF-8; or a broken link, a file gone while walking
            dropped["undecodable"] += 1
            continue
        text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        if not text.strip():
            dropped["empty"] += 1
            continue
        header = "\n".join(text.split("\n", GENERATED_HEADER_LINES)[:GENERATED_HEADER_LINES]).lower()
        if any(m in header for m in markers):
            dropped["generated"] += 1
            continue
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if digest in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(digest)
        kept.append((key, rel, text))

    if params.max_total_bytes:
        # Take files in hash order while they fit: an unbiased sample of all packages.
        budget, chosen = params.max_total_bytes, set()
        for key, _, text in sorted(kept, key=lambda item: _unit_hash("select", item[0])):
            size = len(text.encode("utf-8"))
            if size <= budget:
                chosen.add(key)
                budget -= size
        dropped["over_budget"] = len(kept) - len(chosen)
        kept = [item for item in kept if item[0] in chosen]

    files = [
        SourceFile(
            path=key,
            module=_module_name(rel),
            package=_module_name(rel).split(".")[0],
            text=text,
            split="val" if _unit_hash("split", key) < params.val_fraction else "train",
        )
        for key, rel, text in kept
    ]
    for split in SPLITS:
        if not any(f.split == split for f in files):
            raise ValueError(
                f"corpus: the {split} split is empty ({len(files)} files kept); raise max_total_bytes or val_fraction"
            )
    return files, dropped


# ---------------------------------------------------------------------------------------
# 5: tokenizer and token streams


def train_tokenizer(texts, params: Params, length: int | None = None):
    """Byte-level BPE (GPT-2's pre-tokenisation: lossless on any text) with <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def encode_files(tokenizer, texts: list[str], progress=None) -> tuple[np.ndarray, list[int]]:
    """One uint16 stream: each text's ids then <|endoftext|>; and each text's token count.
    A literal "<|endoftext|>" inside a file is encoded as text, never as the separator."""
    progress = progress or silent
    eot = tokenizer.token_to_id(EOT)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no offsets
    tokenizer.encode_special_tokens = True
    try:
        parts, counts = [], []
        chunks = range(0, len(texts), ENCODE_CHUNK)
        for start in progress(chunks, desc="corpus: encode", total=len(chunks)):
            for enc in encode(texts[start : start + ENCODE_CHUNK], add_special_tokens=False):
                parts.append(np.asarray(enc.ids, dtype=np.uint16))
                parts.append(np.array([eot], dtype=np.uint16))
                counts.append(len(enc.ids))
    finally:
        tokenizer.encode_special_tokens = False
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint16)), counts


# ---------------------------------------------------------------------------------------
# 6: the docstring dataset

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def docstring_summary(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = doc.strip().split("\n\n")[0]
    return _SENTENCE_END.split(" ".join(paragraph.split()), maxsplit=1)[0]


def extract_docstrings(file: SourceFile, min_words: int) -> list[dict]:
    """Rows for every documented function (methods and nested ones too) of a file whose body
    has more than its docstring; `code` is the function (with decorators) minus the docstring."""
    try:
        tree = ast.parse(file.text)
    except (SyntaxError, ValueError, RecursionError):  # py2-only or template files in site-packages
        return []
    lines = file.text.split("\n")
    rows: list[dict] = []

    def visit(parent, prefix: str) -> None:
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, ast.ClassDef):
                visit(node, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = f"{prefix}{node.name}"
                row = _function_row(node, lines, min_words)
                if row is not None:
                    rows.append({"module": file.module, "package": file.package, "qualname": qualname, **row})
                visit(node, f"{qualname}.")
            elif isinstance(node, (ast.stmt, ast.excepthandler, ast.match_case)):
                visit(node, prefix)  # functions defined under if / try / with / for

    visit(tree, "")
    for row in rows:
        row["split"] = file.split
    return rows


def _function_row(node, lines: list[str], min_words: int) -> dict | None:
    doc = ast.get_docstring(node, clean=True)
    if not doc or len(node.body) < 2:  # undocumented, or a stub whose body is only its docstring
        return None
    summary = docstring_summary(doc)
    if len(summary.split()) < min_words:
        return None
    ds = node.body[0]
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    if ds.lineno == node.body[1].lineno or ds.end_lineno == node.body[1].lineno:
        return None  # docstring shares a line with code ("def f(): 'doc'; ..."): rare, skipped
    # The docstring's own lines must hold nothing else (it is a statement on its own lines)
    before = lines[ds.lineno - 1].encode("utf-8")[: ds.col_offset]
    if before.strip() or ds.lineno <= node.lineno:
        return None
    code_lines = lines[first - 1 : ds.lineno - 1] + lines[ds.end_lineno : node.end_lineno]
    return {"summary": summary, "code": textwrap.dedent("\n".join(code_lines))}


# ---------------------------------------------------------------------------------------
# build: the artifact


def build(params: Params, out: Path, inputs: dict[str, Path], seed: int, progress=None) -> dict:
    """Write the corpus into `out` (see the module docstring); return a JSON-able summary."""
    progress = progress or silent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    files, dropped = collect_files(params, progress)
    by_split = {s: [f for f in files if f.split == s] for s in SPLITS}

    train_texts = [f.text for f in by_split["train"]]
    tokenizer = train_tokenizer(train_texts, params, length=len(train_texts))
    vocab = tokenizer.get_vocab_size()
    assert vocab <= 65536, f"vocab {vocab} does not fit uint16"

    tokens, counts, text_sha = {}, {}, {}
    for split in SPLITS:
        texts = [f.text for f in by_split[split]]
        ids, per_file = encode_files(tokenizer, texts, progress)
        np.save(out / f"{split}.npy", ids)
        tokens[split] = int(ids.size)
        counts.update(zip((f.path for f in by_split[split]), per_file))
        sha = hashlib.sha256()
        for text in texts:
            sha.update(text.encode("utf-8"))
            sha.update(EOT.encode())
        text_sha[split] = sha.hexdigest()
    tokenizer.save(str(out / "tokenizer.json"))

    n_doc = dict.fromkeys(SPLITS, 0)
    with (out / "docstrings.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for file in progress(files, desc="corpus: docstrings", total=len(files)):
            for row in extract_docstrings(file, params.docstring_min_words):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n_doc[row["split"]] += 1

    with (out / "files.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "module", "package", "split", "bytes", "tokens"])
        for f in files:
            writer.writerow([f.path, f.module, f.package, f.split, f.n_bytes, counts[f.path]])

    stats = {
        "python_version": platform.python_version(),
        "sources": {name: str(root) for name, root in source_roots(params.sources)},
        "files": {s: len(by_split[s]) for s in SPLITS},
        "bytes": {s: sum(f.n_bytes for f in by_split[s]) for s in SPLITS},
        "tokens": tokens,  # incl. one <|endoftext|> per file
        "bytes_per_token": round(sum(f.n_bytes for f in files) / max(sum(tokens.values()), 1), 4),
        "text_sha256": text_sha,
        "dropped": dropped,
        "packages": len({f.package for f in files}),
        "docstrings": n_doc,
        "vocab_size": vocab,
        "eot_id": tokenizer.token_to_id(EOT),
        "seed": seed,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return {k: stats[k] for k in ("files", "bytes", "tokens", "docstrings", "vocab_size", "python_version")}


# ---------------------------------------------------------------------------------------
# reading it back


def _need(corpus_dir, name: str) -> Path:
    path = Path(corpus_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; {MISSING_HINT}")
    return path


def load_tokens(corpus_dir, split: str) -> np.ndarray:
    """The uint16 token stream of a split, memory-mapped (read-only)."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not allowed; allowed: {', '.join(SPLITS)}")
    return np.load(_need(corpus_dir, f"{split}.npy"), mmap_mode="r")


def load_tokenizer(corpus_dir):
    """The corpus's `tokenizers.Tokenizer` (decode with `skip_special_tokens=False` to keep EOT)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_need(corpus_dir, "tokenizer.json")))


def load_stats(corpus_dir) -> dict:
    return json.loads(_need(corpus_dir, "stats.json").read_text())


def _check_windows(tokens, batch_size: int, seq_len: int) -> None:
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len: must be >= 1 (got {batch_size}, {seq_len})")
    if len(tokens) < seq_len + 1:
        raise ValueError(f"seq_len: {seq_len} needs at least seq_len + 1 tokens; the stream has {len(tokens)}")


def _windows(tokens, starts: np.ndarray, seq_len: int, device: str):
    """(x, y) int64 tensors [B, T] from windows of T + 1 tokens starting at `starts`."""
    import torch

    idx = starts[:, None] + np.arange(seq_len + 1)  # one gather for the whole batch
    w = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    if device != "cpu":
        w = w.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else w.to(device)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class TokenBatches:
    """Random training windows: an endless iterator of (x, y) int64 tensors [B, T], y = x
    shifted by one token. Batch `i` depends only on (seed, i) (``batches[i]``), so a resumed run
    continues with exactly the batches an uninterrupted one would have seen
    (``itertools.islice(batches, step, None)`` or ``batches.iter_from(step)``)."""

    def __init__(self, tokens, batch_size: int, seq_len: int, seed: int, device: str = "cpu"):
        _check_windows(tokens, batch_size, seq_len)
        if seed < 0:
            raise ValueError(f"seed: must be >= 0 (got {seed})")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.device = str(device)
        self.n_starts = len(tokens) - seq_len  # window starts 0 .. len - seq_len - 1

    def __getitem__(self, step: int):
        if step < 0:
            raise IndexError(f"step: must be >= 0 (got {step})")
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, self.n_starts, size=self.batch_size)
        return _windows(self.tokens, starts, self.seq_len, self.device)

    def iter_from(self, step: int = 0):
        return (self[i] for i in itertools.count(step))

    def __iter__(self):
        return self.iter_from(0)


def eval_batches(tokens, batch_size: int, seq_len: int, n_batches: int, device: str = "cpu") -> list:
    """`n_batches` fixed batches of windows evenly spaced over the whole stream (first at 0,
    last at the end): the same every call, covering the split rather than one corner of it."""
    _check_windows(tokens, batch_size, seq_len)
    if n_batches < 1:
        raise ValueError(f"n_batches: must be >= 1 (got {n_batches})")
    n = batch_size * n_batches
    last = len(tokens) - seq_len - 1
    starts = np.arange(n, dtype=np.int64) * last // max(n - 1, 1)
    return [
        _windows(tokens, starts[i * batch_size : (i + 1) * batch_size], seq_len, device) for i in range(n_batches)
    ]


def training_data(corpus_dir, batch_size: int, seq_len: int, eval_batches_n: int, seed: int, device: str = "cpu"):
    """What an LM training artifact reads: (vocab size, train TokenBatches, fixed val batches).

    Every model trained from it sees the same batches in the same order (seeded)."""
    vocab = load_tokenizer(corpus_dir).get_vocab_size()
    batches = TokenBatches(load_tokens(corpus_dir, "train"), batch_size, seq_len, seed=seed, device=device)
    val = eval_batches(load_tokens(corpus_dir, "val"), batch_size, seq_len, eval_batches_n, device=device)
    return vocab, batches, val


DOCSTRING_COLUMNS = ["module", "package", "qualname", "summary", "code", "split"]


def load_docstrings(corpus_dir):
    """docstrings.jsonl as a DataFrame (columns DOCSTRING_COLUMNS, all strings)."""
    import pandas as pd

    path = _need(corpus_dir, "docstrings.jsonl")
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return pd.DataFrame.from_records(rows, columns=DOCSTRING_COLUMNS)


def package_classification(df, n_classes: int, max_per_class: int, seed: int, test_fraction: float = 0.25):
    """A balanced text-classification task: docstring summary -> top-level package.

    Classes are the `n_classes` packages with the most docstrings among those spread over at
    least two modules (ties by name). Per class, modules are shuffled (seed) and assigned to
    test while they fit in `test_fraction` of its rows, so no module is in both splits (a
    module's docstrings share vocabulary a classifier could memorise). Each class then gets the
    same number of rows in train and the same in test: at most `max_per_class` rows per class
    in all, fewer when the smallest class has fewer. The corpus's own train/val column is
    ignored (its val split is too small for a test set).

    Returns (train_df, test_df, label_names): the rows with an int `label` column (index into
    label_names, sorted alphabetically), each shuffled with the seed.
    """
    missing = {"module", "package", "summary"} - set(df.columns)
    if missing:
        raise ValueError(f"df: needs columns module, package, summary; missing {sorted(missing)}")
    if n_classes < 2:
        raise ValueError(f"n_classes: must be >= 2 (got {n_classes})")
    if max_per_class < 2:
        raise ValueError(f"max_per_class: must be >= 2 (got {max_per_class})")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1) (got {test_fraction})")

    per_package = df.groupby("package").agg(rows=("summary", "size"), modules=("module", "nunique"))
    eligible = per_package[per_package["modules"] >= 2].reset_index()
    eligible = eligible.sort_values(["rows", "package"], ascending=[False, True])
    if len(eligible) < n_classes:
        raise ValueError(
            f"n_classes: {n_classes} asked, but only {len(eligible)} packages have docstrings in >= 2 modules"
        )
    label_names = sorted(eligible["package"].head(n_classes))

    rng = np.random.default_rng(seed)
    parts = {}
    for name in label_names:
        rows = df[df["package"] == name]
        sizes = rows.groupby("module").size().sort_index()
        target, in_test, test_modules = test_fraction * len(rows), 0, set()
        for module in rng.permutation(sizes.index.to_numpy()):
            if in_test + sizes[module] <= target:
                test_modules.add(module)
                in_test += sizes[module]
        if not test_modules:  # every module is bigger than the target: the smallest one
            test_modules.add(sizes.sort_values(kind="stable").index[0])
        is_test = rows["module"].isin(test_modules)
        parts[name] = (rows[~is_test], rows[is_test])

    n_test_max = max(1, round(max_per_class * test_fraction))
    n_test = min(n_test_max, *(len(te) for _, te in parts.values()))
    n_train = min(max_per_class - n_test_max, *(len(tr) for tr, _ in parts.values()))

    def sample(frames):
        import pandas as pd

        out = pd.concat(frames)
        return out.iloc[rng.permutation(len(out))].reset_index(drop=True)

    train, test = [], []
    for label, name in enumerate(label_names):
        tr, te = parts[name]
        for frame, n, bucket in ((tr, n_train, train), (te, n_test, test)):
            pick = frame.iloc[np.sort(rng.choice(len(frame), size=n, replace=False))].copy()
            pick["label"] = label
            bucket.append(pick)
    return sample(train), sample(test), label_names
