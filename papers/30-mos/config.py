"""Parameters of paper 30 (MoS, Mixture of Shards). Values live in pipelines/conf/p30/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Method(BaseModel):
    """One adapter of the comparison: LoRA (peft) of rank r, or MoS at the budget of LoRA
    with rank ``budget_rank`` (paper30.mos) with its four differentiation strategies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["lora", "mos"] = Field(description="lora: peft's LoRA; mos: paper30.mos (pure sharing = all strategies off)")
    r: int | None = Field(None, ge=1, description="rank (LoRA) / effective rank of every layer (MoS; None: the pool's vector count, pure sharing)")
    shards_per_vector: int = Field(1, ge=1, description="MoS: l shards per rank vector (vector sharding when > 1)")
    private_fraction: float = Field(0.0, ge=0, lt=1, description="MoS: share of each layer's budget kept private (shard privatization)")
    subset_selection: bool = Field(False, description="MoS: each layer draws its own subset (and order) of the public shards")
    pair_dissociation: bool = Field(False, description="MoS: B indexed independently of A")

    @model_validator(mode="after")
    def _check(self) -> "Method":
        if self.kind == "lora" and self.r is None:
            raise ValueError("r: LoRA needs a rank")
        if self.kind == "lora" and (self.shards_per_vector != 1 or self.private_fraction or self.subset_selection or self.pair_dissociation):
            raise ValueError("kind: lora takes no MoS strategy options")
        return self


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the model and where the adapters go
    model: str = Field(min_length=1, description="'minilm' (shared.zoo.minilm, offline) or a HF name/folder for AutoModelForSequenceClassification (gpu)")
    head: str = Field(min_length=1, description="name of the classifier head module (trained in every method)")
    target_modules: str = Field(min_length=1, description="regex, full match on module names: the linears that get adapters")

    # the task: docstring summary -> top-level package, low-data (shared.corpus.package_classification)
    n_classes: int = Field(ge=2, description="the most frequent packages, one class each")
    max_per_class: int = Field(ge=4, description="rows per class, train + test, before the training subsample")
    test_fraction: float = Field(gt=0, lt=1, description="share of each class's rows (whole modules) held out")
    train_per_class: int = Field(ge=1, description="training rows kept per class (low-data regime; the test set stays whole)")
    max_length: int = Field(ge=8, le=512, description="tokens per summary (truncation); batches pad to their longest")

    # training: the same batches, order and schedule for every method of a seed
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0, description="AdamW learning rate of the adapter parameters (LoRA factors, MoS pools)")
    head_lr: float = Field(gt=0, description="AdamW learning rate of the classifier head")
    warmup_fraction: float = Field(ge=0, lt=1, description="linear warm-up share of the steps, then linear decay to 0")
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0, description="max global gradient norm")
    alpha: float = Field(gt=0, description="LoRA/MoS scaling alpha (update scaled by alpha / r)")
    dropout: float = Field(ge=0, lt=1, description="dropout on the adapter input (LoRA and MoS)")
    seeds: list[int] = Field(min_length=1, description="training seeds (init of the head and adapters, batch order); the split uses the run seed")
    eval_batch_size: int = Field(gt=0)
    num_threads: int = Field(gt=0, description="torch CPU threads")
    dtype: Literal["float32", "bfloat16"] = Field(description="bfloat16: autocast; weights stay float32")

    # the methods
    budget_rank: int = Field(ge=1, description="budget B: every MoS method has exactly the parameters of LoRA with this rank")
    run: list[str] = Field(min_length=1, description="methods to run, in this order")
    methods: dict[str, Method] = Field(min_length=1, description="every method's settings")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        missing = [name for name in self.run if name not in self.methods]
        if missing:
            raise ValueError(f"run: {missing} have no entry in methods; have: {', '.join(self.methods)}")
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"run: a method is listed twice in {self.run}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: a seed is listed twice in {self.seeds}")
        return self
