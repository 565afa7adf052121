"""Typed run configuration: dataclasses, YAML loading, ``key=value`` overrides and validation.

Sizes (per task, per iteration):

====================================  ==================================================================
global prompts                        ``task.num_prompts`` or ``sample.num_prompts_per_iter`` (``task_prompts(i)``)
global samples                        ``task_prompts(i) * task.group_size`` (``task_samples(i)``)
prompts per rank                      ``sample.prompts_per_rank(world_size)`` (must divide evenly)
samples per rank                      ``prompts_per_rank * task.group_size`` (a prompt group never spans ranks)
optimizer steps per iteration         ``train.timesteps_per_iter * train.inner_epochs`` (+1 if L_pre enabled)
====================================  ==================================================================

The paper's setting is ``configs/sd2_paper.yaml``: 2048 samples per iteration = 16 per GPU x 128 GPUs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlsd.methods.options import BaselineConfig, method_checks

BUILTIN_MODELS = ("tiny-sd", "tiny-pixel")
#: rlsd.objective.normalize_advantages modes
ADVANTAGE_MODES = ("global_batch", "per_prompt", "group", "group_center")


@dataclass
class ModelConfig:
    path: str = "tiny-sd"
    """Model folder (diffusers SD layout or pixel-space folder) or "tiny-sd"/"tiny-pixel" (random test models)."""
    dtype: str = "float32"
    """Storage dtype of the frozen parts (text encoder, VAE): float32 | bfloat16 | float16."""
    use_lora: bool = False
    """Train LoRA adapters on the UNet attention projections instead of all UNet weights."""
    lora_rank: int = 4
    """LoRA rank r (alpha = r)."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (saves memory, costs ~30% time)."""
    attention: str = "sdpa"
    """UNet attention implementation: sdpa (torch scaled_dot_product_attention) | default."""


@dataclass
class SampleConfig:
    num_steps: int = 50
    """DDIM steps T per trajectory."""
    eta: float = 1.0
    """DDIM noise weight; must be > 0 so each step is a Gaussian policy with a log-prob."""
    guidance_scale: float = 7.0
    """Classifier-free guidance weight w, used both when sampling and when re-scoring."""
    num_prompts_per_iter: int = 16
    """Global number of prompts per task per iteration (all ranks together); each is sampled group_size times."""
    batch_size: int = 0
    """Samples per UNet micro-batch when sampling (0 = the whole local batch at once). Only speed depends on it:
    each sample draws its noise from its own generator (float results agree to rounding)."""

    def prompts_per_rank(self, world_size: int, num_prompts: int = 0, field_name: str = "") -> int:
        """Prompts each rank samples per task; raises ValueError unless world_size divides the global count."""
        n = num_prompts or self.num_prompts_per_iter
        name = field_name or "sample.num_prompts_per_iter"
        if world_size < 1 or n % world_size != 0:
            raise ValueError(f"{name}={n} is not divisible by the world size {world_size}; set {name} to a "
                             f"multiple of {world_size}.")
        return n // world_size


