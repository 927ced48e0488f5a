import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def micro_cfg():
    from methods.core.config import load_config

    return load_config(REPO / "config" / "micro.yaml")


@pytest.fixture(scope="session")
def micro_tok(micro_cfg):
    """A tokenizer trained in a second on a slice of chitchat, with the project's chat template."""
    from methods.core.data import chitchat_conversations
    from methods.core.models import train_tokenizer

    texts = ["\n".join(t for _, t in conv) for _, conv, _ in chitchat_conversations()[:200]]
    return train_tokenizer(texts, micro_cfg["base_model"]["pretrain"]["vocab_size"])


@pytest.fixture(scope="session")
def micro_model(micro_cfg, micro_tok):
    """A randomly initialised micro Llama built from config/micro.yaml (seeded)."""
    import torch

    from methods.core.models import micro_llama

    torch.manual_seed(0)
    model = micro_llama(micro_tok, micro_cfg["base_model"]["pretrain"])
    model.eval()
    return model


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, micro_model, micro_tok):
    d = tmp_path_factory.mktemp("micro_model")
    micro_model.save_pretrained(d)
    micro_tok.save_pretrained(d)
    return d
