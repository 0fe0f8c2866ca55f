"""Typed configs of the latent-diffusion stages: the fields they share (:class:`LatentStageConfig`,
:class:`DSMStageConfig`) and one section class per stage (``base``, ``presto_l``, ``presto_s``,
``presto_ls`` of a config file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from presto_core.budget import D3, PRESTO_LS, check_schedule
from presto_core.dit import DiTConfig
from presto_core.edm import EDMConfig
from train.diffusion.gan_head import GanHeadConfig
from train.infra.config import ConfigError, LoopConfig

NOISE_KINDS = ("train", "inference")
NOISE_ROLES = ("gen", "dmd", "dsm", "gan")


def _text_encoder_default() -> dict:
    return {"kind": "minilm", "max_tokens": 64}


@dataclass
class LatentStageConfig:
    """Fields of every latent-diffusion stage section (``base``, ``presto_l``, ``presto_s``,
    ``presto_ls``); each stage's config adds its own."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    edm: EDMConfig = field(default_factory=EDMConfig)  # sigma_data must match the base model's
    vae: str = "runs/tiny/vae/export/vae"  # trained VAE component folder (train.vae's export)
    clap: str = ""  # optional CLAP component folder copied into the exported model
    text_encoder: dict = field(default_factory=_text_encoder_default)
    crop_seconds: float = 10.0
    latent_cache: str = ""  # folder for the latent caches (default: RUN_DIR); share the base run's
    augment_copies: int = 0  # extra pitch/tempo-augmented copies per file in the cache
    text_cache_size: int = 100_000  # caption phrasings whose tokens stay in memory
    export_fp16: bool = False
    max_duration: float = 32.0
    num_prompts: int = 32  # held-out prompts written to prompts.json

    def __post_init__(self):
        if not self.crop_seconds > 0:
            raise ValueError(f"crop_seconds must be > 0, got {self.crop_seconds}")


@dataclass
class DSMStageConfig(LatentStageConfig):
    """A stage trained by denoising score matching (base, Presto-L): condition dropout and the
    periodic held-out loss."""

    cond_dropout: float = 0.1
    grid_dropout: float = 0.1  # share of samples trained without the beat grid (a beat_grid model only)
    eval_every: int = 1000  # held-out DSM loss of the EMA weights (0: only at the end)
    eval_items: int = 64

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.cond_dropout < 1.0 or not 0.0 <= self.grid_dropout < 1.0 or self.eval_items < 1:
            raise ValueError(f"need 0 <= cond_dropout < 1, 0 <= grid_dropout < 1 and eval_items >= 1; got "
                             f"{self.cond_dropout}, {self.grid_dropout}, {self.eval_items}")


@dataclass
class BaseStageConfig(DSMStageConfig):
    """The ``base`` section of a config file."""

    model: DiTConfig = field(default_factory=DiTConfig.tiny)
    # Start from this DiT component's weights (e.g. an earlier base export) instead of a fresh init;
    # its architecture must equal `model`. A resumed run restores its own checkpoint instead.
    init: str = ""
    sampler_steps: int = 16  # the exported "base" variant's defaults
    guidance_scale: float = 0.8


METHODS = ("presto_l", "ase")


@dataclass
class PrestoLStageConfig(DSMStageConfig):
    """The ``presto_l`` section of a config file."""

    method: str = "presto_l"  # presto_l (shifted dropping + budget conditioning + self-teacher) | ase
    base_model: str = "runs/tiny/base/export/base"  # trained base DiT component folder (train.base's export)
    schedule: tuple[int, ...] = D3  # blocks dropped per descending-noise quintile, 28-block reference
    nu: float = 0.1  # self-teacher weight (Presto-L only; ASE has none)
    sampler_steps: int = 16  # the exported variants' defaults (DPM-Solver++(2S), CFG++ w)
    guidance_scale: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"presto_l.method must be one of {METHODS}, got {self.method!r}")
        self.schedule = check_schedule(self.schedule)
        if self.nu < 0:
            raise ValueError(f"presto_l: need nu >= 0, got {self.nu}")

    @property
    def name(self) -> str:
        """Component name of the export: 'presto_l' or 'ase' (the variant is named with a hyphen)."""
        return self.method

    @property
    def self_teacher_weight(self) -> float:
        return self.nu if self.method == "presto_l" else 0.0


