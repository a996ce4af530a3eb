"""Text conditioning: an open_clip text tower behind one small class, with the CLIP BPE tokenizer.

Either a pretrained tower read from a local checkpoint file (frozen by default: the usual case at
scale), or a small open_clip `TextTransformer` trained from scratch with the model (the shipped
shapes model). Nothing is ever downloaded: the tokenizer's vocabulary ships inside open_clip.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Any

import torch
from open_clip import SimpleTokenizer, get_model_config
from open_clip.factory import load_state_dict
from open_clip.model import _build_text_tower, convert_to_custom_text_state_dict
from open_clip.transformer import TextTransformer
from torch import nn

from keyframe.errors import UserError
from keyframe.files import load_checkpoint


@functools.cache
def clip_tokenizer() -> SimpleTokenizer:
    """The CLIP BPE tokenizer, built once per process (reading its vocabulary takes a moment)."""
    return SimpleTokenizer()


@functools.lru_cache(maxsize=1 << 16)
def token_row(prompt: str) -> tuple[int, ...]:
    """A prompt's CLIP token ids with start and end tokens, untruncated; memoised, since a
    training set repeats its captions every epoch (BPE is the slow part of a large batch)."""
    tokenizer = clip_tokenizer()
    # Lone surrogates (from bad decoding upstream) cannot be UTF-8 encoded: replace them.
    clean = prompt.encode("utf-8", errors="replace").decode("utf-8")
    return (tokenizer.sot_token_id, *tokenizer.encode(clean), tokenizer.eot_token_id)


def _model_config(model_name: str) -> dict[str, Any]:
    """An open_clip model config by registered name (e.g. 'ViT-B-32') or from a local JSON file."""
    if model_name.endswith(".json") and os.path.isfile(model_name):
        with open(model_name, encoding="utf-8") as f:
            cfg = json.load(f)
        cfg = cfg.get("model_cfg", cfg)
    elif ":" in model_name:
        raise UserError(
            f"text encoder model_name: {model_name!r}: only open_clip model names or local JSON "
            "configs are supported (nothing is downloaded)"
        )
    else:
        cfg = get_model_config(model_name)
    if not cfg or "text_cfg" not in cfg:
        raise UserError(
            f"text encoder model_name: {model_name!r} is not an open_clip model name "
            "(see open_clip.list_models()) or a JSON file with a text_cfg"
        )
    text_cfg = cfg["text_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise UserError(
            f"text encoder model_name: {model_name!r} uses a Hugging Face text tower or tokenizer; "
            "only CLIP-BPE open_clip towers are supported"
        )
    return cfg


def _load_text_weights(tower: nn.Module, path: str) -> None:
    """Load the text-tower part of an open_clip checkpoint (whole CLIP, or the tower alone)."""
    if not os.path.isfile(path):
        raise UserError(
            f"text encoder pretrained: {path!r} is not a file; give a local .safetensors/.bin/.pt "
            "open_clip checkpoint (weights are never downloaded)"
        )
    if path.endswith(".safetensors"):
        try:
            state = load_state_dict(path, device="cpu")
        except Exception as err:
            detail = " ".join(str(err).split())[:200]
            raise UserError(f"text encoder pretrained: cannot read {path!r}: {detail}") from None
    else:  # read with weights_only, whatever open_clip's version does
        try:
            ckpt = load_checkpoint(path, "text encoder checkpoint")
        except UserError as err:
            raise UserError(f"text encoder pretrained: {err}") from None
        state = ckpt.get("state_dict", ckpt)
        state = {k.removeprefix("module."): v for k, v in state.items()}
    # Classic CLIP keeps the text tower at the top level; CustomTextCLIP and CoCa under "text.".
    state = convert_to_custom_text_state_dict(state)
    text = {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    try:
        tower.load_state_dict(text or state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])[:300]
        raise UserError(
            f"text encoder pretrained: {path!r} does not fit the model_name architecture: {detail}"
        ) from None


class HashedEmbedding(nn.Module):
    """Token embedding with `buckets` rows: each CLIP token id sums two rows picked by two hashes.

    A small model need not pay for the 49408-row CLIP table: with two hashes, two different words
    share both rows only with odds of about 1/buckets**2 (Svenstrup et al. 2017, "Hash Embeddings").
    """

    def __init__(self, buckets: int, width: int):
        super().__init__()
        self.buckets = buckets
        self.weight = nn.Parameter(torch.randn(buckets, width) * 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        first = ids % self.buckets
        second = (ids * 40503 + 7919) % self.buckets
        return (self.weight[first] + self.weight[second]) / 2


class TextEncoder(nn.Module):
    """Prompts -> (tokens (b, L, dim), pooled (b, pooled_dim), mask (b, L) bool).

    `model_name` (an open_clip name or JSON config path) builds that model's text tower, with
    weights from the local file `pretrained` if given (then frozen unless `freeze=False`); without
    `model_name`, a small open_clip `TextTransformer` (width, layers, heads) trained from scratch.
    The size arguments are ignored when `model_name` is given. A `vocab_size` below CLIP's 49408
    gives the scratch tower a hashed token table of that many rows (small shipped models).
    `embed_std` draws the scratch tower's token embeddings at that std instead of open_clip's 0.02,
    so each word's identity is not swamped in the residual stream (see the model card).

    Tokens are the tower's last hidden states (after its final LayerNorm), for cross-attention;
    `mask` is True from the start token to the end token inclusive, False on padding. `pooled` is
    the end token's features (CLIP's text embedding). The empty prompt "" is the unconditional
    prompt: it is encoded like any other, as [start, end] plus padding (so the mask always has at
    least two True entries), and training dropout and sampling both use exactly that.
    Prompts longer than the context are truncated (keeping the end token) with a warning.
    """

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: str | None = None,
        width: int = 256,
        layers: int = 4,
        heads: int = 4,
        context_length: int = 77,
        vocab_size: int = 49408,
        freeze: bool | None = None,
        embed_std: float | None = None,
    ):
        super().__init__()
        tokenizer = clip_tokenizer()
        if model_name is None:
            if pretrained is not None:
                raise UserError("text encoder: `pretrained` needs `model_name` (its architecture)")
            if vocab_size < 64:
                raise UserError(f"text encoder vocab_size: expected at least 64, got {vocab_size}")
            if layers < 1:
                raise UserError(f"text encoder layers: expected at least 1, got {layers}")
            if embed_std is not None and not embed_std > 0:
                raise UserError(
                    f"text encoder embed_std: expected a positive value, got {embed_std}"
                )
            hashed = vocab_size < tokenizer.vocab_size
            tower = TextTransformer(
                context_length=context_length,
                vocab_size=1 if hashed else vocab_size,
                width=width,
                heads=heads,
                layers=layers,
                output_dim=None,
                output_tokens=True,
            )
            if hashed:
                # The tower still sees CLIP ids (it pools at the end token by argmax over ids).
                tower.token_embedding = HashedEmbedding(vocab_size, width)
            if embed_std is not None:
                # A hashed id averages two rows: rows drawn at std * sqrt(2) give it `embed_std`.
                row_std = embed_std * (2**0.5 if hashed else 1.0)
                nn.init.normal_(tower.token_embedding.weight, std=row_std)
        else:
            if embed_std is not None:
                raise UserError("text encoder: `embed_std` is for a tower trained from scratch")
            cfg = _model_config(model_name)
            text_cfg = {**cfg["text_cfg"], "output_tokens": True}
            tower = _build_text_tower(cfg["embed_dim"], text_cfg, cfg.get("quick_gelu", False))
            if pretrained is not None:
                _load_text_weights(tower, pretrained)
        self.tower = tower
        self.context_length = tower.context_length
        self.dim = tower.width
        self.pooled_dim = tower.output_dim if tower.text_projection is not None else tower.width
        self.frozen = pretrained is not None if freeze is None else freeze
        if self.frozen:
            self.tower.requires_grad_(False)
            self.tower.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        """A frozen tower stays in eval mode whatever the surrounding module does."""
        super().train(mode)
        if self.frozen:
            self.tower.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.tower.token_embedding.weight.device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (b, L) long and mask (b, L) bool, on the module's device."""
        length = self.context_length
        rows, lengths = [], []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise UserError(f"prompt {i}: expected text, got {type(prompt).__name__}")
            row = token_row(prompt)
            if len(row) > length:
                warnings.warn(
                    f"prompt truncated to {length} tokens: {prompt[:80]!r}"
                    + ("..." if len(prompt) > 80 else ""),
                    stacklevel=2,
                )
                row = (*row[: length - 1], row[-1])
            rows.append(row + (0,) * (length - len(row)))
            lengths.append(len(row))
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(prompts), length)
        mask = torch.arange(length) < torch.tensor(lengths, dtype=torch.long)[:, None]
        return ids.to(self.device), mask.to(self.device)

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids, mask = self.tokenize(list(prompts))
        pooled, tokens = self.tower(ids)
        return tokens, pooled, mask
