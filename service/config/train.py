"""`TrainConfig`: everything that defines one training run, without torch.

Spec validation builds one per corner of a search space in the sweep's driver, which never
imports torch (its memory); `service.train.fit` runs them in the workers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.config.data import AugmentConfig, DataConfig
from service.models import check_model, make_config
from service.models.alexnet_plan import check_towers


class TrainConfig(BaseModel):
    """Everything that defines one training run; the single source of truth for a trial."""

    # A string literal under a field is its description (TrainSettings reuses them).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str = "lenet5"
    """The preset: a name from service.models.list_models()."""
    knobs: dict[str, Any] = Field(default_factory=dict)
    """Model knobs over the preset's own."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The dataset and how it is prepared."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """sgd: SGD with momentum, as in AlexNet; adamw: AdamW."""
    lr: float = Field(0.05, gt=0)
    """The initial learning rate. AlexNet: 0.01 at batch 128 over ImageNet's 1.2M images; the
    default suits small datasets such as digits, which need more (and larger) steps per
    epoch."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD's momentum, in [0, 1) (sgd only); AlexNet: 0.9."""
    weight_decay: float = Field(5e-4, ge=0)
    """Weight decay (decoupled under adamw); AlexNet: 5e-4."""
    schedule: Literal["none", "step", "cosine"] = "cosine"
    """The per-epoch learning-rate schedule: none (constant), step (times gamma every
    step_size epochs) or cosine (annealed to 0 over the epochs)."""
    step_size: int = Field(30, ge=1)
    """schedule step: epochs between steps."""
    gamma: float = Field(0.1, gt=0, le=1)
    """schedule step: the factor applied at each step, in (0, 1] (AlexNet divided by 10)."""
    epochs: int = Field(10, ge=1)
    """Epochs to train."""
    batch_size: int = Field(64, ge=1)
    """Images per optimiser step, across all workers; AlexNet: 128."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing of the cross-entropy loss, in [0, 1); 0: off."""
    seed: int = 0
    """Seeds the weights, the data order, the train/validation split (where the dataset has
    none), train_subset and the lighting sample; a configuration's repeated runs add 0, 1, …"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """The device to train on; auto: CUDA when available, else the CPU."""
    bf16: bool = False
    """Autocast to bfloat16 (CUDA)."""
    channels_last: bool = False
    """NHWC memory format (faster convolutions on recent GPUs)."""
    num_threads: int | None = Field(None, ge=1)
    """torch CPU threads; null: OMP_NUM_THREADS."""
    num_workers: int = Field(0, ge=0)
    """DataLoader processes; 0 (loading in the training process) suits in-memory data."""
    model_parallel: Literal["none", "towers"] = "none"
    """towers: AlexNet's two groups=2 towers on this worker's two GPUs (one GPU or CPU: both
    there), as in the paper; docs/model-parallel.md. Checkpoints keep the grouped layout."""

    @model_validator(mode="after")
    def _knobs_build(self) -> TrainConfig:
        check_model(self.model, **self.model_knobs())
        if self.model_parallel == "towers":
            check_towers(make_config(self.model, **self.model_knobs()))
        return self

    def model_knobs(self) -> dict[str, Any]:
        """Knobs for build_model: the explicit ones, plus the data's image size if it sets one."""
        knobs = dict(self.knobs)
        size = self.data.image_size
        if size is not None:
            if knobs.get("image_size", size) != size:
                raise ValueError(f"knobs.image_size={knobs['image_size']} disagrees with "
                                 f"data.image_size={size}; set one of them")
            knobs["image_size"] = size
        return knobs

    def with_overrides(self, flat: dict[str, Any]) -> TrainConfig:
        """A copy with flat `key: value` settings routed to where they belong.

        A key is a training field (`lr`), a data field (`val_fraction`), an augmentation field
        (`hflip`) or else a model knob (`conv1_kernel`). Sweeps and the CLI both use this.
        """
        top, data, aug = self.model_dump(), self.data.model_dump(), self.data.augmentation
        aug_d = aug.model_dump()
        knobs = dict(self.knobs)
        for key, value in flat.items():
            if key in ("knobs", "data"):
                raise ValueError(f"{key}: give its fields one by one")
            if key in TrainConfig.model_fields:
                top[key] = value
            elif key in DataConfig.model_fields:
                data[key] = value
            elif key in AugmentConfig.model_fields:
                aug_d[key] = value
            else:
                knobs[key] = value
        data["augmentation"] = aug_d
        top.update(data=data, knobs=knobs)
        return TrainConfig.model_validate(top)