@dataclass
class TrainConfig:
    lr: float = 2e-6
    """AdamW learning rate (constant after warmup)."""
    lr_warmup_iters: int = 0
    """Linear LR warmup length in iterations (0 = constant LR)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_weight_decay: float = 1e-4
    """AdamW decoupled weight decay."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip before every optimizer step (<= 0 disables)."""
    clip_range: float = 1e-4
    """PPO ratio clip epsilon: ratio is clipped to [1 - clip_range, 1 + clip_range]."""
    adv_clip: float = 10.0
    """Advantages are clamped to [-adv_clip, adv_clip] after normalisation."""
    advantage_mode: str = "global_batch"
    """Advantage normalisation: global_batch (paper; over all ranks) | per_prompt (DDPO tracker) | group |
    group_center (rlsd.objective.normalize_advantages); a task's own ``advantage_mode`` overrides it."""
    timesteps_per_iter: int = 5
    """k random timesteps (of sample.num_steps) trained per iteration, one optimizer step after each (paper: 5)."""
    min_step_std: float = 0.0
    """Timesteps are drawn among the steps whose std sigma_t exceeds this (0 = every stochastic step, the paper).
    A nearly deterministic last step (ShapesWorld's t=50 -> 0 has sigma 0.0064, under one 8-bit grey level) moves
    no pixel a reward can see, yet its log-prob gradient scales as 1/sigma: 10-20x every other step's norm."""
    inner_epochs: int = 1
    """Passes over the same sampled batch (each pass draws fresh timesteps)."""
    task_updates: str = "per_task"
    """Joint training (several tasks): per_task (paper Alg. 1: sample, score and update one task after the other,
    each with its own timesteps_per_iter optimizer steps) | summed (sample every task first, then one optimizer
    step per timestep on the sum of the tasks' weighted losses). Identical for a single task."""
    clip_per_task: bool = False
    """With ``task_updates = summed``: clip each task's weighted gradient to ``weight * max_grad_norm`` before the
    sum (then the sum to ``max_grad_norm`` as usual), so each task keeps its weight's share of a clipped step
    whatever its raw gradient norm. Costs one gradient-sized buffer and one all-reduce per task per step.
    One process or DDP only: DeepSpeed and FSDP shard the gradients, and the trainer refuses them; not with fp16.
    Each task's pre-clip (weighted) norm is logged as ``ppo/grad_norm/<task>``."""
    grad_accumulation: int = 1
    """Micro-batches the local batch is split into per optimizer step (memory only; same gradient)."""
    iterations: int = 100
    """RL iterations (Alg. 1 outer loop)."""
    mixed_precision: str = "no"
    """accelerate mixed precision for UNet forward/backward: no | bf16 | fp16."""
    seed: int = 0
    """Run seed: model init, prompt order, sample noise and timestep choice all derive from it."""
    method: str = "rl"
    """Training method: rl (the paper's PPO + L_pre) | ddpo | raft | rwr | refl | draft (rlsd.methods; their
    hyper-parameters are the ``baseline`` section)."""


@dataclass
class TaskConfig:
    name: str = "task"
    """Task name used in logs (reward/<name>/mean)."""
    prompts: dict = field(default_factory=lambda: {"name": "list", "prompts": ["a photo of a cat"]})
    """Prompt source spec for rlsd.prompts.build_prompt_source."""
    reward: Any = "jpeg_compressibility"
    """Reward spec for rlsd.rewards.build_reward: "name" | {name: .., kwargs} | {combine: [...]}."""
    group_size: int = 1
    """K images per prompt; groups stay on one rank (needed by distribution-level rewards)."""
    num_prompts: int = 0
    """Global prompts per iteration for this task (0 = sample.num_prompts_per_iter); samples = num_prompts * K."""
    weight: float = 1.0
    """Multiplier of this task's PPO loss in the joint objective."""
    advantage_mode: str = ""
    """This task's advantage normalisation ("" = train.advantage_mode)."""


@dataclass
class PretrainConfig:
    enabled: bool = False
    """Add the L_pre denoising step after the policy-gradient steps of every iteration (paper Alg. 1)."""
    beta: float = 1.0
    """Weight beta of L_pre."""
    dataset: dict = field(default_factory=lambda: {"name": "shapesworld"})
    """Dataset spec: {name: folder, path} | {name: parquet, path} | {name: shapesworld, ...}."""
    batch_size: int = 8
    """Global image-caption pairs per L_pre step (divided across ranks)."""


@dataclass
class EvalConfig:
    every: int = 0
    """Evaluate every N iterations and at the end (0 disables)."""
    prompts: list = field(default_factory=list)
    """Fixed held-out prompts."""
    seeds: list = field(default_factory=lambda: [0, 1])
    """Fixed seeds; every prompt is sampled once per seed."""
    rewards: list = field(default_factory=list)
    """Reward specs scored on the eval images (logged as eval/<reward>/mean)."""


