"""The price answer by least expected percentage error (finetune/price_decoding.py)."""
from __future__ import annotations

import math

import pytest

from finetune.evaluate import ParsedAnswer
from finetune.data import answer_text
from finetune.price_decoding import MAX_CANDIDATES, candidates_by_category, least_expected_mape


def test_the_answer_minimises_the_expected_percentage_error_not_the_probability():
    prices = [100.0, 200.0, 400.0]
    # The most probable price (what greedy decoding writes) is 200, but answering 100 is expected to be
    # less wrong in percent: 0.45 x 50 % + 0.15 x 75 % = 33.8 % against 0.4 x 100 % + 0.15 x 50 % = 47.5 %.
    log_probs = [math.log(p) for p in (0.40, 0.45, 0.15)]
    assert least_expected_mape(prices, log_probs) == 100.0
    # A confident belief is answered as it is; log-probabilities may be any scale (sums over tokens).
    assert least_expected_mape(prices, [-50.0, -1.0, -40.0]) == 200.0
    assert least_expected_mape(prices, [-900.0, -905.0, -901.0]) == 100.0


def test_candidates_are_the_train_prices_of_each_category():
    rows = ([{"category3_code": "SCARVES", "full_price": 490.0}] * 3
            + [{"category3_code": "SCARVES", "full_price": 590.0}]
            + [{"category3_code": "BOOTS", "full_price": p} for p in (990.0, 1290.0)]
            + [{"category3_code": "BOOTS", "full_price": bad} for bad in (None, float("nan"), 0.0)])
    assert candidates_by_category(rows) == {"SCARVES": [490.0, 590.0], "BOOTS": [990.0, 1290.0]}
    many = [{"category3_code": "HATS", "full_price": float(100 + i)} for i in range(MAX_CANDIDATES + 10)]
    many += [{"category3_code": "HATS", "full_price": 999.0}] * 2            # the most frequent is always kept
    kept = candidates_by_category(many)["HATS"]
    assert len(kept) == MAX_CANDIDATES and 999.0 in kept and kept == sorted(kept)


def test_the_rewritten_answer_parses_back():
    from finetune.evaluate import parse_answer

    parsed = parse_answer(answer_text({"title": "Honey Wool Scarf", "category3_code": "SCARVES", "full_price": 490}))
    assert (parsed.title, parsed.category, parsed.price) == ("Honey Wool Scarf", "SCARVES", 490.0)


def test_prices_are_scored_by_the_model_on_its_own_picture_and_answer(monkeypatch):
    torch = pytest.importorskip("torch")
    from _ft_fixtures import indexed_rows_and_tokenizer

    from finetune.builtins import build_builtin
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, build_prompt
    from finetune import price_decoding
    from finetune.price_decoding import mbr_prices, sequence_log_probs

    rows, tokenizer = indexed_rows_and_tokenizer(8, seed=3)
    loaded = build_builtin("tiny", tokenizer, seed=0)
    model = loaded.model.eval()
    prompt = build_prompt(loaded, DEFAULT_QUESTION)

    # The sequence score is the model's own: minus its summed cross-entropy over the answer tokens.
    batch = Collator(loaded.processor, prompt, loaded.end_token, train=True)(rows[:3])
    with torch.no_grad():
        scores = sequence_log_probs(model, batch)
        for i in range(3):
            one = {k: (v[i:i + 1] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 3 else v)
                   for k, v in batch.items()}
            n = int((one["labels"][:, 1:] != -100).sum())
            loss = model(**{k: v for k, v in one.items() if not k.startswith("_")}).loss
            assert scores[i] == pytest.approx(-loss.item() * n, rel=1e-4)

    class Test:   # the test split as evaluation hands it over: rows by index
        def __getitem__(self, i):
            return {k: v for k, v in rows[i].items() if not k.startswith("_")}

    candidates = {"QUILTED JACKETS": [1490.0, 1890.0, 2290.0], "SCARVES": [490.0, 590.0]}
    answers = {i: ParsedAnswer(r["title"], r["category3_code"], 1.0) for i, r in enumerate(rows)}
    answers[0] = ParsedAnswer(None, "SCARVES", 1.0)                      # no title: keeps its greedy price
    got = mbr_prices(model, loaded, Test(), answers, prompt, candidates, batch_size=4, device=torch.device("cpu"))
    expected = {i for i, r in enumerate(rows) if i != 0 and r["category3_code"] in candidates}
    assert set(got) == expected and expected
    for i, price in got.items():
        assert price in candidates[rows[i]["category3_code"]]
    assert model.training is False
    # A model whose forward gives logits at every position (no answer-token path), with a big vocabulary,
    # scores fewer sequences at a time (here one): the same scores and answers.
    monkeypatch.setattr("finetune.loss.supports_answer_loss", lambda model: False)
    monkeypatch.setattr(price_decoding, "LOGITS_BUDGET", 1)
    with torch.no_grad():
        assert sequence_log_probs(model, batch) == pytest.approx(scores, rel=1e-5)
    again = mbr_prices(model, loaded, Test(), answers, prompt, candidates, batch_size=4, device=torch.device("cpu"))
    assert again == got


def test_evaluation_answers_the_scored_price_and_keeps_what_the_model_wrote(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from _ft_fixtures import indexed_rows_and_tokenizer

    import finetune.evaluate as evaluate_mod
    from finetune.builtins import build_builtin
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import INDEX_KEY, build_prompt
    from datasets import Dataset

    rows, tokenizer = indexed_rows_and_tokenizer(12, seed=4)
    loaded = build_builtin("tiny", tokenizer, seed=0)
    plain = [{k: v for k, v in r.items() if k != INDEX_KEY} for r in rows]
    splits = {"train": Dataset.from_list(plain[:8]), "test": Dataset.from_list(plain[8:])}
    # What greedy generation wrote: the true answers with a price the train split never had.
    written = {i: answer_text({**r, "full_price": 12345.0}) for i, r in enumerate(plain[8:])}
    monkeypatch.setattr(evaluate_mod, "generate_texts", lambda *a, **k: dict(written))
    result = evaluate_mod.evaluate(loaded.model, loaded, splits, build_prompt(loaded, DEFAULT_QUESTION),
                                   batch_size=4, price_mbr=True)
    train_prices = {(r["category3_code"], r["full_price"]) for r in plain[:8]}
    scored = [p for p in result.predictions if "greedy_prediction" in p]
    assert scored
    for p in scored:
        assert p["greedy_prediction"] == written[p["index"]]
        assert (p["category3_code"], p["full_price"]) in train_prices
    assert result.metrics["model"]["price_mape_greedy"] > result.metrics["model"]["price_mape_all"]
    off = evaluate_mod.evaluate(loaded.model, loaded, splits, build_prompt(loaded, DEFAULT_QUESTION), batch_size=4)
    assert "price_mape_greedy" not in off.metrics["model"]
    assert all(p["full_price"] == 12345.0 for p in off.predictions if p["parsed"])
