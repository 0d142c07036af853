"""Parameters of paper 28 (the FP4 training design space). Values live in pipelines/conf/p28/*.yaml."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from paper28 import techniques

Rule = Literal["ocp", "nearest", "ceil"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    block: int = Field(ge=2, le=256, description="elements per block scale in every scheme (MXFP4: 32)")
    e8m0_rule: Rule = Field(description="how E8M0 block scales are chosen: ocp (floor, OCP MX), nearest, ceil")

    # --- (a) format study (notebook 01) ---
    exponents: list[int] = Field(min_length=3, description="k: every tensor is multiplied by 10^k")
    n_synthetic: int = Field(ge=256, description="elements of the Gaussian and Student-t tensors (a multiple of 256)")
    t_dof: float = Field(gt=2, description="degrees of freedom of the Student-t tensor (finite variance: > 2)")
    minilm_texts: int = Field(ge=1, description="docstring summaries run through MiniLM for its activations")
    minilm_layer: int = Field(ge=0, le=5, description="MiniLM layer whose FFN weight and input activations are used")
    grad_model: str = Field(min_length=1, description="tinylm artifact model whose output gradients dY are used")
    grad_batch: int = Field(ge=1, description="sequences of the batch the gradients come from")
    fmt_tolerance: float = Field(gt=1, description="a scheme 'matches' E4M3+TS where its MSE is within this factor")

    # --- (b) training study (notebooks 02, 03) ---
    configs: list[str] | Literal["full"] = Field(description="technique names (paper28.techniques) or 'full': all 24")
    seeds: int = Field(ge=1, description="seeds per configuration (global seed + 0, 1, ...)")
    hadamard: int = Field(ge=2, description="Hadamard block size of the 'full' grid (a power of two)")
    tasks: list[Literal["regression", "mlp", "lm"]] = Field(min_length=1, description="tasks of the training study")
    reg_steps: int = Field(ge=1, description="linear regression: optimizer steps")
    reg_lr: float = Field(gt=0, description="linear regression: peak learning rate (AdamW, cosine)")
    reg_batch: int = Field(ge=1, description="linear regression: minibatch size (>= 331: full batch)")
    mlp_steps: int = Field(ge=1, description="digits MLP: optimizer steps")
    mlp_lr: float = Field(gt=0, description="digits MLP: peak learning rate")
    mlp_batch: int = Field(ge=1, description="digits MLP: minibatch size")
    mlp_hidden: int = Field(ge=1, description="digits MLP: hidden width")
    lm_d_model: int = Field(ge=8, description="LM: width")
    lm_layers: int = Field(ge=1, description="LM: decoder layers")
    lm_heads: int = Field(ge=1, description="LM: attention heads")
    lm_d_ff: int = Field(ge=1, description="LM: SwiGLU width")
    lm_seq_len: int = Field(ge=8, description="LM: tokens per sequence")
    lm_batch: int = Field(ge=1, description="LM: sequences per batch")
    lm_steps: int = Field(ge=2, description="LM: optimizer steps")
    lm_lr: float = Field(gt=0, description="LM: peak learning rate")
    lm_eval_batches: int = Field(ge=1, description="LM: fixed validation batches")
    lm_quantize_head: bool = Field(description="LM: quantise the output head too (FP4 recipes keep it in high precision)")
    rng_ops: float = Field(ge=0, description="operation-equivalents of one random number (SR overhead)")
    num_threads: int = Field(ge=1, description="torch CPU threads for every notebook")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.hadamard & (self.hadamard - 1):
            raise ValueError(f"hadamard: must be a power of two (got {self.hadamard})")
        if self.n_synthetic % 256:
            raise ValueError(f"n_synthetic: must be a multiple of 256 (got {self.n_synthetic})")
        if self.lm_d_model % self.lm_heads:
            raise ValueError(f"lm_heads: must divide lm_d_model={self.lm_d_model} (got {self.lm_heads})")
        if self.configs != "full":
            for name in self.configs:
                techniques.parse(name)  # one-line error naming the key
        return self

    def config_names(self) -> list[str]:
        return techniques.full_grid(self.hadamard) if self.configs == "full" else list(self.configs)
