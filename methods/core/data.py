"""Task data (prompt -> response pairs) and preference pairs, from shipped packages or the hub.

Every source is first turned into *conversations*: lists of (role, text) turns. Task pairs are
(context of the previous ``context_turns`` turns -> next assistant turn). The split is by
conversation, so no conversation contributes to two splits, and is a pure function of
``split_seed``. The same code serves a hub id and a local folder with the same columns
(``datasets.load_dataset`` accepts both).

Output schema (jsonl, loadable with ``datasets.load_dataset("json", ...)``):
    task:        {"id", "prompt", "response", "source"}
    preferences: {"id", "prompt", "chosen", "rejected", "source", "margin"}
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from collections import defaultdict
from pathlib import Path

from .io import read_jsonl, scan_jsonl, write_json, write_jsonl

SPLITS = ("train", "val", "test")

LICENCES = {
    "chitchat": "MIT (chitchat-dataset 0.9.0, Chit Chat Challenge, BYU PCCL)",
    "chatterbot": "BSD-3-Clause (chatterbot-corpus 1.3.3)",
}


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{module}' is not installed; install the pinned requirements (requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------------------------
# conversations from each source: list of (conversation_id, [(role, text), ...], meta)
# --------------------------------------------------------------------------------------------

def chitchat_raw() -> dict:
    return json.loads((_package_dir("chitchat_dataset") / "dataset.json").read_text())


def _chitchat_turns(conv: dict) -> list[str]:
    """A chitchat turn is a run of messages by one sender; join them with spaces."""
    turns = []
    for block in conv["messages"]:
        text = " ".join(m["text"].strip() for m in block if m.get("text", "").strip())
        text = " ".join(text.split())
        if text:
            turns.append(text)
    return turns


def chitchat_conversations() -> list[tuple[str, list[tuple[str, str]], dict]]:
    out = []
    for cid in sorted(raw := chitchat_raw()):
        turns = _chitchat_turns(raw[cid])
        # speakers alternate; every turn after the first is a possible response ("assistant")
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
        conv = [(r, t) for r, t in zip(roles, turns)]
        out.append((cid, conv, {"any_turn_is_response": True}))
    return out


def chatterbot_conversations() -> list[tuple[str, list[tuple[str, str]], dict]]:
    import yaml

    out = []
    root = _package_dir("chatterbot_corpus") / "data" / "english"
    for f in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(f.read_text()) or {}
        for j, conv in enumerate(doc.get("conversations") or []):
            turns = [" ".join(str(t).split()) for t in conv if str(t).strip()]
            if len(turns) >= 2:
                roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
                out.append((f"chatterbot-{f.stem}-{j}", list(zip(roles, turns)), {}))
    return out


def load_hf(hf: dict, field: str, required: tuple[tuple[str, ...], ...] = (), bad_rows: str = "error"):
    """Rows from a hub id (``datasets``) or from a local folder of jsonl/json/parquet files (same schema).

    Returns (rows, report). A row is *empty* when none of the ``required`` field sets is fully
    present and non-empty; local jsonl lines that are not JSON objects are *malformed*. Both are
    counted in the report (file:line or row index) and, per ``bad_rows``, rejected with an error
    naming the first one (``error``) or skipped (``skip``)."""
    import datasets

    path = hf["path"]
    kwargs = {k: hf[k] for k in ("name", "data_dir") if hf.get(k)}
    report = {"policy": bad_rows, "malformed": [], "empty": []}
    where = None  # per row: file:line (local jsonl) or "row i of <path>"
    if Path(path).is_dir():
        files = sorted(str(p) for p in Path(path).rglob("*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if not files:
            raise FileNotFoundError(f"{field}: local folder {path} holds no .jsonl/.json/.parquet files")
        if all(f.endswith(".jsonl") for f in files):
            rows, where = [], []
            for f in files:
                got, rep = scan_jsonl(f, bad_rows)
                rows += got
                where += [f"{f}:{i}" for i in rep["lines"]]
                report["malformed"] += [f"{f}:{i}" for i in rep["malformed"]]
                report["empty"] += [f"{f}:{i}" for i in rep["empty"]]
        else:
            kind = "parquet" if files[0].endswith(".parquet") else "json"
            rows = list(datasets.load_dataset(kind, data_files=files, split="train"))
    else:
        rows = list(datasets.load_dataset(path, split=hf.get("split", "train"), **kwargs))
    where = where or [f"row {i} of {path}" for i in range(len(rows))]
    fix = "fix the data or set bad_rows: skip in that config section to skip (and count) such rows"
    kept = []
    for at, row in zip(where, rows):
        keys = next((ks for ks in required if all(_filled(row.get(k)) for k in ks)), None)
        if required and keys is None:
            if bad_rows == "error":
                raise ValueError(f"{field}: {at} has none of the fields "
                                 f"{' or '.join('/'.join(k) for k in required)} filled in ({sorted(row)}); {fix}")
            report["empty"].append(at)
            continue
        wrong = next((k for k in keys or () if not _is_text(k, row[k])), None)
        if wrong is not None:
            if bad_rows == "error":
                raise ValueError(f"{field}: {at}: field {wrong!r} holds {str(row[wrong])[:60]!r} "
                                 f"({type(row[wrong]).__name__}), expected text; {fix}")
            report["malformed"].append(at)
            continue
        kept.append(row)
    if report["malformed"] or report["empty"]:
        print(f"{field}: skipped {len(report['malformed'])} malformed and {len(report['empty'])} empty rows of "
              f"{path} (bad_rows: skip); listed in the data card")
    return kept, {**report, "n_malformed": len(report["malformed"]), "n_empty": len(report["empty"]),
                  "n_kept": len(kept)}


def _is_text(key: str, v) -> bool:
    """Text fields hold strings; ``messages`` is a list of {role, content} with string content."""
    if key == "messages":
        return isinstance(v, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                           and isinstance(m.get("role"), str) for m in v)
    return isinstance(v, str)


def _filled(v) -> bool:
    return v is not None and (not isinstance(v, (str, list)) or len(v) > 0) and (not isinstance(v, str) or v.strip())


def hf_conversations(hf: dict) -> tuple[list[tuple[str, list[tuple[str, str]], dict]], dict]:
    """Hub id or local folder with a ``messages`` column (UltraChat) or ``prompt``/``response``;
    returns the conversations and the bad-row report."""
    path = hf["path"]
    ds, report = load_hf(hf, "data.hf.path", (("messages",), ("prompt", "response")), hf.get("bad_rows", "error"))
    out = []
    for i, row in enumerate(ds):
        cid = str(row.get("prompt_id") or row.get("id") or i)
        if "messages" in row and row["messages"]:
            conv = [(m["role"], " ".join(str(m["content"]).split())) for m in row["messages"]]
        elif "prompt" in row and "response" in row:
            conv = [("user", row["prompt"]), ("assistant", row["response"])]
        else:
            raise ValueError(f"data.hf: rows of {path} need a 'messages' column or 'prompt'/'response' columns; "
                             f"got {sorted(row)}")
        out.append((f"{cid}", conv, {}))
    if not out:
        raise ValueError(f"data.hf.path: {path} holds no usable rows ({report['n_malformed']} malformed, "
                         f"{report['n_empty']} empty); point data.hf.path at a folder of jsonl/parquet files with "
                         f"'messages' or 'prompt'/'response' columns")
    return out, report


# --------------------------------------------------------------------------------------------
# pairs and splits
# --------------------------------------------------------------------------------------------

def conversation_pairs(cid, conv, meta, context_turns: int, max_chars: int, source: str,
                       dropped: dict | None = None) -> list[dict]:
    """(previous ``context_turns`` turns -> next turn) pairs of one conversation. Pairs with an empty
    side, a response over ``max_chars`` characters or a prompt over ``max_chars * context_turns`` are
    left out and counted in ``dropped`` ("empty", "too_long"), which the data card reports."""
    pairs = []
    for i in range(1, len(conv)):
        role, text = conv[i]
        if role != "assistant" and not meta.get("any_turn_is_response"):
            continue
        context = [t for _, t in conv[max(0, i - context_turns):i]]
        prompt = "\n".join(context)
        why = ("empty" if not prompt or not text else
               "too_long" if len(text) > max_chars or len(prompt) > max_chars * context_turns else None)
        if why:
            if dropped is not None:
                dropped[why] = dropped.get(why, 0) + 1
            continue
        pairs.append({"id": f"{cid}:{i}", "prompt": prompt, "response": text, "source": source})
    return pairs


def _conversations(cfg: dict) -> tuple[list, dict]:
    src = cfg["source"]
    if src == "chitchat":
        convs = [(c, t, m, "chitchat") for c, t, m in chitchat_conversations()]
        info = {"source": "chitchat-dataset==0.9.0 (PyPI)", "licence": LICENCES["chitchat"]}
    elif src == "hf":
        convs, bad = hf_conversations(cfg["hf"])
        convs = [(c, t, m, "hf") for c, t, m in convs]
        info = {"source": f"datasets.load_dataset({cfg['hf']['path']!r})",
                "licence": cfg["hf"].get("licence", "see the dataset card of the source"), "bad_rows": bad}
    else:  # guarded by the schema
        raise ValueError(f"data.source: unknown source {src!r}")
    return convs, info


def build_task_splits(cfg: dict, out_dir: str | Path) -> dict:
    """Write train/val/test jsonl and data_card.json into ``out_dir``; return the card.

    Conversations are shuffled with ``split_seed``; test and val reserve ``n_test``/``n_val``
    conversations each and draw that many pairs at random from all their pairs (so held-out pairs
    follow the train distribution), train takes every pair of the remaining ones, subsampled to
    ``n_train``. chatterbot pairs, if enabled, join the train pool only.
    """
    out_dir = Path(out_dir)
    convs, info = _conversations(cfg)
    rng = random.Random(cfg["split_seed"])
    order = list(range(len(convs)))
    rng.shuffle(order)
    pools = {s: [] for s in SPLITS}
    counts_conv = {s: 0 for s in SPLITS}
    dropped = {"empty": 0, "too_long": 0}
    for idx in order:
        cid, conv, meta, source = convs[idx]
        pairs = conversation_pairs(cid, conv, meta, cfg["context_turns"], cfg["max_chars"], source, dropped)
        if not pairs:
            continue
        for split in ("test", "val"):
            if counts_conv[split] < cfg[f"n_{split}"]:
                pools[split].extend(pairs)
                counts_conv[split] += 1
                break
        else:
            pools["train"].extend(pairs)
            counts_conv["train"] += 1
    for split in ("test", "val"):
        if counts_conv[split] < cfg[f"n_{split}"]:
            usable = sum(counts_conv.values())
            raise ValueError(f"data.n_{split}: {cfg[f'n_{split}']} held-out conversations asked for, but "
                             f"{info['source']} has {usable} usable conversations in all ({len(convs)} read; "
                             f"pairs left out: {dropped['empty']} with an empty side, {dropped['too_long']} over "
                             f"data.max_chars = {cfg['max_chars']}); lower data.n_test and data.n_val, raise "
                             f"data.max_chars, or add data")
        # pairs drawn at random from the held-out conversations' pairs: the same distribution as train
        # (long conversations contribute more pairs), so a constraint met on train prompts is checked
        # on like prompts (one pair per conversation had shifted SFT's rating reward by 0.3 std)
        pools[split] = rng.sample(pools[split], cfg[f"n_{split}"])
    if cfg.get("chatterbot"):
        for cid, conv, meta in chatterbot_conversations():
            pools["train"].extend(conversation_pairs(cid, conv, meta, cfg["context_turns"], cfg["max_chars"],
                                                     "chatterbot"))
        info["extra_source"] = {"source": "chatterbot-corpus==1.3.3 (PyPI), train split only",
                                "licence": LICENCES["chatterbot"]}
    n_pool = len(pools["train"])
    if cfg["n_train"] and n_pool > cfg["n_train"]:
        pools["train"] = rng.sample(pools["train"], cfg["n_train"])
    pools["train"].sort(key=lambda r: _stable_key(r["id"], cfg["split_seed"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", pools[split])
    card = {
        **info,
        "task": "prompt (previous turns, newline-joined) -> next turn",
        "context_turns": cfg["context_turns"],
        "max_chars": cfg["max_chars"],
        "pairs_left_out": {**dropped, "rule": "a pair with an empty prompt or response, a response over max_chars "
                                              "characters or a prompt over max_chars * context_turns is left out"},
        "split_seed": cfg["split_seed"],
        "split_rule": "by conversation: shuffled with split_seed; test/val each reserve n conversations and "
                      "draw n pairs at random from all their pairs (the train distribution); train takes every "
                      "pair of the remaining conversations, subsampled to n_train",
        "counts": {s: len(pools[s]) for s in SPLITS},
        "conversations": counts_conv,
        "train_pool_before_subsampling": n_pool,
        "mean_chars": {s: round(sum(len(r["response"]) for r in pools[s]) / max(1, len(pools[s])), 1)
                       for s in SPLITS},
    }
    write_json(out_dir / "data_card.json", card)
    return card


def _stable_key(s: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()


def pretraining_texts(cfg: dict, data_dir: str | Path) -> list[str]:
    """Plain-text documents for pre-training the embedded base model: the *train* conversations
    only (never a val/test conversation), one newline-joined conversation per document."""
    convs, _ = _conversations(cfg)
    held_out = set()
    for split in ("val", "test"):
        held_out |= {r["id"].rsplit(":", 1)[0] for r in read_jsonl(Path(data_dir) / f"{split}.jsonl")}
    return ["\n".join(t for _, t in conv) for cid, conv, _, _ in convs if cid not in held_out and conv]


# --------------------------------------------------------------------------------------------
# preference pairs
# --------------------------------------------------------------------------------------------

def chitchat_preferences(cfg: dict) -> list[dict]:
    """Real human preference pairs from chitchat ratings.

    Conversations that share an opening prompt are shuffled (``split_seed``) and paired disjointly;
    a pair is kept when the summed ratings (witty + upbeat + interesting, 3..30) differ by at least
    ``min_rating_gap``. The response is the conversation's first ``response_turns`` turns.
    """
    raw = chitchat_raw()
    by_prompt = defaultdict(list)
    for cid in sorted(raw):
        conv = raw[cid]
        if conv.get("ratings") and conv.get("prompt"):
            turns = _chitchat_turns(conv)[: cfg["response_turns"]]
            text = "\n".join(turns)[: cfg["max_chars"]]
            if text:
                by_prompt[conv["prompt"]].append((cid, sum(conv["ratings"].values()), text))
    rng = random.Random(cfg["split_seed"])
    pairs = []
    for prompt in sorted(by_prompt):
        items = by_prompt[prompt]
        rng.shuffle(items)
        for a, b in zip(items[0::2], items[1::2]):
            gap = a[1] - b[1]
            if abs(gap) >= cfg["min_rating_gap"]:
                w, l = (a, b) if gap > 0 else (b, a)
                pairs.append({"id": f"{w[0]}>{l[0]}", "prompt": prompt, "chosen": w[2], "rejected": l[2],
                              "source": "chitchat-ratings", "margin": abs(gap)})
    return pairs


def _split_hh(text: str) -> tuple[str, str]:
    key = "\n\nAssistant:"
    i = text.rfind(key)
    if i < 0:
        raise ValueError("preferences.hf: an HH transcript has no '\\n\\nAssistant:' turn")
    return text[:i], text[i + len(key):].strip()


def hf_preferences(cfg: dict) -> tuple[list[dict], dict]:
    """Anthropic HH-style rows ({"chosen", "rejected"} transcripts) from a hub id or local folder;
    returns the pairs and the bad-row report."""
    ds, bad = load_hf(cfg["hf"], "preferences.hf.path", (("chosen", "rejected"),), cfg["hf"].get("bad_rows", "error"))
    pairs = []
    for i, row in enumerate(ds):
        pc, chosen = _split_hh(row["chosen"])
        pr, rejected = _split_hh(row["rejected"])
        if pc != pr or not chosen or not rejected or chosen == rejected:
            continue
        prompt = pc.replace("\n\nHuman:", "\nHuman:").replace("\n\nAssistant:", "\nAssistant:").strip()
        pairs.append({"id": f"hh-{i}", "prompt": prompt[-cfg["max_chars"] * 4:], "chosen": chosen[: cfg["max_chars"]],
                      "rejected": rejected[: cfg["max_chars"]], "source": "hf", "margin": None})
    return pairs, bad


def build_preferences(cfg: dict, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    if cfg["source"] == "chitchat":
        pairs = chitchat_preferences(cfg)
        info = {"source": "chitchat-dataset==0.9.0 human ratings", "licence": LICENCES["chitchat"],
                "rule": chitchat_preferences.__doc__.strip().split("\n\n")[1].strip()}
    else:
        pairs, bad = hf_preferences(cfg)
        info = {"source": f"datasets.load_dataset({cfg['hf']['path']!r})",
                "licence": cfg["hf"].get("licence", "see the dataset card of the source"), "bad_rows": bad}
    rng = random.Random(cfg["split_seed"] + 1)
    rng.shuffle(pairs)
    n_test = min(cfg["n_test"], len(pairs) // 5)
    splits = {"test": pairs[:n_test], "train": pairs[n_test:]}
    for s, rows in splits.items():
        write_jsonl(out_dir / f"{s}.jsonl", rows)
    card = {**info, "counts": {s: len(r) for s, r in splits.items()}, "split_seed": cfg["split_seed"]}
    write_json(out_dir / "data_card.json", card)
    return card


def to_conversational(rows: list[dict]) -> list[dict]:
    """Task rows as TRL's conversational prompt-completion format."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]


