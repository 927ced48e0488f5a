import json

import datasets
import pytest

from methods.core import data
from methods.core.io import read_jsonl

CFG = dict(source="chitchat", chatterbot=False, context_turns=2, max_chars=300, n_train=3000, n_val=40,
           n_test=40, split_seed=0, hf={})


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    a, b, c = (tmp_path_factory.mktemp(x) for x in "abc")
    data.build_task_splits(CFG, a)
    data.build_task_splits(CFG, b)
    data.build_task_splits({**CFG, "split_seed": 1}, c)
    return a, b, c


def test_split_is_deterministic(splits):
    a, b, c = splits
    for s in data.SPLITS:
        assert (a / f"{s}.jsonl").read_bytes() == (b / f"{s}.jsonl").read_bytes()
    assert (a / "test.jsonl").read_bytes() != (c / "test.jsonl").read_bytes()


def test_no_overlap_between_splits(splits):
    a = splits[0]
    rows = {s: read_jsonl(a / f"{s}.jsonl") for s in data.SPLITS}
    assert [len(rows[s]) for s in data.SPLITS] == [3000, 40, 40]
    conv = {s: {r["id"].rsplit(":", 1)[0] for r in rows[s]} for s in data.SPLITS}
    assert not conv["train"] & conv["test"] and not conv["train"] & conv["val"] and not conv["val"] & conv["test"]
    card = json.loads((a / "data_card.json").read_text())
    assert card["counts"] == {"train": 3000, "val": 40, "test": 40} and "MIT" in card["licence"]
    for r in rows["train"][:50]:
        assert r["prompt"] and r["response"] and len(r["response"]) <= 300


def test_splits_load_with_datasets(splits):
    ds = datasets.load_dataset("json", data_files=str(splits[0] / "test.jsonl"), split="train")
    assert set(ds.column_names) == {"id", "prompt", "response", "source"} and len(ds) == 40


def test_pretraining_corpus_excludes_held_out_conversations(splits):
    a = splits[0]
    texts = data.pretraining_texts(CFG, a)
    held = read_jsonl(a / "test.jsonl")
    corpus = "\n\n".join(texts)
    # a test response with its context, verbatim, never appears in the pre-training text
    assert sum((r["prompt"] + "\n" + r["response"]) in corpus for r in held) == 0


def test_hf_path_reads_local_folder_in_ultrachat_schema(tmp_path):
    rows = [{"prompt_id": f"p{i}", "prompt": f"question {i}?",
             "messages": [{"role": "user", "content": f"question {i}?"},
                          {"role": "assistant", "content": f"answer number {i}."},
                          {"role": "user", "content": "thanks"},
                          {"role": "assistant", "content": "you are welcome"}]} for i in range(30)]
    (tmp_path / "uc").mkdir()
    with open(tmp_path / "uc" / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    cfg = {**CFG, "source": "hf", "context_turns": 1, "n_train": 0, "n_val": 5, "n_test": 5,
           "hf": {"path": str(tmp_path / "uc"), "split": "train"}}
    card = data.build_task_splits(cfg, tmp_path / "out")
    test = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert card["counts"] == {"train": 40, "val": 5, "test": 5}  # 2 assistant turns per conversation
    assert all(r["prompt"].startswith("question") or r["prompt"] == "thanks" for r in test)


def test_chitchat_preferences_are_real_rating_gaps(tmp_path):
    cfg = dict(source="chitchat", min_rating_gap=6, response_turns=3, max_chars=400, n_test=100, split_seed=0, hf={})
    card = data.build_preferences(cfg, tmp_path)
    rows = read_jsonl(tmp_path / "train.jsonl") + read_jsonl(tmp_path / "test.jsonl")
    assert 1000 < len(rows) < 3000 and card["counts"]["test"] == 100
    raw = data.chitchat_raw()
    for r in rows[:200]:
        w, l = r["id"].split(">")
        assert raw[w]["prompt"] == raw[l]["prompt"] == r["prompt"]
        gap = sum(raw[w]["ratings"].values()) - sum(raw[l]["ratings"].values())
        assert gap == r["margin"] >= 6 and r["chosen"] != r["rejected"]
    used = [c for r in rows for c in r["id"].split(">")]
    assert len(used) == len(set(used))  # each conversation in at most one pair


def test_hh_preferences_from_local_folder(tmp_path):
    rows = [{"chosen": f"\n\nHuman: hi {i}\n\nAssistant: hello friend {i}",
             "rejected": f"\n\nHuman: hi {i}\n\nAssistant: go away {i}"} for i in range(20)]
    (tmp_path / "hh").mkdir()
    with open(tmp_path / "hh" / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    cfg = dict(source="hf", max_chars=400, n_test=4, split_seed=0, hf={"path": str(tmp_path / "hh")})
    data.build_preferences(cfg, tmp_path / "out")
    out = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(out) == 16 and all(r["chosen"].startswith("hello friend") for r in out)
    assert all(r["prompt"].startswith("Human: hi") for r in out)