@dataclass
class PrestoSStageConfig(LatentStageConfig):
    """The ``presto_s`` section of a config file."""

    base_model: str = "runs/tiny/base/export/base"  # trained base DiT component (real + fake score init)
    generator_model: str = ""  # generator's start: "" = the base model; or an earlier Presto-S export
    head: GanHeadConfig = field(default_factory=GanHeadConfig)
    fake_lr: float = 0.0  # lr of g2 (fake score + head); 0 -> loop.lr
    fake_updates_per_gen: int = 5  # fake-score/discriminator turns per generator turn (Alg. 1 alternates)
    # Fake-only iterations before the first generator turn. 0 when the generator starts from the base
    # model (the fake score = the base is then exact); when it continues from a distilled generator
    # (generator_model), the fake score must first learn that generator's distribution, or the first
    # DMD gradients point the wrong way.
    fake_warmup_steps: int = 0
    guidance: float = 4.5  # CFG weight w of the real score model (the DMD teacher)
    nu_gen: float = 0.01  # nu_1: GAN weight in the generator loss
    nu_disc: float = 0.005  # nu_2: GAN weight in the fake-score/discriminator loss
    p_gen: str = "inference"  # noise distributions: "train" (log-normal) | "inference" (Karras ramp)
    p_dmd: str = "train"
    p_dsm: str = "train"
    p_gan: str = "train"
    dmd_gan: bool = False  # DMD-GAN ablation: no DMD term, the generator learns from the GAN only
    discrete_generator: bool = False  # generator sigma from the discrete_steps-level Karras schedule
    discrete_steps: int = 4
    sampler_steps: int = 4  # the exported variant's default steps (ping-pong)
    base_sampler_steps: int = 16  # the base variant's defaults in the exported folder
    base_guidance_scale: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        for role in NOISE_ROLES:
            if getattr(self, f"p_{role}") not in NOISE_KINDS:
                raise ConfigError(f"presto_s.p_{role} must be one of {NOISE_KINDS}, got {getattr(self, f'p_{role}')!r}")
        if self.fake_updates_per_gen < 1:
            raise ConfigError(f"presto_s.fake_updates_per_gen must be >= 1, got {self.fake_updates_per_gen}")
        if self.fake_warmup_steps < 0:
            raise ConfigError(f"presto_s.fake_warmup_steps must be >= 0, got {self.fake_warmup_steps}")
        if self.discrete_steps < 1 or self.sampler_steps < 1:
            raise ConfigError("presto_s: discrete_steps and sampler_steps must be >= 1")
        if min(self.nu_gen, self.nu_disc, self.guidance, self.fake_lr) < 0:
            raise ConfigError("presto_s: nu_gen, nu_disc, guidance and fake_lr must be >= 0")


@dataclass
class PrestoLSStageConfig(PrestoSStageConfig):
    """The ``presto_ls`` section: every ``presto_s`` field plus the generator's start and schedule."""

    generator_model: str = "runs/tiny/presto_l/export/presto_l"  # Presto-L DiT component (train.presto_l's export)
    schedule: tuple[int, ...] = PRESTO_LS  # blocks dropped per descending-noise quintile, 28-block reference

    def __post_init__(self):
        super().__post_init__()
        try:
            self.schedule = check_schedule(self.schedule)
        except ValueError as e:
            raise ConfigError(f"presto_ls.schedule: {e}") from None


def _finetune_distill_default() -> "PrestoSStageConfig":
    return PrestoSStageConfig(fake_updates_per_gen=2, guidance=2.0, head=GanHeadConfig(blocks=(), channels=128))


@dataclass
class ClapCaptionsConfig:
    """The ``finetune.clap_captions`` section (steps 0: the adapter leaves the CLAP alone)."""

    steps: int = 300
    lr: float = 3e-3
    anchor_weight: float = 10.0
    crop_seconds: float = 10.0  # the length of a clip the report and rejection score
    crops_per_file: int = 3

    def __post_init__(self):
        if self.steps < 0 or not self.lr > 0 or self.anchor_weight < 0 or not self.crop_seconds > 0 \
                or self.crops_per_file < 1:
            raise ConfigError("finetune.clap_captions: need steps >= 0, lr > 0, anchor_weight >= 0, "
                             f"crop_seconds > 0, crops_per_file >= 1; got {self}")


@dataclass
class FinetuneStageConfig(DSMStageConfig):
    """The ``finetune`` section: LoRA adaptation of a model folder to a person's own audio
    (``python -m train.finetune``): steps [0, base_steps) adapt the base score model by DSM, steps
    [base_steps, loop.max_steps) adapt the distilled ``generator`` by distribution matching against
    the adapted base (Presto-S's Algorithm 1 with ``distill``'s settings; its loop, paths and
    sampler fields are not used)."""

    model: str = "assets/presto-default"  # the model folder adapted (its VAE encodes the data)
    rank: int = 8
    alpha: float = 16.0  # LoRA update scale alpha / rank
    targets: tuple[str, ...] = ("attn.qkv", "attn.out", "mlp.w13", "mlp.w2")  # Linear names (suffixes)
    adapter_fp16: bool = False  # store the factors in fp16 (half the size)
    base_steps: int = 0  # 0: every step adapts the base (no generator phase)
    generator: str = "presto_ls"  # the distilled component adapted after the base (if the model has it)
    distill_lr: float = 1e-4  # lr of the generator's and the fake score's factors (and the GAN head)
    # The generator phase starts the generator's and the fake score's factors from the adapted
    # base's: a distilled generator's weights are close to its base's, so the base's low-rank update
    # already moves most of its style, and distribution matching refines it from there.
    transfer_factors: bool = True
    distill: PrestoSStageConfig = field(default_factory=_finetune_distill_default)
    # LoRA on the CLAP's text tower, fitted at export so the judge knows their captions
    # (train/diffusion/clap_captions.py); steps 0 leaves the CLAP alone.
    clap_captions: ClapCaptionsConfig = field(default_factory=ClapCaptionsConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1 or not self.alpha > 0 or not self.targets:
            raise ConfigError(f"finetune: need rank >= 1, alpha > 0 and some targets; got {self.rank}, "
                              f"{self.alpha}, {self.targets}")
        if self.base_steps < 0 or not self.distill_lr > 0:
            raise ConfigError(f"finetune: need base_steps >= 0 and distill_lr > 0, got {self.base_steps}, "
                              f"{self.distill_lr}")
        self.targets = tuple(self.targets)
