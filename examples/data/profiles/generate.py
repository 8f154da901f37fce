"""Regenerate the synthetic user profiles and the user ids of medical_sft_200_users.jsonl.gz.

The profiles are made up (no real person behind them); the dialogues are MedicalGPT's
(Apache-2.0), unchanged except for the added "user_id" field. Run from examples/data/:
    python3 profiles/generate.py
"""
import gzip, json, random

rng = random.Random(7)
regions = ["east", "north", "south", "west", "central"]
crowds = ["student", "office_worker", "retiree", "parent", "self_employed"]
with open("profiles/users.csv", "w", encoding="utf-8") as f:
    f.write("user_id,age,gender,region,crowd\n")
    for i in range(1, 71):
        age = rng.choice([rng.randint(14, 17), rng.randint(18, 34), rng.randint(35, 59), rng.randint(60, 85)])
        age = "" if i % 23 == 0 else str(age)          # a few profiles lack the age
        f.write(f"u{i:04d},{age},{rng.choice('fm')},{rng.choice(regions)},{rng.choice(crowds)}\n")

rows = [json.loads(l) for l in gzip.open("medicalgpt/medical_sft_200.jsonl.gz", "rt", encoding="utf-8")]
with gzip.GzipFile("medicalgpt/medical_sft_200_users.jsonl.gz", "wb", mtime=0) as out:
    for n, r in enumerate(rows):
        if n % 10 != 9:                                  # every tenth record has no user id
            r = {"user_id": f"u{rng.randint(1, 80):04d}", **r}   # users above u0070 have no profile
        out.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
