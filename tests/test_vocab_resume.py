"""An interrupted vocabulary encoding resumes where it stopped.

Encoding CLIP's 49,408 tokens takes about 12 minutes on two cores; Ctrl-C at 90% used to
throw all of it away. The rows done are now kept beside the cache and the next run starts
after them, with the same result as an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _tiny_clip import register_tiny_clip
from rave.encoders import create_encoder
from rave.guidance import interpret

TEXT_TOWER = interpret.encode_token_embeddings


@pytest.fixture
def encoder(tmp_path: Path):
    return create_encoder(register_tiny_clip(tmp_path / "clip"))


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> list[int]:
    """Make the text tower raise KeyboardInterrupt on batch ``batches + 1``; count calls.

    (Re-patched rather than undone: ``monkeypatch.undo()`` would also undo the isolated
    cache folder that conftest set with the same fixture.)"""
    calls: list[int] = []

    def counting(model, embeddings, positions):
        calls.append(embeddings.shape[0])
        if len(calls) > batches:
            raise KeyboardInterrupt
        return TEXT_TOWER(model, embeddings, positions)

    monkeypatch.setattr(interpret, "encode_token_embeddings", counting)
    return calls


@pytest.mark.parametrize("build", ["ids", "decoded"])
def test_an_interrupted_vocabulary_resumes_with_the_same_result(
    encoder, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    make = interpret.vocab_embeddings if build == "ids" else interpret.decoded_vocab_embeddings
    options = {"limit": 700, "batch_size": 100}
    expected = make(encoder, use_cache=False, **options)

    calls = _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        make(encoder, **options)
    partials = list(interpret.cache_dir().glob("*.partial.safetensors"))
    assert len(partials) == 1

    calls = _interrupt_after(monkeypatch, 10_000)  # count only
    resumed = make(encoder, **options)
    rows = len(expected.tokens)
    assert sum(calls) == rows - 300  # the three batches done were not encoded again
    assert resumed.tokens == expected.tokens
    torch.testing.assert_close(resumed.embeddings, expected.embeddings, rtol=0, atol=1e-6)
    if build == "decoded":
        assert resumed.norms is not None and expected.norms is not None
        torch.testing.assert_close(resumed.norms, expected.norms, rtol=1e-6, atol=0)
    assert not list(interpret.cache_dir().glob("*.partial.safetensors"))  # done: removed
    assert list(interpret.cache_dir().glob("*.safetensors"))  # and the whole cached


def test_a_damaged_partial_file_is_started_afresh(
    encoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        interpret.vocab_embeddings(encoder, limit=500, batch_size=100)
    (partial,) = interpret.cache_dir().glob("*.partial.safetensors")
    partial.write_bytes(b"not safetensors")
    calls = _interrupt_after(monkeypatch, 10_000)
    vocab = interpret.vocab_embeddings(encoder, limit=500, batch_size=100)
    assert sum(calls) == 500 and vocab.embeddings.shape[0] == 500
    assert "ignoring unreadable partial vocabulary" in caplog.text
