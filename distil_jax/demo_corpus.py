"""An English corpus and a WordPiece vocabulary that every Python installation can make.

The offline quickstart cannot download BERT or Wikipedia, so it distils on what
ships with CPython: the reference-manual topics of `pydoc_data` and the
docstrings of the standard library's modules, read with `ast` (never imported,
so no module runs). Documents are written in the shared corpus layout: one
paragraph per line, a blank line between documents.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sysconfig

# Standard-library folders that are tests, demos or GUI code rather than prose.
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "lib2to3",
    "__pycache__",
    "turtledemo",
    "ensurepip",
    "dist-packages",
}


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each joined to one line."""
    blocks = re.split(r"\n\s*\n", text)
    out = []
    for block in blocks:
        line = " ".join(block.split())
        if len(line.split()) >= 4:
            out.append(line)
    return out


def pydoc_documents() -> list[list[str]]:
    from pydoc_data.topics import topics

    return [p for p in (_paragraphs(text) for _, text in sorted(topics.items())) if p]


def docstring_documents(stdlib: str | None = None) -> list[list[str]]:
    """One document per standard-library module: its docstrings, in source order."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    documents = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few files are templates or in other encodings
            paragraphs = []
            for node in ast.walk(tree):
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    doc = ast.get_docstring(node)
                    if doc:
                        paragraphs.extend(_paragraphs(doc))
            if paragraphs:
                documents.append(paragraphs)
    return documents


def write_corpus(path: str, max_documents: int = 0) -> dict:
    """Writes the corpus once (reused when present); returns its size.

    max_documents > 0 keeps that many documents (for quick tests), 0 keeps all.
    """
    if not os.path.exists(path):
        documents = pydoc_documents() + docstring_documents()
        if max_documents:
            documents = documents[:max_documents]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(doc) for doc in documents) + "\n")
        os.replace(tmp, path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return {"documents": text.count("\n\n") + 1, "words": len(text.split())}


def train_wordpiece(corpus: str, out_dir: str, vocab_size: int) -> str:
    """A lower-casing BERT WordPiece vocabulary trained on `corpus`, loadable by
    `transformers.AutoTokenizer.from_pretrained(out_dir)`. Reused when present."""
    if os.path.exists(os.path.join(out_dir, "vocab.txt")):
        return out_dir
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train(
        [corpus],
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    tmp = out_dir + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    tok.save_model(tmp)  # vocab.txt
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}, f
        )
    os.replace(tmp, out_dir)
    return out_dir
