"""The data ops one by one: normalize options, regex ops, quality rules, PII, MinHash near-dedup, stratified split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from llmrecipe.data.corpusjobs import InProcessDedup
from llmrecipe.data.dedup import NearDedup, components, components_of
from llmrecipe.data.minhash import signatures
from llmrecipe.data.ops import OPS
from llmrecipe.data.pii import iban_valid, luhn_valid
from llmrecipe.data.split import assign_splits
from llmrecipe.recipe.data import DedupNear, Normalize, Pii, Quality, RegexFilter, RegexReplace, Split

ENGLISH = ("The history of the town is long and that is why the people who have lived with it know it well. "
           "They walk to the market and back, and they talk of the weather and of the harvest to come. "
           "In winter the river freezes over, children skate beneath the old bridge, and their parents watch. ")


def frame_of(*texts: str, source: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"0:d#{k}" for k in range(len(texts))], "text": list(texts),
                         "source": source or [0] * len(texts)},
                        schema={"id": pl.String, "text": pl.String, "source": pl.Int32})


def texts_after(op, *texts: str) -> list[str]:
    return OPS[op.op](frame_of(*texts), op).frame["text"].to_list()


def drops(op, *texts: str) -> list[str | None]:
    return OPS[op.op](frame_of(*texts), op).drop.to_list()


# normalize and regex


def test_fix_encoding_repairs_mojibake_and_counts_it():
    result = OPS["normalize"](frame_of("caf\u00c3\u00a9 cr\u00c3\u00a8me", "plain"), Normalize(fix_encoding=True))
    assert result.frame["text"].to_list() == ["café crème", "plain"]
    assert result.counters["encoding_fixed"] == 1


def test_strip_markup_removes_tags_scripts_and_decodes_entities():
    html = "<html><script>var x = 1;</script><p>Fish &amp; chips&#33;</p><!-- note --></html>"
    assert texts_after(Normalize(strip_markup=True), html) == ["Fish & chips!"]


def test_control_characters_and_lowercase():
    assert texts_after(Normalize(lowercase=True), "A\x07B\x1bC\tD\u0130") == ["abc\td" + "i\u0307"]


def test_regex_replace_and_filter():
    assert texts_after(RegexReplace(pattern=r"\d+", replacement="#"), "a1 b22") == ["a# b#"]
    assert drops(RegexFilter(pattern="spam"), "spam here", "fine") == ["matching", None]
    assert drops(RegexFilter(pattern="keep", keep="matching"), "keep me", "other") == [None, "not_matching"]


# quality


@pytest.mark.parametrize(
    "text, reason",
    [
        ("too few words here", "min_words"),
        ("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3 + ENGLISH, "min_mean_word_length"),
        (ENGLISH + "antidisestablishmentarianism " * 60, "max_mean_word_length"),
        (ENGLISH + "# " * 30, "max_symbol_word_ratio"),
        ("\n".join(f"- remember item number {k} of the shopping list and that" for k in range(30)), "max_bullet_lines"),
        ("\n".join(f"and then line number {k} of this story slowly trails away into the silence of the night..."
                   for k in range(30)), "max_ellipsis_lines"),
        (ENGLISH + " ".join(["123", "4567", "89.0", "!!!", "----"] * 20), "min_alpha_words"),
        ("Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 6, "min_stop_words"),
        ("\n".join([ENGLISH] + ["the same line over and over with the cat"] * 5), "max_duplicate_lines"),
    ],
)
def test_each_gopher_rule_fires(text, reason):
    assert drops(Quality(), text) == [reason]


def test_good_prose_passes_and_rules_can_be_turned_off():
    assert drops(Quality(), ENGLISH) == [None]
    assert drops(Quality(), "the history of the village") == ["min_words"]
    assert drops(Quality(off=["min_words"]), "the history of the village") == [None]


def test_repeated_ngrams_are_caught():
    looping = ENGLISH + "the cat sat on the mat and " * 15
    assert drops(Quality(off=["max_top_ngram_chars"]), looping)[0].startswith("max_duplicate_")
    assert drops(Quality(), looping)[0].startswith("max_top_")


# pii


def test_pii_replaces_each_kind_with_its_placeholder_and_counts():
    text = ("mail jane.doe@example.com, call +44 20 7946 0958 or (555) 123-4567, host 192.168.0.1 and "
            "2001:db8::8a2e:370:7334, card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32.")
    result = OPS["pii"](frame_of(text), Pii())
    out = result.frame["text"][0]
    assert out == ("mail <EMAIL>, call <PHONE> or <PHONE>, host <IP> and <IP>, card <CREDIT_CARD>, iban <IBAN>.")
    assert result.counters == {"email": 1, "credit_card": 1, "iban": 1, "ip": 2, "phone": 2}


def test_pii_checksums_reject_lookalikes():
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB83WEST12345698765432")
    text = "order 4111 1111 1111 1112 shipped in 1945-1950, at 10:30:00"
    assert texts_after(Pii(), text) == [text]


def test_pii_drop_policy_names_the_kind():
    assert drops(Pii(action="drop"), "write to a@b.org", "nothing here") == ["email", None]


# near dedup


def jaccard(a: str, b: str, k: int = 5) -> float:
    def grams(text: str) -> set:
        words = text.lower().split()
        return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{k}" for k in range(5000)]
    base = [str(w) for w in rng.choice(vocabulary, 400)]
    errors = []
    for edits in (5, 20, 60, 150):
        other = list(base)
        for position in rng.choice(400, edits, replace=False):
            other[position] = "x"
        a, b = " ".join(base), " ".join(other)
        sig = signatures(pl.Series([a, b]), 5, 256)
        errors.append(abs((sig[0] == sig[1]).mean() - jaccard(a, b)))
    assert max(errors) < 0.1


def test_near_dedup_keeps_one_per_cluster(tmp_path):
    rng = np.random.default_rng(1)
    originals = [" ".join(f"w{k}" for k in rng.integers(0, 100_000, 150)) for _ in range(40)]
    near = [text.replace(text.split()[75], "changed", 1) for text in originals[:10]]
    docs = originals + near
    dedup = InProcessDedup(DedupNear(threshold=0.7), tmp_path)
    dedup.observe(pl.Series(docs[:25]))
    dedup.observe(pl.Series(docs[25:]))  # two batches: indices continue across them
    decision = dedup.decide()
    assert decision.keep.sum() == 40
    for k in range(10):  # the original stays: the earliest copy in source order
        assert decision.keep[k] and not decision.keep[40 + k] and decision.duplicate_of[40 + k] == k
    assert not list(tmp_path.iterdir())  # signatures and band files are removed


def shifted_copy(words: list[str], changed: int, rng) -> str:
    """The text with `changed` of its words replaced."""
    copy = list(words)
    for position in rng.choice(len(words), changed, replace=False):
        copy[position] = f"x{position}"
    return " ".join(copy)


def test_verify_judges_candidate_pairs_by_exact_jaccard_not_the_noisy_estimate(tmp_path):
    """Short documents just above and just below the threshold: the 128-value estimate misjudges some pairs,
    the exact shingle Jaccard none."""
    from llmrecipe.data.dedup import jaccard, shingle_sets

    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(60):
        words = [f"w{k}" for k in rng.integers(0, 10**6, 40)]
        pairs += [" ".join(words), shifted_copy(words, int(rng.integers(1, 5)), rng)]
    values, counts = shingle_sets(pl.Series(pairs), 2)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    truth = [jaccard(values[offsets[i]:offsets[i + 1]], values[offsets[i + 1]:offsets[i + 2]])
             for i in range(0, len(pairs), 2)]
    threshold = 0.8
    decided = {}
    for verify in (False, True):
        dedup = InProcessDedup(DedupNear(shingle_size=2, threshold=threshold, verify=verify), tmp_path / str(verify))
        dedup.observe(pl.Series(pairs))
        decided[verify] = dedup.decide().keep[1::2]  # the copies: dropped when judged similar
    wanted = np.array(truth) < threshold  # a copy stays exactly when it is below the threshold
    assert (decided[True] == wanted).all()
    assert (decided[False] != wanted).any()  # the estimate got some wrong (which motivates `verify`)
    assert 0.3 < np.mean(wanted) < 0.7  # the cases straddle the threshold


def test_candidate_pairs_chain_buckets_and_components_join_them():
    """Records (band key, band, position) of two bands: equal keys in one band chain their documents; an equal
    key in another band does not join them; components keep each cluster's smallest position."""
    keys = np.array([[5, 9, 5, 7, 5, 9], [1, 2, 3, 4, 6, 5]], dtype=np.uint64)
    records, _ = NearDedup.records(None, keys.T.copy(), np.arange(6, dtype=np.uint64) + (7 << 32))
    pairs = NearDedup.candidate_pairs(records) - np.uint64(7 << 32)
    assert pairs.tolist() == [[0, 2], [1, 5], [2, 4]]  # document 5's key 5 is band 1's: no pair with band 0's 5s
    assert components(6, pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)).tolist() == [0, 1, 0, 3, 0, 1]
    assert components_of(pairs).tolist() == [[2, 0], [4, 0], [5, 1]]  # (dropped, kept): only clustered documents


