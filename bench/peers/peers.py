#!/usr/bin/env python3
"""Single-core throughput of the Python tools a user would pick instead of sluice.

Each step runs over the same records on ONE core (no threads, no multiprocessing) and
prints one JSON line:
  {"tool", "step", "lang", "docs", "mb", "cpu_s", "wall_s", "mb_per_s", "docs_per_s", "note", ...}
cpu_s is time.process_time() around the work only: JSON loading, building the texts,
constructing datatrove Documents and warm-ups are outside it. mb is the UTF-8 size of the
texts the step reads (10^6 bytes).

See README.md beside this file for what each step corresponds to in sluice.
"""

import os

# One core only: must be set before numpy / tokenizers / spaCy are imported.
for _var in (
    "RAYON_NUM_THREADS",
    "RAYON_RS_NUM_CPUS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version as _pkg_version  # noqa: E402
from pathlib import Path  # noqa: E402

ALL_STEPS = [
    "gopher_rep",  # datatrove GopherRepetitionFilter
    "gopher_quality",  # datatrove GopherQualityFilter
    "gopher_chain",  # both, as a datatrove pipeline would chain them (rep, then quality on kept docs)
    "c4",  # datatrove C4QualityFilter
    "fineweb",  # datatrove FineWebQualityFilter
    "pii",  # datatrove PIIFormatter (emails + IPs)
    "jieba",  # jieba.lcut
    "minhash",  # datasketch MinHash signatures
    "minhash_fresh",  # same, but a fresh MinHash(num_perm=128) per doc (redraws permutations)
    "minhash_lsh",  # datasketch signatures + MinHashLSH query + insert
    "tok_encode",  # HF tokenizers, encode() one text at a time
    "tok_batch",  # HF tokenizers, encode_batch(all)
]

# datatrove language codes. NB: datatrove 0.10.1 resolves "zh" to spaCy's multilingual "xx"
# tokenizer and "zho" (= Languages.chinese) to a whitespace tokenizer, neither of which splits
# Chinese words (its tokenizer_assignment.csv loader treats the string "FALSE" as true).
# "cmn" (= Languages.mandarin_chinese) gets spaCy "zh" with the jieba segmenter.
DEFAULT_DT_LANG = {"en": "eng", "zh": "cmn"}


def pkg(name):
    try:
        return f"{name} {_pkg_version(name)}"
    except Exception:
        return name


def default_tokenizer_path():
    here = Path(__file__).resolve()
    repo = here.parents[2]  # bench/peers/peers.py -> repo root
    candidates = [
        Path("/work/shared/data/tokenizers/qwen2/tokenizer.json"),
        repo / "shared/data/tokenizers/qwen2/tokenizer.json",
        repo.parent / "shared/data/tokenizers/qwen2/tokenizer.json",
    ]
    for c in candidates:
        if c.is_file():
            return str(c)
    return str(candidates[0])


def load_records(path, limit):
    """Returns (texts, chatml_or_doc_strings, kind)."""
    texts, rendered = [], []
    kinds = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "turns" in rec:
                kinds["dialogue"] += 1
                turns = rec["turns"]
                texts.append("\n".join(t.get("content", "") for t in turns))
                rendered.append(
                    "".join(
                        f"<|im_start|>{t['role']}\n{t.get('content', '')}<|im_end|>\n"
                        for t in turns
                        if t.get("role") != "system"
                    )
                )
            else:
                kinds["document"] += 1
                text = rec.get("text", "")
                texts.append(text)
                rendered.append(text + "<|endoftext|>")
            if limit and len(texts) >= limit:
                break
    kind = "+".join(sorted(kinds)) or "empty"
    return texts, rendered, kind


def mb_of(strings):
    return sum(len(s.encode("utf-8")) for s in strings) / 1e6


class Bench:
    def __init__(self, lang):
        self.lang = lang
        self.results = []

    def emit(self, tool, step, docs, mb, cpu_s, wall_s, note="", **extra):
        r = {
            "tool": tool,
            "step": step,
            "lang": self.lang,
            "docs": docs,
            "mb": round(mb, 3),
            "cpu_s": round(cpu_s, 3),
            "wall_s": round(wall_s, 3),
            "mb_per_s": round(mb / cpu_s, 3) if cpu_s > 0 else None,
            "docs_per_s": round(docs / cpu_s, 1) if cpu_s > 0 else None,
            "note": note,
        }
        r.update(extra)
        if wall_s > 0.05 and cpu_s > 1.2 * wall_s:
            r["note"] += "; WARNING cpu_s > wall_s: more than one core was used"
        self.results.append(r)
        print(json.dumps(r, ensure_ascii=False), flush=True)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    c1, w1 = time.process_time(), time.perf_counter()
    return out, c1 - c0, w1 - w0


def outcome_note(results):
    """Summarize filter results: kept count and top drop reasons."""
    kept = 0
    reasons = collections.Counter()
    for r in results:
        ok, why = (r if isinstance(r, tuple) else (r, None))
        if ok:
            kept += 1
        else:
            reasons[why or "?"] += 1
    top = ", ".join(f"{k}={v}" for k, v in reasons.most_common(4))
    return kept, f"kept {kept}/{len(results)}" + (f"; dropped: {top}" if top else "")


# --------------------------------------------------------------------------- datatrove


def run_datatrove(bench, steps, texts, lang, dt_lang):
    from datatrove.data import Document
    from datatrove.utils import text as dt_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    import datatrove.pipeline.filters as F
    import datatrove.pipeline.formatters as FO

    tool = pkg("datatrove")
    mb = mb_of(texts)

    # Warm up: load spaCy (and jieba's dictionary for zh) before any timing.
    wt = load_word_tokenizer(dt_lang)
    wt.word_tokenize("warm up 预热一下分词器。" if lang == "zh" else "warm up the tokenizer.")
    wt_desc = f"{type(wt).__name__}({getattr(wt, 'language', None) or ''}"
    cfg = getattr(wt, "config", None)
    if cfg:
        wt_desc += f", segmenter={cfg['nlp']['tokenizer'].get('segmenter')}"
    wt_desc += ")"
    base_note = f"datatrove language={dt_lang!r} -> word tokenizer {wt_desc}; default params"

    def docs():
        return [Document(text=t, id=str(i)) for i, t in enumerate(texts)]

    def run_filter(name, make):
        cls = getattr(F, name, None)
        if cls is None:
            bench.emit(tool, name, 0, 0, 0, 0, note="not in this datatrove version; skipped")
            return
        flt = make(cls)
        batch = docs()
        dt_text.split_into_parts.cache_clear()  # datatrove memoizes the last 5 word splits
        res, cpu, wall = timed(lambda: [flt.filter(d) for d in batch])
        kept, note = outcome_note(res)
        bench.emit(tool, name, len(batch), mb, cpu, wall, note=f"{base_note}; {note}", kept=kept)

    if "gopher_rep" in steps:
        run_filter("GopherRepetitionFilter", lambda c: c(language=dt_lang))
    if "gopher_quality" in steps:
        run_filter("GopherQualityFilter", lambda c: c(language=dt_lang))
    if "gopher_chain" in steps:
        rep = F.GopherRepetitionFilter(language=dt_lang)
        qual = F.GopherQualityFilter(language=dt_lang)
        batch = docs()
        dt_text.split_into_parts.cache_clear()

        def chain():
            out = []
            for d in batch:
                r = rep.filter(d)
                ok = r[0] if isinstance(r, tuple) else r
                out.append(qual.filter(d) if ok else r)
            return out

        res, cpu, wall = timed(chain)
        kept, note = outcome_note(res)
        bench.emit(
            tool,
            "GopherRepetitionFilter+GopherQualityFilter",
            len(batch),
            mb,
            cpu,
            wall,
            note=f"{base_note}; quality runs only on docs the repetition filter keeps, reusing its "
            f"memoized word split (as in a datatrove pipeline); {note}",
            kept=kept,
        )
    if "c4" in steps:
        run_filter("C4QualityFilter", lambda c: c(language=dt_lang))
    if "fineweb" in steps:
        run_filter("FineWebQualityFilter", lambda c: c(language=dt_lang))
    if "pii" in steps:
        cls = getattr(FO, "PIIFormatter", None)
        if cls is None:
            bench.emit(tool, "PIIFormatter", 0, 0, 0, 0, note="not in this datatrove version; skipped")
        else:
            fmt = cls()
            out, cpu, wall = timed(lambda: [fmt.format(t) for t in texts])
            changed = sum(a != b for a, b in zip(texts, out))
            bench.emit(
                tool,
                "PIIFormatter",
                len(texts),
                mb,
                cpu,
                wall,
                note=f"format(text) per doc: emails + public IPv4 replaced; {changed} docs changed",
                changed=changed,
            )


# --------------------------------------------------------------------------- jieba


def run_jieba(bench, texts):
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()  # load the default dictionary outside the timing
    jieba.lcut("预热一下分词器。")
    out, cpu, wall = timed(lambda: [jieba.lcut(t) for t in texts])
    words = sum(len(w) for w in out)
    bench.emit(
        pkg("jieba"),
        "jieba.lcut",
        len(texts),
        mb_of(texts),
        cpu,
        wall,
        note=f"default dictionary, cut_all=False, HMM=True; {words} words",
        words=words,
    )


# --------------------------------------------------------------------------- datasketch


def make_shingler(lang, zh_ngram, en_ngram):
    if lang == "zh":
        n = zh_ngram

        def shingles(text):
            s = {text[i : i + n] for i in range(len(text) - n + 1)}
            return s or ({text} if text else set())

        desc = f"character {n}-grams of the raw text (set)"
    else:
        n = en_ngram

        def shingles(text):
            toks = text.lower().split()
            s = {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}
            return s or ({" ".join(toks)} if toks else set())

        desc = f"lowercased whitespace-token {n}-grams (set)"
    return shingles, desc


def run_datasketch(bench, steps, texts, lang, zh_ngram, en_ngram, threshold, num_perm):
    from datasketch import MinHash, MinHashLSH

    tool = pkg("datasketch")
    mb = mb_of(texts)
    shingles, sh_desc = make_shingler(lang, zh_ngram, en_ngram)
    # Reuse one set of permutations (the documented fast path); a fresh MinHash(num_perm=128)
    # per doc would redraw them with numpy's RandomState every time.
    template = MinHash(num_perm=num_perm)
    perms, scheme = template.permutations, template.scheme

    def sig(text):
        m = MinHash(num_perm=num_perm, permutations=perms, scheme=scheme)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        return m

    sig(texts[0] if texts else "warm up")  # warm up
    base = f"MinHash(num_perm={num_perm}, scheme={scheme}, sha1_hash32) over {sh_desc}, update_batch"

    if "minhash" in steps:
        _, cpu, wall = timed(lambda: [sig(t) for t in texts])
        bench.emit(tool, "MinHash", len(texts), mb, cpu, wall, note=base)
    if "minhash_fresh" in steps:

        def sig_fresh(text):
            m = MinHash(num_perm=num_perm)
            m.update_batch([s.encode("utf-8") for s in shingles(text)])
            return m

        _, cpu, wall = timed(lambda: [sig_fresh(t) for t in texts])
        bench.emit(
            tool,
            "MinHash(fresh)",
            len(texts),
            mb,
            cpu,
            wall,
            note=base.replace("update_batch", "update_batch; a fresh MinHash(num_perm) per doc, "
                              "which redraws its permutations with numpy RandomState"),
        )
    if "minhash_lsh" in steps:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        b, r = lsh.b, lsh.r

        def run():
            dups = 0
            for i, t in enumerate(texts):
                m = sig(t)
                if lsh.query(m):
                    dups += 1
                lsh.insert(str(i), m)
            return dups

        dups, cpu, wall = timed(run)
        bench.emit(
            tool,
            "MinHash+MinHashLSH",
            len(texts),
            mb,
            cpu,
            wall,
            note=f"{base}; MinHashLSH(threshold={threshold}, bands={b}, rows={r}) query then insert "
            f"per doc; {dups} docs had a candidate",
            candidates=dups,
        )


# --------------------------------------------------------------------------- tokenizers


def run_tokenizers(bench, steps, rendered, kind, tokenizer_path):
    from tokenizers import Tokenizer

    tool = pkg("tokenizers")
    tok = Tokenizer.from_file(tokenizer_path)
    tok.encode("warm up <|im_start|>user\n预热<|im_end|>\n")
    mb = mb_of(rendered)
    what = (
        "ChatML <|im_start|>{role}\\n{content}<|im_end|>\\n per turn (system omitted)"
        if kind.startswith("dialogue")
        else "text + <|endoftext|>"
    )
    base = f"qwen2 tokenizer.json; input = {what}; mb counts the rendered string"
    if "tok_encode" in steps:
        encs, cpu, wall = timed(lambda: [tok.encode(s) for s in rendered])
        ntok = sum(len(e.ids) for e in encs)
        bench.emit(
            tool,
            "Tokenizer.encode",
            len(rendered),
            mb,
            cpu,
            wall,
            note=f"{base}; one at a time",
            tokens=ntok,
            tokens_per_s=round(ntok / cpu, 1) if cpu > 0 else None,
        )
    if "tok_batch" in steps:
        encs, cpu, wall = timed(lambda: tok.encode_batch(rendered))
        ntok = sum(len(e.ids) for e in encs)
        bench.emit(
            tool,
            "Tokenizer.encode_batch",
            len(rendered),
            mb,
            cpu,
            wall,
            note=f"{base}; one call over all docs, RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false",
            tokens=ntok,
            tokens_per_s=round(ntok / cpu, 1) if cpu > 0 else None,
        )


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="JSONL: {turns:[{role,content}]} or {text}")
    ap.add_argument("--limit", type=int, default=0, help="first N records only (0 = all)")
    ap.add_argument("--lang", choices=["zh", "en"], required=True)
    ap.add_argument(
        "--steps",
        default="all",
        help="comma-separated subset of: " + ",".join(ALL_STEPS) + " (default all)",
    )
    ap.add_argument("--json-out", help="also write all results as one JSON array to this file")
    ap.add_argument("--tokenizer", default=default_tokenizer_path(), help="qwen2 tokenizer.json")
    ap.add_argument(
        "--dt-lang",
        help="datatrove language code (default eng for en, cmn for zh; see README on zh/zho)",
    )
    ap.add_argument("--zh-ngram", type=int, default=5, help="MinHash character n-gram for zh (5)")
    ap.add_argument("--en-ngram", type=int, default=3, help="MinHash word n-gram for en (3)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    args = ap.parse_args(argv)

    steps = ALL_STEPS if args.steps == "all" else [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        ap.error(f"unknown steps {unknown}; choose from {ALL_STEPS}")

    tok_steps = {"tok_encode", "tok_batch"} & set(steps)
    if tok_steps and not Path(args.tokenizer).is_file():
        # Say so before the slow steps, not after them: the Qwen2 tokenizer.json is not in the
        # repository (sluice's tests read it from ../shared/data/tokenizers/qwen2; any copy of
        # Qwen2/Qwen2.5's tokenizer.json does).
        print(
            f"# no tokenizer at {args.tokenizer}: skipping {sorted(tok_steps)} "
            "(pass --tokenizer PATH/TO/qwen2/tokenizer.json)",
            file=sys.stderr,
            flush=True,
        )
        steps = [s for s in steps if s not in tok_steps]

    texts, rendered, kind = load_records(args.input, args.limit)
    if not texts:
        ap.error(f"no records in {args.input}")
    print(
        f"# {args.input}: {len(texts)} records ({kind}), {mb_of(texts):.3f} MB text, lang={args.lang}, "
        f"python {sys.version.split()[0]}",
        file=sys.stderr,
        flush=True,
    )

    bench = Bench(args.lang)
    dt_steps = {"gopher_rep", "gopher_quality", "gopher_chain", "c4", "fineweb", "pii"}
    if dt_steps & set(steps):
        run_datatrove(bench, steps, texts, args.lang, args.dt_lang or DEFAULT_DT_LANG[args.lang])
    if "jieba" in steps:
        run_jieba(bench, texts)
    if {"minhash", "minhash_fresh", "minhash_lsh"} & set(steps):
        run_datasketch(
            bench, steps, texts, args.lang, args.zh_ngram, args.en_ngram, args.threshold, args.num_perm
        )
    if {"tok_encode", "tok_batch"} & set(steps):
        run_tokenizers(bench, steps, rendered, kind, args.tokenizer)

    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(bench.results, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