def build_contrast_pairs(cfg: dict, task_dir: str | Path, out_dir: str | Path) -> dict:
    """Preference pairs from real conversational structure: for a task pair (context -> reply), the
    true reply is *chosen* and the reply of another conversation *rejected* (the coherence axis).

    Train pairs come from the task train split, test pairs from the val split (held-out
    conversations), so no test conversation is ever seen. The rejected reply is drawn with
    ``seed`` from the same split, never from the same conversation and never an identical text.
    """
    task_dir, out_dir = Path(task_dir), Path(out_dir)
    rng = random.Random(cfg["seed"])
    splits = {}
    for split, source, n in (("train", "train", cfg["n_train"]), ("test", "val", cfg["n_test"])):
        rows = read_jsonl(task_dir / f"{source}.jsonl")
        if len(rows) < 2:
            raise ValueError(f"contrast: the task {source} split has {len(rows)} pairs; at least 2 are needed")
        picked = rng.sample(rows, min(n, len(rows))) if n else list(rows)
        pairs = []
        for r in picked:
            conv = r["id"].rsplit(":", 1)[0]
            for _ in range(20):
                o = rows[rng.randrange(len(rows))]
                if o["id"].rsplit(":", 1)[0] != conv and o["response"].strip() != r["response"].strip():
                    pairs.append({"id": f"{r['id']}>{o['id']}", "prompt": r["prompt"], "chosen": r["response"],
                                  "rejected": o["response"], "source": "contrast", "margin": None})
                    break
        splits[split] = pairs
    for s, rows in splits.items():
        write_jsonl(out_dir / f"{s}.jsonl", rows)
    card = {"source": "the task data (chitchat-dataset==0.9.0 conversations)", "licence": LICENCES["chitchat"],
            "rule": build_contrast_pairs.__doc__.strip().split("\n\n")[0].replace("\n", " "),
            "splits": {"train": "task train split", "test": "task val split (held-out conversations)"},
            "counts": {s: len(r) for s, r in splits.items()}, "seed": cfg["seed"]}
    write_json(out_dir / "data_card.json", card)
    return card
