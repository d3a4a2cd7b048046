from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from nanprobe.errors import InputError
from ur4rec.data import SAMPLE_DIR, DatasetNotFoundError, load_dataset, locate_movielens
from ur4rec.data.__main__ import main as data_main
from ur4rec.data.files import read_atomic, read_original
from ur4rec.data.synthetic import generate


def test_both_file_formats_read_the_same() -> None:
    inter_a, items_a = read_atomic(SAMPLE_DIR / "atomic")
    inter_o, items_o = read_original(SAMPLE_DIR / "original")
    assert len(inter_a) == len(inter_o) == 46
    assert inter_a.equals(inter_o)
    assert list(items_a["title"]) == list(items_o["title"])
    assert list(items_a["year"]) == list(items_o["year"])
    assert [list(g) for g in items_a["genres"]] == [list(g) for g in items_o["genres"]]
    a = load_dataset("movielens", SAMPLE_DIR / "atomic")
    o = load_dataset("movielens", SAMPLE_DIR / "original")
    assert a.sequences == o.sequences and a.item_genres == o.item_genres


def test_preprocessing_filters_sorts_and_remaps() -> None:
    inter, _ = read_atomic(SAMPLE_DIR / "atomic")
    data = load_dataset("movielens", SAMPLE_DIR / "atomic")
    # user 7 has only 2 interactions -> dropped; ratings < 4 dropped
    assert "7" not in data.user_raw_ids.values()
    assert data.num_users == 6 and sorted(data.sequences) == list(range(1, 7))
    kept = inter[(inter.rating >= 4) & (inter.user != "7")]
    assert data.num_interactions() == len(kept)
    assert set(data.item_raw_ids) == set(range(1, data.num_items + 1))
    for u, seq in data.sequences.items():
        raw_u = data.user_raw_ids[u]
        rows = kept[kept.user == raw_u].sort_values("timestamp", kind="stable")
        assert [data.item_raw_ids[i] for i in seq] == list(rows["item"])
        assert len(seq) >= 5 and 0 not in seq


def test_leave_last_two_out_split(synth) -> None:
    u = synth.users[0]
    seq = synth.sequences[u]
    assert synth.train_sequence(u) == seq[:-2]
    assert synth.split(u, "val") == (seq[:-2], seq[-2])
    assert synth.split(u, "test") == (seq[:-1], seq[-1])
    pop = synth.train_popularity()
    assert pop[0] == 0 and pop.sum() == sum(len(s) - 2 for s in synth.sequences.values())
    with pytest.raises(ValueError):
        synth.split(u, "train")


def test_synthetic_is_seeded_and_structured() -> None:
    a, _ = generate(num_users=60, num_items=300, max_len=20, seed=5)
    b, _ = generate(num_users=60, num_items=300, max_len=20, seed=5)
    c, _ = generate(num_users=60, num_items=300, max_len=20, seed=6)
    assert a.equals(b) and not a.equals(c)
    counts = a["item"].value_counts()
    assert counts.iloc[0] >= 3 * counts.median()  # popularity skew
    assert not a.duplicated(["user", "item"]).any()


def test_missing_dataset_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"python -m ur4rec\.data fetch") as exc:
        locate_movielens(tmp_path)
    assert isinstance(exc.value, InputError)
    assert data_main(["info", "--data-dir", str(tmp_path)]) == 2


def test_extract_from_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
            src = SAMPLE_DIR / "atomic" / name
            zf.writestr(f"recbole/dataset_example/ml-100k/{name}",
                        src.read_text() if src.exists() else "user_id:token\n1\n")
    dest = tmp_path / "cache"
    assert data_main(["fetch", "--data-dir", str(dest), "--wheel", str(wheel)]) == 0
    assert locate_movielens(dest) == dest
    assert load_dataset("movielens", dest).num_users == 6