# split


def test_stratified_split_gives_exact_shares_per_source():
    texts = [f"document {k}" for k in range(300)]
    docs = frame_of(*texts, source=[0] * 200 + [1] * 100)
    splits = assign_splits(docs, Split(val=0.1, test=0.2, stratify=True))
    counts = {name: frame.group_by("source").len().sort("source")["len"].to_list() for name, frame in splits.items()}
    assert counts == {"train": [140, 70], "val": [20, 10], "test": [40, 20]}


def test_mismatch_report_warns_when_val_does_not_look_like_train():
    from llmrecipe.data.mismatch import SplitProfile, mismatch_report

    profiles = {name: SplitProfile() for name in ("train", "val", "test")}
    profiles["train"].add(pl.Series([ENGLISH] * 20))
    profiles["val"].add(pl.Series([ENGLISH]))
    profiles["test"].add(pl.Series(["zebra quantum xylophone " * 40]))
    report = mismatch_report(profiles)
    assert report["val"]["warnings"] == [] and report["val"]["oov_word_share"] == 0.0
    assert report["val"]["unigram_js_divergence_bits"] == 0.0
    assert len(report["test"]["warnings"]) == 3 and report["test"]["oov_word_share"] == 1.0
    assert report["train"]["docs"] == 20 and sum(report["train"]["length_histogram"]) == 20
