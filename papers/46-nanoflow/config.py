"""Parameters of paper 46 (NanoFlow). Values live in pipelines/conf/p46/*.yaml.

The cost model and the pipeline model are cheap at every scale; scales change the share grid,
the simulated layers, and the size and length of the real CPU overlap experiment.
"""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.servesim import DEVICES

from .costmodel import MODELS


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- (a) the cost model ---
    device: str = Field(description="a shared.servesim.DEVICES name (the paper: A100-80GB)")
    net_bandwidth: float = Field(gt=0, description="interconnect bytes/s per GPU and direction")
    net_latency_s: float = Field(ge=0, description="latency of one ring step of a collective (s)")
    models: list[str] = Field(min_length=1, description="costmodel.MODELS names; the first is the headline model")
    prompt_len: int = Field(ge=1, description="prompt tokens of the constant workload")
    output_len: int = Field(ge=1, description="output tokens of the constant workload")
    dense_batch: int = Field(ge=1, description="dense tokens per iteration (capped by each model's KV memory)")
    batch_step: int = Field(ge=1, description="the capped dense batch is a multiple of this")
    workloads: list[tuple[int, int]] = Field(min_length=1, description="(prompt, output) pairs classified besides the constant one")
    azure_mix: bool = Field(description="also classify and pipeline the Azure conv trace's mean prompt/output")

    # --- (b) the nano-batch pipeline model ---
    gemm_efficiency: float = Field(gt=0, le=1, description="achieved fraction of peak FLOP/s of a large GEMM")
    gemm_m_half: float = Field(ge=0, description="GEMM rows (tokens) at which GEMM efficiency halves")
    memory_efficiency: float = Field(gt=0, le=1, description="achieved fraction of peak bandwidth of decode attention")
    network_efficiency: float = Field(gt=0, le=1, description="achieved fraction of the link bandwidth of a collective")
    gemv_interference: list[tuple[float, float]] = Field(min_length=1, description="(SM share R, performance P) of decode attention")
    net_interference: list[tuple[float, float]] = Field(min_length=1, description="(SM share R, performance P) of a collective")
    nano_counts: list[int] = Field(min_length=2, description="nano-batch counts searched (1 = sequential, required)")
    share_step: float = Field(gt=0, lt=0.34, description="SM shares searched in multiples of this")
    sim_layers: int = Field(ge=2, description="layers simulated before extrapolating the steady-state period")

    # --- (c) the real overlap experiment on this machine ---
    overlap_gemm_n: int = Field(ge=16, description="square GEMM size of the compute-bound stream")
    overlap_kv_mb: float = Field(gt=0, description="MB of the GEMV 'KV cache' of the memory-bound stream")
    overlap_target_s: float = Field(gt=0, description="seconds each stream lasts alone on one core")
    overlap_repeats: int = Field(ge=1, description="repeats of the three modes (median)")
    overlap_threads: int = Field(ge=1, description="cores given to each operation in the sequential_all baseline")
    num_threads: int = Field(ge=1, description="torch CPU threads outside the overlap experiment")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if self.device not in DEVICES:
            raise ValueError(f"device: {self.device!r} is not one of {', '.join(DEVICES)}")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"models: {unknown} not in costmodel.MODELS ({', '.join(MODELS)})")
        if 1 not in self.nano_counts or min(self.nano_counts) < 1:
            raise ValueError(f"nano_counts: must hold 1 (sequential) and counts >= 1, got {self.nano_counts}")
        n = round(1 / self.share_step)
        if abs(n * self.share_step - 1) > 1e-9:
            raise ValueError(f"share_step: 1 / share_step must be a whole number, got {self.share_step}")
        for key in ("gemv_interference", "net_interference"):
            pts = getattr(self, key)
            if any(not (0 < r < 1 and 0 < p <= 1) for r, p in pts) or any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
                raise ValueError(f"{key}: R must increase within (0, 1) and P lie in (0, 1], got {pts}")
        return self
