#!/usr/bin/env python3
"""Reference values for sluice's BLEU, ROUGE-L, exact match and token F1 (trainer/src/metrics.rs), computed once with
the packages practitioners use and committed as trainer/tests/data/metrics_reference.json.

    python3 -m pip install sacrebleu==2.6.0 rouge-score==0.1.2
    python3 trainer/bench/metrics_reference.py > trainer/tests/data/metrics_reference.json

BLEU: sacrebleu's corpus_bleu and sentence_bleu with their defaults (exp smoothing; effective
order for sentences), tokenize "13a" for English and "zh" for Chinese. ROUGE-L: rouge-score's
RougeScorer(["rougeL"]) F-measure, with its default tokenizer for English and, for Chinese, a
tokenizer that makes every CJK ideograph a token and keeps runs of [a-z0-9] (lowercased) as
words: on English text it is the default tokenizer's output.
"""
import json
import re

import sacrebleu
from rouge_score import rouge_scorer

EN = [
    ("The cat sat on the mat.", "The cat is sitting on the mat."),
    ("Take 3.5 mg twice a day, i.e. 7 mg in all.", "Take 3.5 mg two times a day, 7 mg in total."),
    ("Revenue rose to $1,000,000 in 2020-2021.", "Revenue grew to $1,000,000 in 2020-2021!"),
    ("\"Hello,\" she said -- and left.", "She said \"hello\" and left."),
    ("Tom & Jerry's show (episode 12) aired at 8:30pm.", "Tom &amp; Jerry's episode 12 aired at 8:30pm."),
    ("no overlap here", "completely different words"),
    ("A", "A"),
    ("Please restart the router, then call support.", "please restart the router and then call support"),
]
ZH = [
    ("我今天头疼，应该吃什么药？", "今天头疼的话应该吃什么药？"),
    ("建议多喝水，注意休息。", "建议你多喝水并注意休息。"),
    ("这款基金的年化收益率为3.5%。", "该基金年化收益约为3.5%。"),
    ("请在2020-01-01之前提交ABC表格。", "请于2020-01-01前提交ABC表。"),
    ("他说：“明天见”……然后走了。", "他说明天见，然后就走了。"),
    ("你好", "再见"),
    ("使用Python和Rust开发服务", "用 Rust 与 Python 开发服务"),
    ("血压偏高时——尤其是早晨——要按时服药！", "血压高的时候要按时服药，早上尤其如此。"),
]

# Exact match and token F1 as the official SQuAD v1.1 evaluation script computes them (its
# normalize_answer, f1_score and exact_match_score, copied).
import collections
import string


def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction, ground_truth):
    p = normalize_answer(prediction).split()
    g = normalize_answer(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(p)
    recall = 1.0 * num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


def squad_em(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


SQUAD = [
    ("Denver Broncos", "The Denver Broncos"),
    ("the Broncos of Denver", "Denver Broncos"),
    ("Santa Clara, California", "Santa Clara"),
    ("Levi's Stadium", "Levis Stadium."),
    ("1,000 mg", "1000 mg"),
    ("an apple a day", "An apple, a day!"),
    ("nothing", "Something else entirely"),
]

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[a-z0-9]+")


class CharTokenizer:
    def tokenize(self, text):
        return CJK.findall(text.lower())


def block(pairs, tokenize, scorer):
    hyps = [h for h, _ in pairs]
    refs = [r for _, r in pairs]
    out = {
        "corpus_bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score,
        "pairs": [],
    }
    for h, r in pairs:
        out["pairs"].append({
            "hypothesis": h,
            "reference": r,
            "sentence_bleu": sacrebleu.sentence_bleu(h, [r], tokenize=tokenize).score,
            "rouge_l": scorer.score(r, h)["rougeL"].fmeasure,
        })
    return out


print(json.dumps({
    "command": "python3 trainer/bench/metrics_reference.py (sacrebleu "
               f"{sacrebleu.__version__}, rouge-score)",
    "en": block(EN, "13a", rouge_scorer.RougeScorer(["rougeL"])),
    "zh": block(ZH, "zh", rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())),
    "squad": [
        {"prediction": p, "reference": r, "exact_match": squad_em(p, r), "f1": squad_f1(p, r)}
        for p, r in SQUAD
    ],
}, ensure_ascii=False, indent=1))
