"""The simulated-annealing OOD split: determinism, whole groups, incremental counts, split files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.data.ood_split import (
    AnnealParams,
    GroupCounts,
    SplitSource,
    _Annealer,
    anneal_split,
    apply_split,
    load_split_source,
    read_split_file,
    split_ood,
    tokenize,
    word_energy,
    write_split_file,
)
from robustmsa.errors import ConfigError, DataError

WORDS = ["pizza", "camera", "movie", "hotel", "song", "staff", "good", "bad", "great", "awful", "okay", "fine"]


def toy_source(n_groups: int = 60, seed: int = 0) -> SplitSource:
    """Groups of 2-5 samples; each group has a topic word correlated with the label."""
    rng = np.random.default_rng(seed)
    ids, groups, texts, classes = [], [], [], []
    for g in range(n_groups):
        topic = WORDS[g % 6]
        for k in range(int(rng.integers(2, 6))):
            c = int(rng.random() < (0.8 if g % 2 else 0.2))
            sentiment = WORDS[6 + int(rng.integers(0, 3)) * 2 + (1 - c)]
            ids.append(f"v{g}_{k}")
            groups.append(f"v{g}")
            texts.append(f"The {topic} was {sentiment}, {WORDS[int(rng.integers(0, 12))]}!")
            classes.append(c)
    return SplitSource(ids, groups, texts, np.array(classes), ("negative", "non-negative"), name="toy")


def test_tokenize() -> None:
    assert tokenize("I didn't LIKE it, 10/10... ok") == ["i", "didn't", "like", "it", "10", "10", "ok"]


def test_anneal_is_deterministic_and_keeps_groups_whole() -> None:
    src = toy_source()
    params = AnnealParams(rounds=60, min_count=2, seed=3)
    a, b = anneal_split(src, params), anneal_split(src, params)
    assert a.splits == b.splits and a.energy == b.energy
    c = anneal_split(src, AnnealParams(rounds=60, min_count=2, seed=4))
    assert c.splits != a.splits
    assert set(a.splits) == {"train", "valid", "test", "valid_ood", "test_ood"}
    all_ids = [i for ids in a.splits.values() for i in ids]
    assert sorted(all_ids) == sorted(src.ids)  # every sample exactly once
    cls = dict(zip(src.ids, src.classes.tolist()))
    assert a.class_counts["test_ood"] == [sum(cls[i] == k for i in a.splits["test_ood"]) for k in (0, 1)]
    group_of = dict(zip(src.ids, src.groups))
    side = {}
    for name, ids in a.splits.items():
        for i in ids:
            part = "ood" if name.endswith("_ood") else "iid"
            assert side.setdefault(group_of[i], part) == part, "a group straddles IID and OOD"
    ood_share = (len(a.splits["valid_ood"]) + len(a.splits["test_ood"])) / len(src.ids)
    assert 0.25 - 1e-9 <= ood_share <= 0.35 + 1e-9  # ood_fraction 0.3 +- tolerance 0.05


def test_annealing_lowers_the_energy_towards_the_target() -> None:
    src = toy_source(80)
    result = anneal_split(src, AnnealParams(rounds=300, min_count=2, target=0.6, seed=0))
    assert result.energy["final"] < result.energy["initial"]
    # the recorded final energy is the energy of the recorded counts
    recount = word_energy(np.stack([result.counts["iid"], result.counts["ood"]]), 0.6, 1.0).sum()
    assert result.energy["final"] == pytest.approx(recount)
    assert result.counts["iid"].sum() + result.counts["ood"].sum() == GroupCounts.build(src, 2).total(np.ones(80, bool)).sum()


def test_the_class_prior_shift_is_recorded_and_can_be_bounded() -> None:
    """Unbounded, the annealer lowers the energy mostly by moving whole classes (here to a shift of 0.56);
    max_prior_shift keeps the IID and OOD class balance within the bound."""
    src = toy_source(80)

    def shift(result) -> float:  # recounted from the samples
        cls = dict(zip(src.ids, src.classes.tolist()))
        parts = [[cls[i] for n in names for i in result.splits[n]] for names in (("train", "valid", "test"), ("valid_ood", "test_ood"))]
        shares = [np.bincount(p, minlength=2) / len(p) for p in parts]
        return float(0.5 * np.abs(shares[0] - shares[1]).sum())

    free = anneal_split(src, AnnealParams(rounds=300, min_count=2, seed=0))
    assert free.energy["prior_shift"] == pytest.approx(shift(free)) and free.energy["prior_shift"] > 0.3
    for bound in (0.1, 0.05):
        bounded = anneal_split(src, AnnealParams(rounds=300, min_count=2, seed=0, max_prior_shift=bound))
        assert shift(bounded) <= bound and bounded.energy["prior_shift"] == pytest.approx(shift(bounded))
        assert bounded.energy["final"] < bounded.energy["initial"]  # it still anneals
    with pytest.raises(DataError, match=r"no split within max_prior_shift 0.0 was reached \(the random start's shift: 0.047\)"):
        anneal_split(src, AnnealParams(rounds=300, min_count=2, seed=0, max_prior_shift=0.0))
    with pytest.raises(ConfigError, match=r"max_prior_shift \(a total variation distance\) must be in \[0, 1\]"):
        AnnealParams(max_prior_shift=1.5)


def test_incremental_counts_match_a_recount() -> None:
    src = toy_source()
    gc = GroupCounts.build(src, min_count=2)
    rng = np.random.default_rng(0)
    in_ood = rng.random(len(gc.group_names)) < 0.3
    params = AnnealParams(min_count=2, tolerance=0.25)
    state = _Annealer(gc, in_ood, params)
    accepted = 0
    for _ in range(200):
        g = int(rng.integers(len(gc.group_names)))
        accepted += state.propose([(g, not bool(state.in_ood[g]))], temperature=0.05, rng=rng)
    assert accepted > 0
    W, C = len(gc.vocab), gc.num_classes
    np.testing.assert_allclose(state.flat[0].reshape(W, C), gc.total(~state.in_ood))
    np.testing.assert_allclose(state.flat[1].reshape(W, C), gc.total(state.in_ood))
    full = word_energy(np.stack([gc.total(~state.in_ood), gc.total(state.in_ood)]), params.target, params.smoothing)
    np.testing.assert_allclose(state.word, full)
    assert state.energy == pytest.approx(full.sum())
    np.testing.assert_array_equal(state.prior, [gc.classes[~state.in_ood].sum(axis=0), gc.classes[state.in_ood].sum(axis=0)])


def test_proposals_never_recount_the_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = GroupCounts.total
    monkeypatch.setattr(GroupCounts, "total", lambda self, chosen: calls.append(1) or original(self, chosen))
    src = toy_source()
    counts = []
    for rounds in (5, 80):
        calls.clear()
        anneal_split(src, AnnealParams(rounds=rounds, min_count=2))
        counts.append(len(calls))
    assert counts[0] == counts[1]  # full recounts only before and after annealing, not per proposal


def test_split_file_round_trip_and_apply(tmp_path) -> None:
    src = toy_source()
    result = anneal_split(src, AnnealParams(rounds=20, min_count=2))
    path = write_split_file(tmp_path / "split.json", result)
    back = read_split_file(path)
    assert back.splits == result.splits and back.vocab == result.vocab
    np.testing.assert_array_equal(back.counts["train"], result.counts["train"])
    data = json.loads(path.read_text())
    assert data["target"] == 0.5 and data["energy"]["final"] == pytest.approx(result.energy["final"])
    samples = [Sample(id=i, group=g, raw_text=t, text=np.zeros((1, 2), np.float32), label=float(c) - 0.5) for i, g, t, c in zip(src.ids, src.groups, src.texts, src.classes)]
    corpus = DataBundle({"all": MultimodalSplit(samples, name="all", source="toy", task=TaskSpec())}, TaskSpec(), name="toy")
    bundle = apply_split(path, corpus)
    assert {n: bundle[n].ids for n in bundle.splits} == result.splits
    assert bundle.meta["ood_split"]["energy"]["final"] == pytest.approx(result.energy["final"])
    small = DataBundle({"all": MultimodalSplit(samples[:10], name="all", source="toy", task=TaskSpec())}, TaskSpec(), name="toy")
    with pytest.raises(DataError, match="not in corpus"):
        apply_split(path, small)


def test_split_file_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_split_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "robustmsa-ood-split", "splits": {"train": ["a", "b"], "test_ood": ["b"]}}))
    with pytest.raises(DataError, match="also in split"):
        read_split_file(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="format"):
        read_split_file(bad)
    with pytest.raises(DataError, match="is a folder; expected a split file"):
        read_split_file(tmp_path)
    # every field is checked for its type, so that an edited file fails naming the field, not deep in numpy
    base = {"format": "robustmsa-ood-split", "version": 1, "splits": {"train": ["a", "b"], "test_ood": ["c"]}, "vocab": ["w"], "words": {"train": {"counts": [[1, 2]]}}}
    for change, field in (
        ({"version": 2}, "version"),
        ({"splits": {"train": ["a", "a"]}}, "splits.train': id 'a' is listed twice"),
        ({"params": [1]}, "params"),
        ({"energy": [1]}, "energy"),
        ({"vocab": 5}, "vocab"),
        ({"words": []}, "words"),
        ({"words": {"train": {"counts": [[0.5, 1]]}}}, "words"),
        ({"words": {"train": {"counts": [[1e30, 1]]}}}, "words"),
        ({"words": {"train": {"counts": [[-1, 1]]}}}, "words"),
        ({"history": 3}, "history"),
        ({"class_counts": {"train": ["x"]}}, "class_counts"),
        ({"source": {"a": 1}}, "source"),
    ):
        bad.write_text(json.dumps({**base, **change}))
        with pytest.raises(DataError, match=f"bad.json: field '{field}"):
            read_split_file(bad)
    bad.write_bytes(b"[" * 100000 + b"]" * 100000)
    with pytest.raises(DataError, match="not valid JSON: nested too deeply"):
        read_split_file(bad)
    bad.write_bytes(json.dumps({**base, "source": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match="is not valid UTF-8"):
        read_split_file(bad)
    bad.write_text(json.dumps(base))
    assert read_split_file(bad).counts["train"].tolist() == [[1, 2]]


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        AnnealParams(temperature=0)
    with pytest.raises(ConfigError, match="annealing settings: 'seed' must be >= 0, got -1"):
        AnnealParams(seed=-1)
    with pytest.raises(ConfigError, match="data source 'caer_s' has no text .*split-ood anneals over the words of raw texts"):
        load_split_source("caer_s", folder="anywhere", boxes="boxes.csv")
    with pytest.raises(ConfigError):
        AnnealParams(iid_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="duplicate"):
        SplitSource(["a", "a"], ["g", "h"], ["x", "y"], np.array([0, 1]), ("n", "p"))
    with pytest.raises(DataError, match="raw text"):
        SplitSource.from_samples([Sample(id="a", label=0.5)], kind="regression")


def test_split_ood_on_the_generated_corpus(tmp_path) -> None:
    paths = split_ood("synthetic", tmp_path, rounds=30, source_params={"n_train": 150, "n_valid": 40, "n_test": 40, "n_test_ood": 40, "n_valid_ood": 20}, min_count=3)
    assert paths["split"].is_file() and paths["figure"].stat().st_size > 1000
    data = json.loads(paths["split"].read_text())
    assert sum(data["sizes"].values()) == 290 and data["params"]["rounds"] == 30
    with pytest.raises(ConfigError, match="already exists"):
        split_ood("synthetic", tmp_path, rounds=1)
    for params, message in (
        ({"bogus": 1}, r"split-ood: unknown parameter\(s\) 'bogus'"),
        ({"min_count": "abc"}, "split-ood: 'min_count' is 'abc'; expected int"),
        ({"min_count": 0}, "split-ood: min_count must be >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            split_ood("synthetic", tmp_path / "bad", source_params={"n_train": 150}, **params)


@pytest.mark.realdata
def test_split_on_mosi_transcripts(shared_data) -> None:
    src = load_split_source("mosi_csv", path=str(shared_data / "mosi" / "transcripts_labels.csv"))
    result = anneal_split(src, AnnealParams(rounds=100, seed=0))
    video = dict(zip(src.ids, src.groups))
    iid = {video[i] for n in ("train", "valid", "test") for i in result.splits[n]}
    ood = {video[i] for n in ("valid_ood", "test_ood") for i in result.splits[n]}
    assert not iid & ood and len(iid | ood) == 93
    assert result.energy["final"] < result.energy["initial"]


@pytest.mark.realdata
def test_split_on_mmsd2_text_and_attribute_words(shared_data, tmp_path) -> None:
    paths = split_ood("mmsd2", tmp_path, rounds=200, scheme="classes", source_params={"folder": str(shared_data / "mmsd2"), "limit": 300}, min_count=5)
    data = json.loads(paths["split"].read_text())
    assert data["class_names"] and len(data["class_names"]) == 2 and sum(data["sizes"].values()) == 900
    assert data["energy"]["final"] <= data["energy"]["initial"]
    ids = [i for split in data["splits"].values() for i in split]
    assert len(ids) == len(set(ids)) == 900


def test_a_protocol_configs_annealing_settings_are_checked_when_it_is_read() -> None:
    from robustmsa.config import parse_config
    from robustmsa.evaluation.clue_protocol import CLUEProtocolConfig

    base = {"data": {"name": "synthetic"}, "backbone": {"name": "lf_dnn"}}
    for params, message in (({"roundz": 3}, r"unknown parameter\(s\) 'roundz'"), ({"decay": "fast"}, "'decay' is 'fast'; expected float"), ({"decay": 2.0}, "decay in \\(0, 1\\]")):
        with pytest.raises(ConfigError, match=rf"^clue.yaml: field 'split.params': annealing settings: .*{message}"):
            parse_config({**base, "split": {"generate": True, "params": params}}, "clue.yaml", CLUEProtocolConfig)
    for split, message in (({"file": "s.json", "generate": True}, "either file"), ({"file": "s.json", "params": {"rounds": 3}}, "apply with generate: true")):
        with pytest.raises(ConfigError, match=rf"^clue.yaml: field 'split'.*{message}"):  # before, the file won and the rest was ignored
            parse_config({**base, "split": split}, "clue.yaml", CLUEProtocolConfig)