@dataclass
class LogConfig:
    run_dir: str = "runs/default"
    """Output folder: config.yaml, metrics.csv, tensorboard events, checkpoints/, samples/, export/."""
    log_every: int = 1
    """Write scalar metrics every N iterations."""
    image_every: int = 10
    """Save a sample image grid every N iterations (0 disables)."""
    checkpoint_every: int = 10
    """Save a checkpoint every N iterations and at the end (0 = only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    export: bool = True
    """Export the trained model in diffusers format to run_dir/export at the end."""
    progress: bool = True
    """Show tqdm bars (main process only)."""


@dataclass
class RLConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Trajectory sampling."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    """Jointly trained tasks (each: prompts + reward + group size + weight)."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """L_pre regulariser."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation (reward-hacking monitor)."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging and checkpointing."""
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    """Hyper-parameters of the baseline methods (used when ``train.method`` is not rl)."""

    def validate(self, world_size: int | None = None) -> "RLConfig":
        """Raise ValueError naming the first bad field and its fix; returns self."""
        checks = [
            (self.sample.eta > 0, "sample.eta", "must be > 0 so DDIM steps have a log-prob; use 1.0"),
            (self.sample.num_steps >= 1, "sample.num_steps", "must be >= 1"),
            (self.sample.num_prompts_per_iter >= 1, "sample.num_prompts_per_iter", "must be >= 1"),
            (self.sample.batch_size >= 0, "sample.batch_size", "must be >= 0 (0 = the whole local batch)"),
            (1 <= self.train.timesteps_per_iter <= self.sample.num_steps, "train.timesteps_per_iter",
             f"must be in [1, sample.num_steps={self.sample.num_steps}]"),
            (self.train.min_step_std >= 0, "train.min_step_std", "must be >= 0 (0 = every stochastic step)"),
            (self.train.clip_range > 0, "train.clip_range", "must be > 0 (paper: 1e-4)"),
            (self.train.adv_clip > 0, "train.adv_clip", "must be > 0 (paper: 10)"),
            (self.train.lr > 0, "train.lr", "must be > 0 (paper: 2e-6)"),
            (self.train.advantage_mode in ADVANTAGE_MODES, "train.advantage_mode",
             f"must be one of {', '.join(ADVANTAGE_MODES)}"),
            (self.train.inner_epochs >= 1, "train.inner_epochs", "must be >= 1"),
            (self.train.task_updates in ("per_task", "summed"), "train.task_updates", "must be per_task or summed"),
            (not self.train.clip_per_task or self.train.max_grad_norm > 0, "train.clip_per_task",
             "needs train.max_grad_norm > 0 (the clip it applies per task)"),
            (not (self.train.clip_per_task and self.train.mixed_precision == "fp16"), "train.clip_per_task",
             "cannot run with fp16 (the loss scaler unscales once per step, this clips once per task); use bf16"),
            (self.train.grad_accumulation >= 1, "train.grad_accumulation", "must be >= 1"),
            (self.train.iterations >= 0, "train.iterations", "must be >= 0"),
            (self.train.mixed_precision in ("no", "bf16", "fp16"), "train.mixed_precision", "must be no, bf16 or fp16"),
            (self.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
             "must be float32, bfloat16 or float16"),
            (self.model.attention in ("sdpa", "default"), "model.attention", "must be sdpa or default"),
            (self.model.lora_rank >= 1, "model.lora_rank", "must be >= 1"),
            (len(self.tasks) >= 1, "tasks", "must list at least one task"),
            (self.pretrain.beta >= 0, "pretrain.beta", "must be >= 0"),
            (self.pretrain.batch_size >= 1, "pretrain.batch_size", "must be >= 1"),
            (self.eval.every >= 0, "eval.every", "must be >= 0"),
            (self.log.keep_last >= 1, "log.keep_last", "must be >= 1"),
        ]
        for i, task in enumerate(self.tasks):
            checks.append((task.group_size >= 1, f"tasks.{i}.group_size", "must be >= 1"))
            checks.append((task.num_prompts >= 0, f"tasks.{i}.num_prompts", "must be >= 0 (0 = sample default)"))
            checks.append((task.weight >= 0, f"tasks.{i}.weight", "must be >= 0"))
            checks.append((task.advantage_mode in ("", *ADVANTAGE_MODES), f"tasks.{i}.advantage_mode",
                           f"must be empty (train.advantage_mode) or one of {', '.join(ADVANTAGE_MODES)}"))
            mode = self.task_advantage_mode(i)
            if mode in ("group", "group_center"):
                checks.append((task.group_size >= 2, f"tasks.{i}.group_size", f"must be >= 2 with advantage mode {mode}"))
        checks += method_checks(self)
        for ok, name, fix in checks:
            if not ok:
                raise ValueError(f"invalid config value {name}={_get(self, name)!r}: {fix}.")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks.*.name must be unique, got {names}; rename the duplicate tasks.")
        if world_size is not None:
            self.sample.prompts_per_rank(world_size)
            for i, task in enumerate(self.tasks):
                if task.num_prompts:
                    self.sample.prompts_per_rank(world_size, task.num_prompts, f"tasks.{i}.num_prompts")
            if self.pretrain.enabled and self.pretrain.batch_size % world_size:
                raise ValueError(f"pretrain.batch_size={self.pretrain.batch_size} is not divisible by the world size "
                                 f"{world_size}; set pretrain.batch_size to a multiple of {world_size}.")
        return self

    def task_advantage_mode(self, index: int) -> str:
        """Advantage normalisation of task ``index`` (its own, else train.advantage_mode)."""
        return self.tasks[index].advantage_mode or self.train.advantage_mode

    def task_prompts(self, index: int) -> int:
        """Global prompts per iteration of task ``index``."""
        return self.tasks[index].num_prompts or self.sample.num_prompts_per_iter

    def task_samples(self, index: int) -> int:
        """Global samples per iteration of task ``index`` (prompts x group_size)."""
        return self.task_prompts(index) * self.tasks[index].group_size

    def to_dict(self) -> dict:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _get(obj: Any, dotted: str) -> Any:
    """Value at a dotted path (``tasks.0.group_size``)."""
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else getattr(obj, part)
    return obj


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (YAML-parsed or raw string) to the dataclass field type ``tp``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"invalid config value {name}={value!r}: must be a mapping.")
        return _from_dict(tp, value, name)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ValueError(f"invalid config value {name}={value!r}: must be a list, e.g. [a, b].")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{name}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ValueError(f"invalid config value {name}={value!r}: must be true or false.")
    if tp in (int, float):
        try:
            out = tp(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            out = None
        if out is None or (tp is int and isinstance(value, float) and value != int(value)):
            raise ValueError(f"invalid config value {name}={value!r}: must be a {tp.__name__}.")
        return out
    if tp is str:
        return str(value)
    if tp is dict and not isinstance(value, dict):
        raise ValueError(f"invalid config value {name}={value!r}: must be a mapping.")
    return value


def _unknown_key(cls: type, key: str, prefix: str) -> ValueError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"did you mean {', '.join(prefix + c for c in close)}?" if close else f"valid keys: {', '.join(names)}."
    return ValueError(f"unknown config key {prefix}{key}; {hint}")


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, coercing types and rejecting unknown keys."""
    types = _field_types(cls)
    kwargs = {}
    for key, value in (data or {}).items():
        if key not in types:
            raise _unknown_key(cls, key, prefix + "." if prefix else "")
        kwargs[key] = _coerce(value, types[key], f"{prefix}.{key}" if prefix else key)
    return cls(**kwargs)


