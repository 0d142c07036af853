"""The fine-tuning methods we benchmark, sorted by the survey's taxonomy (no torch import).

Han et al. (2024) sort PEFT methods by what they train (§III, Fig. 4 of the survey):

- *additive*: new modules or vectors next to the frozen model — adapters, soft prompts
  (prompt tuning, P-tuning, prefix tuning) and "others" such as (IA)^3's rescaling vectors;
- *selective*: a subset of the model's own parameters — BitFit's biases, LayerNorm tuning,
  and (the limit case) only the task head;
- *reparameterized*: a low-dimensional form of a weight update, trained and then merged into
  the weights for inference — LoRA and its derivatives (RSLoRA, DoRA, AdaLoRA), other
  factorisations (LoHa, LoKr, VeRA, FourierFT) and orthogonal fine-tuning (OFT, BOFT);
  QLoRA is LoRA on a 4-bit base (the survey's "quantization" section of efficient PEFT);
- *hybrid*: a combination of methods of different families (UniPELT, MAM adapter, ...).

``full`` fine-tuning is the baseline, not a PEFT family. Each entry names the peft config
class that builds it (None: hand-made, ``peft_bench.build_model``), the flags that make it
that method (``use_dora`` makes LoRA DoRA; these are not tunable and so live here, not in the
config), and whether its update can be merged into the weights. The tunable options
(rank, target modules, ...) and each method's learning rate are in the paper's config
(pipelines/conf/p16/base.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUPS = ("full", "additive", "selective", "reparameterized", "hybrid")  # "full" = the baseline


@dataclass(frozen=True)
class Method:
    group: str  # one of GROUPS
    peft_config: str | None  # class name in `peft`; None: built by hand
    fixed: dict[str, Any] = field(default_factory=dict)  # keyword arguments that define the method
    mergeable: bool = False  # the update folds into the weights (merge_and_unload)
    quantized_base: bool = False  # the frozen base is loaded in 4 bits (bitsandbytes NF4)
    label: str = ""  # for tables and figures


REGISTRY: dict[str, Method] = {
    "full": Method("full", None, label="full fine-tuning"),
    # selective: the model's own parameters, a subset
    "head": Method("selective", None, label="head only (linear probe)"),
    "bitfit": Method("selective", None, label="BitFit (biases)"),
    "ln_tuning": Method("selective", "LNTuningConfig", mergeable=True, label="LayerNorm tuning"),
    # additive: new parameters beside the frozen model
    "ia3": Method("additive", "IA3Config", mergeable=True, label="(IA)^3"),
    "prompt_tuning": Method("additive", "PromptTuningConfig", label="prompt tuning"),
    "p_tuning": Method("additive", "PromptEncoderConfig", label="P-tuning"),
    "prefix_tuning": Method("additive", "PrefixTuningConfig", label="prefix tuning"),
    # reparameterized: a low-dimensional weight update, merged for inference
    "lora": Method("reparameterized", "LoraConfig", mergeable=True, label="LoRA"),
    "rslora": Method("reparameterized", "LoraConfig", {"use_rslora": True}, mergeable=True, label="RSLoRA"),
    "dora": Method("reparameterized", "LoraConfig", {"use_dora": True}, mergeable=True, label="DoRA"),
    "adalora": Method("reparameterized", "AdaLoraConfig", mergeable=True, label="AdaLoRA"),
    "loha": Method("reparameterized", "LoHaConfig", mergeable=True, label="LoHa"),
    "lokr": Method("reparameterized", "LoKrConfig", mergeable=True, label="LoKr"),
    "vera": Method("reparameterized", "VeraConfig", mergeable=True, label="VeRA"),
    "fourierft": Method("reparameterized", "FourierFTConfig", mergeable=True, label="FourierFT"),
    "oft": Method("reparameterized", "OFTConfig", mergeable=True, label="OFT"),
    "boft": Method("reparameterized", "BOFTConfig", mergeable=True, label="BOFT"),
    # QLoRA is not merged: folding the update into 4-bit weights re-quantizes them (lossy), and
    # on CPU bitsandbytes repacks 4-bit weights for inference, after which peft's merge is wrong
    "qlora": Method("reparameterized", "LoraConfig", quantized_base=True, label="QLoRA (4-bit base)"),
    # hybrid: LoRA on the attention weights plus BitFit's biases (a manual combination, like MAM)
    "lora_bitfit": Method("hybrid", "LoraConfig", {"bias": "all"}, mergeable=True, label="LoRA + BitFit"),
}

# Options the benchmark computes itself instead of reading them from the config.
COMPUTED_OPTIONS = {"task_type", "total_step", "tinit", "tfinal"}
# AdaLoRA's schedule in the config as fractions of the training steps (the step count depends on the scale).
ADALORA_FRACTIONS = ("tinit_fraction", "tfinal_fraction")


def check_name(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method {name!r}: unknown; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]
