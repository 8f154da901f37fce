#!/usr/bin/env python3
"""Official fastText on a Chinese text-classification split, as a peer for `sluice classifier`.

Trains official fastText supervised models (the `fasttext` Python bindings; `fasttext-wheel`
0.9.2 is the same C++ code as a prebuilt wheel) on TRAIN and scores them on TEST, with texts
pre-tokenized two ways:

  jieba   words from jieba.lcut(text), joined by single spaces
  chars   every non-whitespace character is a token (Latin words and digits split too)

and three settings (everything not listed is fastText's default: minCount 1, bucket 2,000,000,
loss softmax, no subword n-grams for supervised):

  default    epoch 5,  lr 0.1, wordNgrams 1, dim 100
  ng2_ep25   epoch 25, lr 0.1, wordNgrams 2, dim 100
  ng3_ep25   epoch 25, lr 0.1, wordNgrams 3, dim 100

--sluice-like adds one more row: sluice's own feature rule (`sluice_chars`: each CJK character a
token, runs of letters/digits one lower-cased word, other symbols one token each; a Python port
of pipeline/src/classifier.rs featurize) with sluice's default hyper-parameters
(epoch 10, lr 0.5, dim 64, wordNgrams 2, bucket 200,000, minCount 1).

Always thread=1 (one thread makes fastText's SGD deterministic) and seed 0 (fastText's default,
passed explicitly). Newlines (and all whitespace) inside texts become single spaces.

Prints, per tokenizer x setting, precision/recall/F1 per label, macro F1, accuracy, the F1 of
the focus label (--focus-label; default the least frequent label in TRAIN), training and
prediction seconds; --json-out writes the same as JSON.

Needs: pip install fasttext-wheel "numpy<2" jieba   (e.g. in /tmp/ft-venv)

Example:
  python fasttext_zh.py --name cold \
      --train /work/shared/data/classifier/cold/train.csv \
      --test /work/shared/data/classifier/cold/dev.csv \
      --text-column TEXT --label-column label --focus-label 1 \
      --json-out /work/bench/cls/cold/fasttext.json
"""

import argparse
import collections
import csv
import json
import os
import platform
import sys
import tempfile
import time

SETTINGS = {
    "default": dict(epoch=5, lr=0.1, wordNgrams=1, dim=100),
    "ng2_ep25": dict(epoch=25, lr=0.1, wordNgrams=2, dim=100),
    "ng3_ep25": dict(epoch=25, lr=0.1, wordNgrams=3, dim=100),
}
SLUICE_SETTING = ("sluice_defaults", dict(epoch=10, lr=0.5, wordNgrams=2, dim=64, bucket=200000))


def is_cjk(c):
    """pipeline/src/normalize.rs is_cjk."""
    o = ord(c)
    return (0x3000 <= o <= 0x303F or 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF
            or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF
            or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x3134F)


def sluice_chars(text):
    """Port of sluice's Features::Chars (Python's isalnum stands in for Rust's is_alphanumeric)."""
    out = []
    in_word = False
    for c in text:
        if c.isspace():
            in_word = False
        elif is_cjk(c) and c.isalnum():
            out.append(c)
            in_word = False
        elif c.isalnum():
            if in_word:
                out[-1] += c.lower()
            else:
                out.append(c.lower())
            in_word = True
        else:
            out.append(c)
            in_word = False
    return " ".join(out)


def make_tokenizer(name):
    if name == "chars":
        return lambda t: " ".join(c for c in t if not c.isspace())
    if name == "sluice_chars":
        return sluice_chars
    if name == "jieba":
        import jieba
        jieba.setLogLevel(60)
        jieba.initialize()
        return lambda t: " ".join(w for w in jieba.lcut(t) if w.strip())
    raise SystemExit(f"unknown tokenizer {name}")


def clean(text):
    # One example per line for fastText: no newline (nor any other odd whitespace) survives.
    return " ".join(text.split())


def read_csv(path, text_col, label_col):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    for col in (text_col, label_col):
        if col not in rows[0]:
            raise SystemExit(f"{path}: no column {col!r} (have {list(rows[0])})")
    texts, labels, dropped = [], [], 0
    for r in rows:
        t = clean(r[text_col] or "")
        l = (r[label_col] or "").strip()
        if not t or not l:
            dropped += 1
            continue
        texts.append(t)
        labels.append(l)
    return texts, labels, dropped


