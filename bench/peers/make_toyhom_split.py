#!/usr/bin/env python3
"""The third classifier set of the README: medical departments from Chinese-medical-dialogue-data.

Reads the GB18030 CSV (department,title,ask,answer) bundled in ../shared/data, classifies
title + ask by department (11 classes, 14 to 2,375 training examples), drops exact duplicate
texts and makes a deterministic 80/20 split by the md5 of the text. Writes label,text CSVs.

  python3 bench/peers/make_toyhom_split.py \
      ../shared/data/sft/toyhom_medical/sample_IM_5000-6000.csv --out-dir ../bench/cls/toyhom
"""

import argparse
import csv
import hashlib
import os
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv_path")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    with open(args.csv_path, encoding="gb18030", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    seen, train, test = set(), [], []
    for r in rows:
        text = (r["title"] + " " + r["ask"]).strip()
        if not text or text in seen:
            continue
        seen.add(text)
        bucket = int(hashlib.md5(text.encode()).hexdigest()[:8], 16) % 100
        (test if bucket < 20 else train).append((r["department"], text))
    os.makedirs(args.out_dir, exist_ok=True)
    for name, data in (("train", train), ("test", test)):
        with open(os.path.join(args.out_dir, f"{name}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "text"])
            w.writerows(data)
    print(f"{len(rows)} rows -> train {len(train)}, test {len(test)}")
    print("train labels:", dict(Counter(label for label, _ in train).most_common()))


if __name__ == "__main__":
    main()
