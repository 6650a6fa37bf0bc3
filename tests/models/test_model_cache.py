"""The start-up cache (loader/cache.py) on tiny GGUF files written here: a hit gives the same
model and tokenizer as no cache at all (greedy tokens, logits, encodings), a stale entry (the
source file changed) and a corrupt one (a flipped byte, a lost manifest) are detected and rebuilt,
and an unwritable cache folder costs only the speed-up. The reference is the same file loaded
with the cache turned off (TRITIUM_CACHE_DIR=off), itself checked against transformers elsewhere
(test_gguf_quant_types.py)."""
from __future__ import annotations

import glob
import logging
import os
import stat

import pytest
import torch

import tritium.loader.gguf_loader as gguf_loader
from tests.models.test_gguf_quant_types import QT, write_llama_gguf
from tests.utils.model_harness import forward_logits, greedy_decode
from tritium.loader import load_model, load_tokenizer, model_config_from_source, resolve_model_source
from tritium.loader.cache import MANIFEST, CacheSlot, cache_root

PROMPT = [1, 40, 200, 7, 99, 256, 3]
TEXTS = ["hello world", "a b c", ""]


def q8(name: str) -> QT:
    return QT.Q8_0


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(folder))
    monkeypatch.setenv("TRITIUM_CPU_PACK", "0")  # oneDNN's per-shape set-up is not what is tested here
    return folder


@pytest.fixture
def tiny_gguf(tmp_path):
    path = str(tmp_path / "src" / "tiny.gguf")
    os.makedirs(os.path.dirname(path))
    write_llama_gguf(path, q8, seed=1)
    return path


@pytest.fixture
def builds(monkeypatch):
    """How often each slow builder ran (spies around the real ones)."""
    counts = {"config": 0, "weights": 0}
    real_config, real_iterate = gguf_loader.gguf_hf_config, gguf_loader.iterate_gguf

    def config(path):
        counts["config"] += 1
        return real_config(path)

    def iterate(*a, **kw):
        counts["weights"] += 1
        return real_iterate(*a, **kw)

    monkeypatch.setattr(gguf_loader, "gguf_hf_config", config)
    monkeypatch.setattr("tritium.loader.model_loader.iterate_gguf", iterate)
    return counts


def build(path: str):
    source = resolve_model_source(path)
    config = model_config_from_source(source, dtype="float32")
    model = load_model(source, config, "cpu")
    return model, config, greedy_decode(model, config, PROMPT, 6), forward_logits(model, config, PROMPT)