def scores(gold, pred, labels):
    per = {}
    for l in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == l and p == l)
        fp = sum(1 for g, p in zip(gold, pred) if g != l and p == l)
        fn = sum(1 for g, p in zip(gold, pred) if g == l and p != l)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[l] = dict(precision=prec, recall=rec, f1=f1, support=tp + fn, predicted=tp + fp)
    macro = sum(v["f1"] for v in per.values()) / len(per)
    acc = sum(1 for g, p in zip(gold, pred) if g == p) / len(gold)
    return per, macro, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--name", default=None, help="data set name for the report")
    ap.add_argument("--focus-label", default=None,
                    help="label whose F1 is reported on its own (default: rarest in train)")
    ap.add_argument("--tokenizers", default="jieba,chars")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--sluice-like", action="store_true",
                    help="add sluice_chars tokens with sluice's default hyper-parameters")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--work-dir", default=None, help="where the fastText input files go (default a temp dir)")
    args = ap.parse_args()

    import fasttext
    try:
        from importlib.metadata import version
        ft_version = next((version(p) for p in ("fasttext-wheel", "fasttext") if _has(p)), "?")
    except Exception:  # pragma: no cover
        ft_version = "?"

    name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.train)))
    tr_x, tr_y, tr_drop = read_csv(args.train, args.text_column, args.label_column)
    te_x, te_y, te_drop = read_csv(args.test, args.text_column, args.label_column)
    tr_count = collections.Counter(tr_y)
    te_count = collections.Counter(te_y)
    labels = sorted(set(tr_y) | set(te_y))
    focus = args.focus_label or min(sorted(tr_count), key=lambda l: tr_count[l])
    if focus not in labels:
        raise SystemExit(f"focus label {focus!r} not among {labels}")
    for l in labels:
        if " " in l:
            raise SystemExit(f"label {l!r} has a space")
    print(f"{name}: train {len(tr_x)} {dict(sorted(tr_count.items()))} (dropped {tr_drop} empty), "
          f"test {len(te_x)} {dict(sorted(te_count.items()))} (dropped {te_drop} empty); "
          f"focus label {focus}; fastText {ft_version}, thread=1, seed=0", flush=True)

    runs = []
    for tok in args.tokenizers.split(","):
        runs += [(tok, s, SETTINGS[s]) for s in args.settings.split(",")]
    if args.sluice_like:
        runs.append(("sluice_chars",) + SLUICE_SETTING)

    work = args.work_dir or tempfile.mkdtemp(prefix="fasttext_zh_")
    os.makedirs(work, exist_ok=True)
    tokenized = {}
    results = []
    for tok, setting, params in runs:
        if tok not in tokenized:
            f = make_tokenizer(tok)
            t0 = time.perf_counter()
            trt = [f(t) for t in tr_x]
            tet = [f(t) for t in te_x]
            tok_s = time.perf_counter() - t0
            path = os.path.join(work, f"{name}.{tok}.train.txt")
            with open(path, "w", encoding="utf-8") as out:
                for l, t in zip(tr_y, trt):
                    out.write(f"__label__{l} {t}\n")
            ntok = sum(len(t.split()) for t in trt)
            tokenized[tok] = (path, tet, tok_s, ntok)
        path, tet, tok_s, ntok = tokenized[tok]
        kw = dict(input=path, thread=1, seed=0, verbose=0, **params)
        t0 = time.perf_counter()
        model = fasttext.train_supervised(**kw)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred_labels, _ = model.predict(tet, k=1)
        pred_s = time.perf_counter() - t0
        pred = [p[0][len("__label__"):] if p else "" for p in pred_labels]
        per, macro, acc = scores(te_y, pred, labels)
        r = dict(tokenizer=tok, setting=setting,
                 params=dict(params, thread=1, seed=0),
                 train_seconds=round(train_s, 3), predict_seconds=round(pred_s, 3),
                 tokenize_seconds=round(tok_s, 3), train_tokens=ntok,
                 vocabulary=len(model.words),
                 per_label=per, macro_f1=macro, accuracy=acc,
                 focus_label=focus, focus_f1=per[focus]["f1"])
        results.append(r)
        print(f"  {tok:<12} {setting:<15} macro F1 {macro:.4f}  F1[{focus}] {per[focus]['f1']:.4f}  "
              f"train {train_s:.1f}s", flush=True)

    print()
    print(f"## {name}: official fastText {ft_version} (thread=1, seed=0), test = {os.path.basename(args.test)} "
          f"({len(te_x)} texts)")
    head = "| tokens | setting | " + " | ".join(f"P[{l}] | R[{l}] | F1[{l}]" for l in labels) + \
        " | macro F1 | acc | train s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        cells = []
        for l in labels:
            p = r["per_label"][l]
            cells += [f"{p['precision']:.4f}", f"{p['recall']:.4f}", f"{p['f1']:.4f}"]
        print(f"| {r['tokenizer']} | {r['setting']} | " + " | ".join(cells) +
              f" | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | {r['train_seconds']:.1f} |")
    print(f"(focus label: {focus}; its F1 is the F1[{focus}] column)")

    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        doc = dict(dataset=name, train=os.path.abspath(args.train), test=os.path.abspath(args.test),
                   text_column=args.text_column, label_column=args.label_column,
                   train_counts=dict(tr_count), test_counts=dict(te_count),
                   dropped_empty=dict(train=tr_drop, test=te_drop),
                   focus_label=focus, fasttext_version=ft_version,
                   python=platform.python_version(), machine=platform.machine(),
                   cpus=os.cpu_count(), results=results)
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        print(f"wrote {args.json_out}")


def _has(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
