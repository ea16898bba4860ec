"""Price scoring (finetune/price_decoding.py) on every model family: the teacher-forced score of a price is
the model's own (minus its cross-entropy over the answer), whatever extra inputs the family's processor
adds (image grids, cross-attention masks, token types), and each scored row gets a train-split price."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import test_families as first  # noqa: E402
import test_families_more as more  # noqa: E402
from test_families import built_models, isolated, mixed_dataset  # noqa: E402,F401 - isolated: a fixture

BUILDERS = {**first.BUILDERS, **more.BUILDERS}
built = built_models(BUILDERS)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return mixed_dataset(tmp_path_factory.mktemp("price-decoding") / "data", n_train=4, n_test=4)


@pytest.mark.parametrize("family", tuple(BUILDERS))
def test_each_family_scores_prices_with_its_own_loss(family, built, data):
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, RowsDataset, build_prompt, load_splits, model_inputs
    from finetune.evaluate import ParsedAnswer
    from finetune.models import load_pretrained
    from finetune.price_decoding import mbr_prices, sequence_log_probs

    loaded = load_pretrained(str(built(family)))
    model = loaded.model.eval()
    prompt = build_prompt(loaded, DEFAULT_QUESTION)
    test = load_splits(str(data))["test"]
    rows = RowsDataset(test).__getitems__([0, 1])
    batch = Collator(loaded.processor, prompt, loaded.end_token, train=True)(rows)
    assert not batch["_skipped"]
    with torch.no_grad():
        scores = sequence_log_probs(model, batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        mean = model(**model_inputs(batch), labels=batch["labels"]).loss.item()   # over both rows' tokens
    assert sum(scores) == pytest.approx(-mean * n, rel=1e-3)

    candidates = {rows[0]["category3_code"]: [450.0, 990.0, 1890.0]}
    answers = {i: ParsedAnswer(r["title"], r["category3_code"], 1.0) for i, r in enumerate(rows)}
    got = mbr_prices(model, loaded, test, answers, prompt, candidates, batch_size=2, device=torch.device("cpu"))
    scored = {i for i, r in enumerate(rows) if r["category3_code"] in candidates}
    assert set(got) == scored and all(got[i] in candidates[rows[i]["category3_code"]] for i in scored)
