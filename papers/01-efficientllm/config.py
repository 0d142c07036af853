"""Parameters of paper 01 (EfficientLLM). Values live in pipelines/conf/p01/*.yaml.

Models are named as in the shared ``tinylm`` artifact (``tinylm.models`` in params.yaml);
the notebooks check at run time that every name used here is one of them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dtype = Literal["float32", "bfloat16"]
PeftMethod = Literal["lora", "rslora", "dora"]
QuantFormat = Literal["float32", "bfloat16", "float16", "int8", "nf4", "fp4"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- 01 architectures: the tinylm variants trained on the same tokens ---
    attention_variants: list[str] = Field(min_length=2, description="tinylm models compared for attention (mha first)")
    baseline: str = Field(description="reference of the KV and latency ratios (multi-head attention)")
    moe_model: str = Field(description="the fine-grained MoE tinylm model")
    moe_dense_equal_active: str = Field(description="dense tinylm model with about the MoE's active parameters")
    eval_batches: int = Field(ge=1, description="fixed validation windows (corpus.eval_batches) per model")
    eval_batch_size: int = Field(ge=1)
    eval_seq_len: int = Field(ge=0, description="validation window length; 0: the models' trained max_seq_len")
    latency_contexts: list[int] = Field(min_length=1, description="prompt lengths of the latency runs (tokens)")
    latency_variants: list[str] = Field(min_length=1, description="tinylm models timed (random prompts: latency needs no quality)")
    decode_tokens: int = Field(ge=1, description="tokens decoded one at a time with the KV cache, per timed run")
    latency_repeats: int = Field(ge=1, description="timed rounds, interleaved over the models (median)")
    latency_warmup: int = Field(ge=0, description="untimed rounds first")
    num_threads: int = Field(ge=1, description="torch threads while timing on the CPU")
    inference_dtype: Dtype = Field(description="weights and activations of the architecture measurements")
    kv_bytes_per_value: int = Field(ge=1, le=4, description="bytes per cached value in the analytic paper layout (2 = bf16)")
    memory_interval_s: float = Field(gt=0, description="RSS sampling period of the AMU/peak memory sampler")

    # --- 02 PEFT: LoRA vs RSLoRA vs DoRA on the pretrained dense tinylm models ---
    peft_models: list[str] = Field(min_length=1, description="dense tinylm models of increasing size")
    peft_methods: list[PeftMethod] = Field(min_length=1)
    peft_ranks: list[int] = Field(min_length=1, description="adapter ranks r")
    peft_alpha_per_rank: float = Field(gt=0, description="lora_alpha = this * r (2: LlamaFactory's default, the paper's trainer)")
    peft_target_modules: list[str] = Field(min_length=1, description="linear layers that get adapters")
    peft_steps: int = Field(ge=1)
    peft_batch_size: int = Field(ge=1)
    peft_seq_len: int = Field(ge=8)
    peft_lr: float = Field(gt=0, description="peak AdamW learning rate, the same for every method")
    peft_warmup_steps: int = Field(ge=0)
    peft_eval_batches: int = Field(ge=1, description="fixed windows of the held-out fine-tuning split")
    peft_eval_fraction: float = Field(gt=0, lt=1, description="share of the fine-tuning modules held out for eval")
    peft_dtype: Dtype = Field(description="trainer autocast while fine-tuning")

    # --- 03 quantization: bf16 / fp16 / int8 / int4 (nf4, fp4) through bitsandbytes ---
    quant_models: list[str] = Field(min_length=1, description="dense tinylm models quantized")
    quant_formats: list[QuantFormat] = Field(min_length=2, description="must hold bfloat16 and nf4 (the claims compare them)")
    quant_eval_batches: int = Field(ge=1)
    quant_context: int = Field(ge=8, description="prompt length of the quantized decode-latency runs")
    quant_decode_tokens: int = Field(ge=1)
    quant_repeats: int = Field(ge=1)
    minilm_pairs: int = Field(ge=8, description="held-out (docstring, code) pairs of the MiniLM code-search task")
    minilm_max_length: int = Field(ge=16, description="MiniLM tokens per text (truncation)")
    minilm_batch_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.attention_variants[0] != self.baseline:
            raise ValueError(f"attention_variants: must start with the baseline {self.baseline!r}, got {self.attention_variants}")
        missing = {"bfloat16", "nf4"} - set(self.quant_formats)
        if missing:
            raise ValueError(f"quant_formats: must include {sorted(missing)} (the int4 claims compare nf4 with bfloat16)")
        if {"lora", "rslora", "dora"} - set(self.peft_methods):
            raise ValueError(f"peft_methods: must include lora, rslora and dora (the claims compare them), got {self.peft_methods}")
        if len(set(self.quant_formats)) != len(self.quant_formats) or len(set(self.peft_methods)) != len(self.peft_methods):
            raise ValueError("quant_formats and peft_methods: each entry once")
        for name in ("latency_contexts", "peft_ranks"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name}: values must be >= 1, got {getattr(self, name)}")
        return self