def apply_override(cfg: RLConfig, override: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML then coerced to the field type."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not key=value; write e.g. train.lr=1e-5.")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    obj: Any = cfg
    owner_cls: type = RLConfig
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth]) + ("." if depth else "")
        last = depth == len(parts) - 1
        if isinstance(obj, list):
            if not part.isdigit() or int(part) >= len(obj):
                raise ValueError(f"config key {key}: index {part} is out of range for {prefix[:-1]} "
                                 f"(length {len(obj)}).")
            if last:
                raise ValueError(f"config key {key} names a whole list item; set one of its fields instead.")
            obj, owner_cls = obj[int(part)], type(obj[int(part)])
            continue
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise _unknown_key(type(obj) if dataclasses.is_dataclass(obj) else owner_cls, part, prefix)
        if last:
            parsed = yaml.safe_load(raw) if raw.strip() else ""
            tp = _field_types(type(obj))[part]
            value = raw if tp is str else parsed
            setattr(obj, part, _coerce(value, tp, key))
        else:
            obj = getattr(obj, part)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RLConfig:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides and validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist; pass an existing YAML, e.g. configs/"
                                    f"tiny_sd_smoke.yaml.")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a YAML mapping at the top level.")
    cfg = _from_dict(RLConfig, data)
    for override in overrides:
        apply_override(cfg, override)
    return cfg.validate()


def config_from_dict(data: dict) -> RLConfig:
    """Rebuild a config saved with ``to_dict`` (e.g. from a checkpoint)."""
    return _from_dict(RLConfig, data).validate()
