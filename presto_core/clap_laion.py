"""Published laion-clap checkpoints (the paper's CLAP-LAION metric backbone) as a ClapScorer.

What laion-clap 1.1.7 fetches besides the checkpoint file (read from its source), all through
``from_pretrained`` and therefore from the Hugging Face cache (``HF_HOME``) when offline:

- ``import laion_clap`` builds Bert/Roberta/Bart tokenizers for 'bert-base-uncased',
  'roberta-base' and 'facebook/bart-base' at module level (laion_clap/training/data.py);
- building a model calls ``RobertaModel.from_pretrained('roberta-base')`` (only its architecture
  matters: the checkpoint overwrites every weight) and ``RobertaTokenizer.from_pretrained``.

Its own feature path for fusion models needs torchaudio; this module computes the same log-mel
(torchaudio's MelSpectrogram + AmplitudeToDB formula) with torch.stft and librosa instead, and
reads checkpoints itself so nothing is printed. laion-clap models see 10 s at 48 kHz: shorter
clips are repeat-padded as laion-clap does; longer ones are split into consecutive 10 s windows
(the last aligned to the clip's end) whose embeddings are averaged, replacing laion-clap's
random crop (non-fusion) or random chunks (fusion) so that scores are deterministic.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from pathlib import Path

import librosa
import torch
import torch.nn.functional as F

from presto_core.clap import ScorerBase, prepare_audio
from presto_core.errors import PrestoError, check_number
from presto_core.text import check_prompts

LAION_SAMPLE_RATE = 48000
LAION_WINDOW = 480000  # 10 s at 48 kHz: the clip length every laion-clap checkpoint was trained on
HUB_REPOS = ("roberta-base", "bert-base-uncased", "facebook/bart-base")
# Buffers that older transformers saved in checkpoints and current ones rebuild themselves.
_STALE_KEYS = ("text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids")
_HUB_HINT = (
    "laion-clap loads the tokenizers/configs of " + ", ".join(repr(r) for r in HUB_REPOS)
    + " (and roberta-base's model) from the Hugging Face hub; offline, they must already be in "
    "the cache (HF_HOME): run `huggingface-cli download roberta-base` etc. once with network"
)


@contextlib.contextmanager
def _quiet():
    """Silence laion-clap's prints and warnings and transformers' progress bars while importing
    and building (stdout and warning filters are process-wide, so never around per-call work)."""
    from transformers.utils import logging as hf_logging  # heavy optional dependency (~0.5 s)

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _import_laion_clap():
    try:
        with _quiet():
            import laion_clap  # heavy optional dependency (imports transformers, fetches tokenizers)
    except ImportError as e:
        raise PrestoError(f"LaionClapScorer needs `pip install laion-clap==1.1.7`: {e}") from e
    except OSError as e:  # from_pretrained's "can't load tokenizer" family
        raise PrestoError(f"could not import laion_clap: {_HUB_HINT}. Cause: {e}") from e
    return laion_clap


def read_laion_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A laion-clap ``.pt`` file -> its model state_dict (``module.`` prefixes and stale buffers removed)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrestoError(f"CLAP checkpoint {str(path)!r} does not exist; pass the path of a downloaded "
                          "laion-clap .pt file (e.g. music_audioset_epoch_15_esc_90.14.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Training checkpoints may pickle non-tensor state; laion-clap itself always loads them
        # this way, and the user chose this local file.
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise PrestoError(f"CLAP checkpoint {str(path)!r} is not a readable PyTorch file: {e}") from e
    except Exception as e:
        raise PrestoError(f"CLAP checkpoint {str(path)!r} is not a readable PyTorch file: {e}") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise PrestoError(f"CLAP checkpoint {str(path)!r} holds no state_dict of tensors")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _STALE_KEYS}


def laion_log_mel(wav: torch.Tensor, audio_cfg: dict) -> torch.Tensor:
    """(N,) waveform at audio_cfg['sample_rate'] -> (frames, mel_bins) power mel in dB, the
    formula of laion-clap's torchaudio ``get_mel`` (HTK mel, no filter norm, 10 log10 clamp 1e-10)."""
    n_fft, hop = audio_cfg["window_size"], audio_cfg["hop_size"]
    fb = librosa.filters.mel(sr=audio_cfg["sample_rate"], n_fft=n_fft, n_mels=audio_cfg["mel_bins"],
                             fmin=audio_cfg["fmin"], fmax=audio_cfg["fmax"], htk=True, norm=None)
    window = torch.hann_window(n_fft, device=wav.device)
    spec = torch.stft(wav.float(), n_fft, hop, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    mel = torch.from_numpy(fb).to(wav.device) @ (spec.real.square() + spec.imag.square())
    return (10.0 * torch.log10(mel.clamp_min(1e-10))).t()


def repeat_pad(wav: torch.Tensor, length: int) -> torch.Tensor:
    """laion-clap's 'repeatpad': (N,) with N <= length -> (length,) whole repeats then zeros."""
    x = wav.repeat(length // wav.shape[-1])
    return F.pad(x, (0, length - x.shape[-1]))


def split_windows(n: int, window: int = LAION_WINDOW) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering a clip of ``n`` samples with consecutive windows,
    the last one aligned to the end; a clip of at most ``window`` samples is one range."""
    if n <= window:
        return [(0, n)]
    starts = list(range(0, n - window, window)) + [n - window]
    return [(s, s + window) for s in starts]


class LaionClapScorer(ScorerBase):
    """:class:`~presto_core.clap.ClapScorer` over a laion-clap checkpoint (D = 512, 48 kHz).

    ``checkpoint_path``: a local laion-clap ``.pt`` file; ``amodel``: its audio tower
    ('HTSAT-tiny' for the 630k checkpoints, 'HTSAT-base' for the music ones); ``enable_fusion``:
    True for '*fusion*' checkpoints. ``batch_size`` bounds the 10 s windows run at once.
    """

    sample_rate = LAION_SAMPLE_RATE

    def __init__(self, checkpoint_path: str | os.PathLike, amodel: str = "HTSAT-tiny",
                 enable_fusion: bool = False, device="cpu", batch_size: int = 8):
        batch_size = check_number("batch_size", batch_size, 1, 1024, integer=True)
        state = read_laion_checkpoint(checkpoint_path)  # first: a wrong path fails fast, before imports
        laion_clap = _import_laion_clap()
        # laion_clap puts its own folder on sys.path and imports its model code as `clap_module`.
        from clap_module import list_models  # heavy optional dependency (laion_clap's model code)

        if not isinstance(amodel, str) or amodel not in list_models():
            known = [m for m in list_models() if m.startswith(("HTSAT", "PANN"))]
            raise PrestoError(f"unknown laion-clap audio model {amodel!r}; allowed: {known}")
        self.device = torch.device(device)
        try:
            with _quiet():
                module = laion_clap.CLAP_Module(enable_fusion=bool(enable_fusion), device=self.device,
                                                amodel=amodel, tmodel="roberta")
        except OSError as e:
            raise PrestoError(f"could not build the laion-clap model: {_HUB_HINT}. Cause: {e}") from e
        try:
            missing, unexpected = module.model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise PrestoError(f"CLAP checkpoint {str(checkpoint_path)!r} does not fit amodel={amodel!r}, "
                              f"enable_fusion={enable_fusion}: {str(e)[:500]}") from e
        if missing or unexpected:
            raise PrestoError(
                f"CLAP checkpoint {str(checkpoint_path)!r} does not fit amodel={amodel!r}, "
                f"enable_fusion={enable_fusion}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
                f" ({len(missing)} missing, {len(unexpected)} unexpected keys)")
        module.eval().requires_grad_(False)
        self.module = module
        self.amodel = amodel
        self.enable_fusion = bool(enable_fusion)
        self.batch_size = batch_size

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """B prompts (RoBERTa tokens, 77 max) -> (B, 512) unit vectors."""
        prompts = check_prompts(prompts)
        with torch.inference_mode():
            return self.module.get_text_embedding(prompts, use_tensor=True).float()

    def _features(self, clip: torch.Tensor) -> dict:
        # The per-clip input dict laion-clap's get_audio_features would build for this window.
        x = repeat_pad(clip, LAION_WINDOW)
        feats = {"waveform": x, "longer": torch.tensor([False], device=x.device)}
        if self.enable_fusion:
            mel = laion_log_mel(x, self.module.model_cfg["audio_cfg"])
            feats["mel_fusion"] = torch.stack([mel] * 4, dim=0)  # (4, frames, mels): the short-clip form
        return feats

    def embed_audio(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, N) or (B, C, N) audio at ``sr`` Hz -> (B, 512) unit vectors (resampled to 48 kHz)."""
        x = prepare_audio(wav, sr, self.sample_rate, self.device)
        # laion-clap's int16 round trip, so scores match its published numpy path.
        x = (x.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).float() / 32767.0
        owners, feats = [], []
        for i in range(x.shape[0]):
            for s, e in split_windows(x.shape[1]):
                owners.append(i)
                feats.append(self._features(x[i, s:e]))
        out = []
        with torch.inference_mode():
            for j in range(0, len(feats), self.batch_size):
                out.append(self.module.model.get_audio_embedding(feats[j:j + self.batch_size]).float())
        emb = torch.cat(out)
        total = emb.new_zeros(x.shape[0], emb.shape[1]).index_add_(0, torch.tensor(owners, device=emb.device), emb)
        return F.normalize(total, dim=-1)
