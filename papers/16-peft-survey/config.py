from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from paper16.methods import ADALORA_FRACTIONS, COMPUTED_OPTIONS, REGISTRY


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(gt=0, description="peak AdamW learning rate of the method's parameters (the head uses head_lr)")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the method's peft config (r, target_modules, ...); checked against it before training",
    )


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the task: docstring summary -> top-level package (shared.corpus.package_classification)
    n_classes: int = Field(ge=2, description="the most frequent packages, one class each")
    max_per_class: int = Field(ge=4, description="rows per class, train + test (fewer if a class has fewer)")
    test_fraction: float = Field(gt=0, lt=1, description="share of each class's rows (whole modules) held out")
    max_length: int = Field(ge=8, le=512, description="tokens per summary (truncation); batches pad to their longest")

    # training: the same batches in the same order, the same seed, for every method
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    head_lr: float = Field(gt=0, description="AdamW learning rate of the classifier head, the same in every method")
    warmup_fraction: float = Field(ge=0, lt=1, description="linear warm-up share of the steps, then linear decay to 0")
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0, description="max global gradient norm")
    num_threads: int = Field(gt=0, description="torch CPU threads for the whole run")
    dtype: Literal["float32", "bfloat16"] = Field(description="bfloat16: autocast (CUDA); weights stay float32")
    eval_batch_size: int = Field(gt=0)
    memory_interval_s: float = Field(gt=0, description="RSS sampling period during training (CPU)")

    # inference latency: one fixed batch, unmerged and merged, interleaved with the base model
    latency_batch_size: int = Field(gt=0)
    latency_seq_len: int = Field(ge=8, le=512, description="tokens per row (padded), before any virtual tokens")
    latency_repeats: int = Field(gt=0)
    latency_warmup: int = Field(ge=0)

    # the methods: settings of every method, and which of them this scale runs (in order)
    run: list[str] = Field(min_length=1, description="methods to run, in this order")
    methods: dict[str, MethodParams] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "Params":
        for name, method in self.methods.items():
            if name not in REGISTRY:
                raise ValueError(f"methods.{name}: unknown method; known: {', '.join(REGISTRY)}")
            computed = COMPUTED_OPTIONS & set(method.options)
            if computed:
                raise ValueError(f"methods.{name}.options: {sorted(computed)} are set by the benchmark, not the config")
            fractions = set(ADALORA_FRACTIONS) & set(method.options)
            if fractions and REGISTRY[name].peft_config != "AdaLoraConfig":
                raise ValueError(f"methods.{name}.options: {sorted(fractions)} are AdaLoRA options")
        missing = [name for name in self.run if name not in self.methods]
        if missing:
            raise ValueError(f"run: {missing} have no entry in methods; have: {', '.join(self.methods)}")
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"run: a method is listed twice in {self.run}")
        if self.warmup_fraction >= 1:
            raise ValueError("warmup_fraction must be < 1")
        return self