def reference(path: str, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("TRITIUM_CACHE_DIR", "off")
        assert cache_root() is None
        return build(path)


def weights_file(cache_dir) -> str:
    (path,) = glob.glob(str(cache_dir / "weights" / "*" / "model.safetensors"))
    return path


def mapped_files() -> str:
    with open("/proc/self/maps") as f:
        return f.read()


def test_miss_then_hit_gives_the_same_model_from_mapped_pages(tiny_gguf, cache_dir, builds, monkeypatch):
    _, _, ref_tokens, ref_logits = reference(tiny_gguf, monkeypatch)
    assert builds == {"config": 1, "weights": 1} and not cache_dir.exists()  # 'off' writes nothing

    _, _, cold_tokens, cold_logits = build(tiny_gguf)  # miss: built, then stored
    assert builds == {"config": 2, "weights": 2}
    assert cold_tokens == ref_tokens and torch.equal(cold_logits, ref_logits)
    assert sorted(os.listdir(cache_dir)) == ["gguf-config", "weights"]

    model, _, warm_tokens, warm_logits = build(tiny_gguf)  # hit: nothing rebuilt
    assert builds == {"config": 2, "weights": 2}
    assert warm_tokens == ref_tokens and torch.equal(warm_logits, ref_logits)
    assert weights_file(cache_dir) in mapped_files()  # the parameters are the file's pages
    del model


def test_a_changed_source_makes_the_entry_stale(tiny_gguf, cache_dir, builds, monkeypatch):
    build(tiny_gguf)
    st = os.stat(tiny_gguf)
    write_llama_gguf(tiny_gguf, q8, seed=2)  # other weights, same size
    os.utime(tiny_gguf, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: caught by content
    assert os.path.getsize(tiny_gguf) == st.st_size
    _, _, new_tokens, new_logits = reference(tiny_gguf, monkeypatch)
    _, _, tokens, logits = build(tiny_gguf)
    assert builds["weights"] == 3  # first build, reference, rebuild of the stale entry
    assert tokens == new_tokens and torch.equal(logits, new_logits)
    _, _, _, again = build(tiny_gguf)  # the rebuilt entry replaced the stale one and is used
    assert builds["weights"] == 3 and torch.equal(again, new_logits)
    assert len(os.listdir(cache_dir / "weights")) == 1


def test_a_corrupt_entry_is_rebuilt_not_trusted(tiny_gguf, cache_dir, builds, monkeypatch, caplog):
    _, _, ref_tokens, ref_logits = build(tiny_gguf)
    path = weights_file(cache_dir)
    with open(path, "r+b") as f:  # flip one byte inside the tensor data
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with caplog.at_level(logging.WARNING, logger="tritium.loader.cache"):
        _, _, tokens, logits = build(tiny_gguf)
    assert "corrupt" in caplog.text and "CRC32" in caplog.text
    assert builds["weights"] == 2 and tokens == ref_tokens and torch.equal(logits, ref_logits)

    os.remove(os.path.join(os.path.dirname(weights_file(cache_dir)), MANIFEST))  # an entry without manifest
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tritium.loader.cache"):
        _, _, _, logits = build(tiny_gguf)
    assert "manifest" in caplog.text and builds["weights"] == 3 and torch.equal(logits, ref_logits)


def make_unwritable(folder) -> None:
    """chmod takes writes away from ordinary users; root ignores it, so for root the kind folders
    the cache would create are replaced by plain files, which no one can create folders in."""
    os.makedirs(folder, exist_ok=True)
    if os.geteuid() == 0:
        for kind in ("gguf-config", "weights", "tokenizer"):
            if not os.path.exists(folder / kind):
                (folder / kind).write_text("not a folder")
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)


def test_an_unwritable_cache_folder_only_costs_the_speed_up(tiny_gguf, cache_dir, builds, monkeypatch, caplog):
    _, _, ref_tokens, ref_logits = reference(tiny_gguf, monkeypatch)
    make_unwritable(cache_dir)
    try:
        with caplog.at_level(logging.WARNING, logger="tritium.loader.cache"):
            _, _, tokens, logits = build(tiny_gguf)
        assert "cannot write" in caplog.text
        assert tokens == ref_tokens and torch.equal(logits, ref_logits)
        assert not glob.glob(str(cache_dir / "*" / "*"))  # nothing was written
    finally:
        os.chmod(cache_dir, stat.S_IRWXU)


def test_a_read_only_folder_with_valid_entries_is_used(tiny_gguf, cache_dir, builds):
    _, _, ref_tokens, ref_logits = build(tiny_gguf)
    os.chmod(cache_dir, stat.S_IRUSR | stat.S_IXUSR)
    try:
        _, _, tokens, logits = build(tiny_gguf)
    finally:
        os.chmod(cache_dir, stat.S_IRWXU)
    assert builds == {"config": 1, "weights": 1}
    assert tokens == ref_tokens and torch.equal(logits, ref_logits)


def test_bfloat16_and_float32_are_separate_entries(tiny_gguf, cache_dir, builds):
    source = resolve_model_source(tiny_gguf)
    for dtype in ("float32", "bfloat16", "bfloat16"):
        config = model_config_from_source(source, dtype=dtype)
        model = load_model(source, config, "cpu")
        assert {p.dtype for p in model.parameters()} == {config.dtype}
    assert builds["weights"] == 2 and len(os.listdir(cache_dir / "weights")) == 2


def test_cached_tokenizer_encodes_like_the_converted_one(tiny_gguf, cache_dir, monkeypatch):
    source = resolve_model_source(tiny_gguf)
    with monkeypatch.context() as m:
        m.setenv("TRITIUM_CACHE_DIR", "off")
        converted = load_tokenizer(source)
    cold = load_tokenizer(source)
    assert glob.glob(str(cache_dir / "tokenizer" / "*" / "tokenizer.json"))
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        _no_gguf(transformers.AutoTokenizer.from_pretrained))
    warm = load_tokenizer(source)  # from the saved folder, no GGUF conversion
    for tok in (cold, warm):
        assert type(tok).__name__ == type(converted).__name__ and len(tok) == len(converted)
        for text in TEXTS:
            assert tok(text)["input_ids"] == converted(text)["input_ids"]
        assert tok.decode(PROMPT) == converted.decode(PROMPT)
        assert (tok.bos_token_id, tok.eos_token_id) == (converted.bos_token_id, converted.eos_token_id)


def _no_gguf(real):
    def from_pretrained(*args, **kwargs):
        assert "gguf_file" not in kwargs, "the cached tokenizer should have been used"
        return real(*args, **kwargs)
    return from_pretrained


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITIUM_CACHE_DIR", raising=False)
    assert cache_root() == os.path.join(os.path.expanduser("~"), ".cache", "tritium")
    for off in ("off", "0", "", "none"):
        monkeypatch.setenv("TRITIUM_CACHE_DIR", off)
        assert cache_root() is None and not CacheSlot("weights", __file__, {}).enabled
    monkeypatch.setenv("TRITIUM_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == str(tmp_path / "c")
