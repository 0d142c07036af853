"""Horizon-LM's execution model (Yuan, Sun, Ye 2026): the host is the master, the device a template.

    engine = HorizonEngine(model, cfg, device="cpu")       # model: a zoo Llama on the host (fp32)
    loss = engine.step(x, y, step)                          # one optimizer step, streamed layer by layer
    engine.device_ledger.peak                               # device bytes the engine held at its peak

What lives where:

- **host** (CPU RAM): the authoritative fp32 parameters (the model given, never moved), AdamW's
  moments, and per-layer gradients only while that layer's optimizer step is pending (the
  paper's gradient slab), plus the layer-boundary checkpoints when ``checkpoints="host"``;
- **device**: two *templates* of one decoder layer (real transformers ``LlamaDecoderLayer`` s,
  double-buffered: layer i+1 streams into one while layer i computes on the other), one
  template of the embedding/final norm/LM head, the rotary tables, and the activations of the
  layer being computed.

One step (:meth:`HorizonEngine.step`):

1. forward without autograd, layer by layer: StreamIn(i+1) overlaps Compute(i); only the
   layer-boundary hidden states are kept (checkpoints, on the host or on the device);
2. head: recompute norm + LM head + cross-entropy from the last checkpoint with autograd,
   ``torch.autograd.grad`` gives the head's weight gradients and the gradient of the hidden state;
3. backward, last layer first: recompute the layer from its checkpoint on its template, take
   ``torch.autograd.grad(out, [input, *weights], grad_outputs=g)`` (manual propagation: no
   graph spans two layers), Offload the weight gradients to the host, and hand the layer to
   the host AdamW, which steps it while the device recomputes the layer below;
4. the embedding last (its tied weight also got the head's gradient).

Overlap: on CUDA a copy stream streams weights (pinned host memory, events between the
streams) and a worker thread runs the host AdamW after each layer's gradients land. On a CPU
the "device" is the CPU too: a copy thread plays the copy stream (torch releases the GIL in
its kernels, so a second core does the copies) and the optimizer thread the host AdamW.
``overlap=False`` runs everything in order on the main thread (the step-time breakdown).

Global gradient-norm clipping needs every gradient before any step, so with
``cfg.grad_clip > 0`` the per-layer steps wait for the end of the backward (no optimizer
overlap); ``grad_clip = 0`` is the paper's per-layer overlapped schedule.

Device bytes (:class:`ByteLedger`) are counted exactly, tensor by tensor (each storage once):
the templates, the checkpoints on the device, the hidden state and its gradient, the weight
gradients of the layer in flight, and the tensors autograd saves while a layer is recomputed
(``saved_tensors_hooks``). Transient workspace inside one kernel is not a held tensor and not
counted; on CUDA ``torch.cuda.max_memory_allocated`` is reported as well.

Baselines: :func:`standard_device_bytes` counts the standard autograd trainer's device state
(parameters, gradients, AdamW moments, activations saved for backward) with the same counter;
:class:`OffloadTrainer` is the ZeRO-Offload-style trainer (parameters and autograd on the
device, gradients to the host, AdamW state and step on the host, parameters back).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from shared import trainer
from shared.trainer import TrainConfig

PHASES = ("stream_in", "forward", "head", "recompute_backward", "offload", "optimizer", "wait")


@contextmanager
def timed(times: dict, phase: str):
    """Add the wall-clock seconds of the block to ``times[phase]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[phase] += time.perf_counter() - start


# ----------------------------------------------------------------------------- byte counting
def storages(tensors) -> dict[int, int]:
    """{storage data_ptr: storage bytes} of dense tensors (views of one storage count once)."""
    out = {}
    for t in tensors:
        if t is None:
            continue
        s = t.untyped_storage()
        out[s.data_ptr()] = s.nbytes()
    return out


class ByteLedger:
    """Live bytes by name (each storage counted once across names) and their peak."""

    def __init__(self):
        self._live: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.peak_parts: dict[str, int] = {}

    def hold(self, name: str, tensors=()) -> None:
        """Name ``tensors`` (their storages) as live, replacing what the name held."""
        entry = storages(tensors)
        with self._lock:
            self._live[name] = entry
            self._update()

    def drop(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._live.pop(name, None)
            self._update()

    def _update(self) -> None:
        seen: dict[int, int] = {}
        parts: dict[str, int] = {}
        for name, entry in self._live.items():
            fresh = {k: v for k, v in entry.items() if k not in seen}
            seen.update(fresh)
            parts[name.split(":")[0]] = parts.get(name.split(":")[0], 0) + sum(fresh.values())
        self.current = sum(seen.values())
        if self.current > self.peak:
            self.peak, self.peak_parts = self.current, parts


@contextmanager
def saved_activations(ledger: ByteLedger, name: str = "saved"):
    """Count every tensor autograd saves for backward inside the block as live under ``name``
    (storages the ledger already holds, such as the weights, are not counted twice)."""
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        ledger.hold(name, saved)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


# ----------------------------------------------------------------------------- the optimizer
def host_adamw(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW | None:
    """The standard trainer's AdamW (shared.trainer: decay on matrices only, fused on CPU) over
    ``params``; None when there are none."""
    if not params:
        return None
    holder = torch.nn.Module()
    holder.params = torch.nn.ParameterList(params)
    return trainer._adamw(holder, cfg, "cpu")


def _set_lr(optimizer, lr: float) -> None:
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr


# ----------------------------------------------------------------------------- the engine
class _Stage:
    """One unit of streaming: host modules, their device template, the host parameters whose
    optimizer step this stage owns."""

    def __init__(self, name: str, template_params: list, host_params: list):
        self.name, self.template_params, self.host_params = name, template_params, host_params
        self.owned: list[torch.nn.Parameter] = []
        self.optimizer = None


class HorizonEngine:
    """CPU-master, device-template training of a transformers decoder (Llama family) on ``device``."""

    def __init__(self, model, cfg: TrainConfig, *, device: str = "cpu", checkpoints: str = "host",
                 overlap: bool = True, grad_reduce=None):  # fmt: skip
        if checkpoints not in ("host", "device"):
            raise ValueError(f"checkpoints: 'host' or 'device', got {checkpoints!r}")
        if cfg.dtype != "float32":
            raise ValueError(f"dtype: the engine trains in float32 here, got {cfg.dtype!r}")
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("model: the host master must live on the CPU")
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.checkpoints, self.overlap = checkpoints, overlap
        # data parallelism (paper21.dp): called in place on each stage's device gradients as they
        # are produced (the same stage order on every rank), before they reach the host optimizer
        self.grad_reduce = grad_reduce
        self.cuda = self.device.type == "cuda"
        body = model.model
        self.config = model.config
        self.layers = list(body.layers)
        self.n_layers = len(self.layers)

        if self.cuda:  # DMA needs page-locked host memory
            for p in model.parameters():
                p.data = p.data.pin_memory()
        # templates: copies of the host modules' structure on the device (their values are
        # overwritten by every StreamIn)
        self.templates = [copy.deepcopy(self.layers[0]).to(self.device) for _ in range(2)]
        self.embed = copy.deepcopy(body.embed_tokens).to(self.device)
        self.norm = copy.deepcopy(body.norm).to(self.device)
        self.lm_head = copy.deepcopy(model.lm_head).to(self.device)
        self.tied = model.lm_head.weight is body.embed_tokens.weight
        if self.tied:
            self.lm_head.weight = self.embed.weight
        self.rotary = copy.deepcopy(body.rotary_emb).to(self.device)

        # stages in forward order: embedding, layers, head; a parameter's optimizer step is
        # owned by the last stage of the backward that touches it (the embedding for a tied head)
        self.embed_stage = _Stage("embed", [self.embed.weight], [body.embed_tokens.weight])
        self.layer_stages = [_Stage(f"layer{i}", None, list(layer.parameters())) for i, layer in enumerate(self.layers)]
        head_t = [self.norm.weight, self.lm_head.weight]
        self.head_stage = _Stage("head", head_t, [body.norm.weight, model.lm_head.weight])
        claimed: set[int] = set()
        for stage in [self.embed_stage, *self.layer_stages[::-1], self.head_stage]:  # backward order, reversed
            stage.owned = [p for p in stage.host_params if id(p) not in claimed]
            claimed.update(id(p) for p in stage.owned)
            stage.optimizer = host_adamw(stage.owned, cfg)
        if claimed != {id(p) for p in model.parameters()}:
            raise ValueError("model: some parameters belong to no stage (embedding, layers, norm, lm_head only)")

        self.device_ledger, self.host_ledger = ByteLedger(), ByteLedger()
        self.device_ledger.hold("templates", [p for t in self.templates for p in t.parameters()])
        self.device_ledger.hold("io_template", [self.embed.weight, self.norm.weight, self.lm_head.weight])
        self.host_ledger.hold("params", list(model.parameters()))
        self.times: dict[str, float] = defaultdict(float)
        self._copier = ThreadPoolExecutor(1, thread_name_prefix="copy") if overlap and not self.cuda else None
        self._stepper = ThreadPoolExecutor(1, thread_name_prefix="adam") if overlap else None
        if self.cuda:
            self._copy_stream = torch.cuda.Stream(self.device)
            self._free = [torch.cuda.Event(), torch.cuda.Event()]  # slot s no longer read by compute

    # --- accounting
    def _optimizer_tensors(self) -> list[torch.Tensor]:
        """AdamW's state on the host (moments, step counters; empty before the first step)."""
        return [t for s in self._stages() if s.optimizer for st in s.optimizer.state.values() for t in st.values()
                if torch.is_tensor(t)]  # fmt: skip

    def _stages(self):
        return [self.embed_stage, *self.layer_stages, self.head_stage]

    def _timed(self, phase: str):
        return timed(self.times, phase)

    # --- StreamIn: host weights -> a template slot
    def _copy_into(self, template_params, host_params) -> None:
        with torch.no_grad():
            for t, h in zip(template_params, host_params):
                t.copy_(h, non_blocking=self.cuda)

    def _stream_in(self, i: int):
        """Start streaming layer i into slot i % 2; returns a handle for :meth:`_wait`."""
        dst, src = list(self.templates[i % 2].parameters()), self.layer_stages[i].host_params
        if self.cuda:
            with torch.cuda.stream(self._copy_stream):
                self._copy_stream.wait_event(self._free[i % 2])
                self._copy_into(dst, src)
                ready = torch.cuda.Event()
                ready.record(self._copy_stream)
            return ready
        if self._copier is not None:
            return self._copier.submit(self._timed_copy, dst, src)
        with self._timed("stream_in"):
            self._copy_into(dst, src)
        return None

    def _timed_copy(self, dst, src):
        start = time.perf_counter()
        self._copy_into(dst, src)
        return time.perf_counter() - start

    def _wait(self, handle, slot: int) -> None:
        with self._timed("wait"):
            if isinstance(handle, Future):
                self.times["stream_in_hidden"] += handle.result()
            elif handle is not None:
                torch.cuda.current_stream(self.device).wait_event(handle)

    def _release(self, slot: int) -> None:
        if self.cuda:
            self._free[slot].record(torch.cuda.current_stream(self.device))

    # --- checkpoints and offload
    def _keep(self, h: torch.Tensor, i: int) -> torch.Tensor:
        if self.checkpoints == "device":
            self.device_ledger.hold(f"checkpoints:{i}", [h])
            return h
        with self._timed("offload"):
            host = torch.empty(h.shape, dtype=h.dtype, pin_memory=self.cuda)
            host.copy_(h, non_blocking=self.cuda)
        self.host_ledger.hold(f"checkpoints:{i}", [host])
        return host

    def _fetch(self, ckpt: torch.Tensor) -> torch.Tensor:
        if self.checkpoints == "device":
            return ckpt.detach()
        return ckpt.to(self.device, non_blocking=self.cuda, copy=True)  # host -> device (a copy on a CPU too)

    def _offload_grads(self, stage: _Stage, grads) -> None:
        """Device gradients -> the host parameters' .grad (accumulating a tied weight's)."""
        if self.grad_reduce is not None:
            with self._timed("all_reduce"):
                self.grad_reduce(list(grads))
        with self._timed("offload"):
            for h, g in zip(stage.host_params, grads):
                host = torch.empty(g.shape, dtype=g.dtype, pin_memory=self.cuda)
                host.copy_(g, non_blocking=self.cuda)
                h.grad = host if h.grad is None else h.grad.add_(host)
            if self.cuda:
                torch.cuda.current_stream(self.device).synchronize()  # the host reads them next
        self.host_ledger.hold(f"grads:{stage.name}", [h.grad for h in stage.host_params])

    def _step_stage(self, stage: _Stage) -> float:
        start = time.perf_counter()
        if stage.optimizer is not None:
            stage.optimizer.step()
            stage.optimizer.zero_grad(set_to_none=True)  # the gradient slab is free again
        self.host_ledger.hold(f"grads:{stage.name}", [h.grad for h in stage.host_params])  # a tied weight's waits
        return time.perf_counter() - start

    def _submit_step(self, stage: _Stage, pending: list, update: bool) -> None:
        if not update:
            return
        if self.cfg.grad_clip > 0:
            pending.append(stage)  # global clipping: step after the whole backward
        elif self._stepper is not None:
            pending.append(self._stepper.submit(self._step_stage, stage))
        else:
            self.times["optimizer"] += self._step_stage(stage)

    def _finish_steps(self, pending: list) -> None:
        if self.cfg.grad_clip > 0:
            with self._timed("optimizer"):
                torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), self.cfg.grad_clip, foreach=True)
                for stage in pending:
                    self._step_stage(stage)
            return
        with self._timed("wait"):
            for f in pending:
                self.times["optimizer_hidden"] += f.result()

    # --- one step
    def step(self, x: torch.Tensor, y: torch.Tensor, step: int, *, update: bool = True) -> float:
        """One optimizer step on batch (x, y) (y: next tokens of x); returns the loss.
        ``update=False``: forward and backward only, the gradients stay in the host
        parameters' ``.grad`` (no optimizer step)."""
        from transformers.masking_utils import create_causal_mask

        lr = self.cfg.lr * trainer.lr_multiplier(step, self.cfg)
        for stage in self._stages():
            _set_lr(stage.optimizer, lr)
        led = self.device_ledger
        self.host_ledger.hold("optimizer", self._optimizer_tensors())
        x, y = x.to(self.device), y.to(self.device)
        L = self.n_layers

        # ---- forward: embedding, then layer i on slot i % 2 while layer i+1 streams in
        with self._timed("stream_in"):
            self._copy_into(self.embed_stage.template_params, self.embed_stage.host_params)
            self._copy_into([self.norm.weight], [self.model.model.norm.weight])
            if not self.tied:
                self._copy_into([self.lm_head.weight], [self.model.lm_head.weight])
        handle = self._stream_in(0)
        ckpts = []
        with torch.no_grad(), self._timed("forward"):
            h = self.embed(x)
            positions = torch.arange(x.shape[1], device=self.device).unsqueeze(0)
            mask = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=None, cache=None,
                                      position_ids=positions)  # fmt: skip
            rope = self.rotary(h, position_ids=positions)
            led.hold("rope", [*rope, mask] if torch.is_tensor(mask) else rope)
            led.hold("hidden", [h])
            ckpts.append(self._keep(h, 0))
        for i in range(L):
            self._wait(handle, i % 2)
            handle = self._stream_in(i + 1) if i + 1 < L else None
            with torch.no_grad(), self._timed("forward"):
                out = self.templates[i % 2](h, attention_mask=mask, position_ids=positions, position_embeddings=rope)
                led.hold("hidden", [h, out])
            self._release(i % 2)
            h = out
            led.hold("hidden", [h])
            ckpts.append(self._keep(h, i + 1))
        del h, out
        led.drop("hidden")

        # ---- head: recompute norm + LM head + loss with autograd, propagate by hand
        handle = self._stream_in(L - 1)
        pending: list = []
        with self._timed("head"):
            h_in = self._fetch(ckpts[L]).requires_grad_(True)
            led.hold("hidden", [h_in])
            with saved_activations(led):
                logits = self.lm_head(self.norm(h_in))
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            grads = torch.autograd.grad(loss, [h_in, *self.head_stage.template_params])
            del logits
            led.drop("saved")
            g = grads[0]
            led.hold("layer_grads", grads[1:])
            led.hold("grad_hidden", [g])
        self._offload_grads(self.head_stage, grads[1:])
        led.drop("layer_grads", "hidden")
        del grads, h_in
        self._submit_step(self.head_stage, pending, update)

        # ---- backward: recompute layer i from its checkpoint, manual gradient propagation
        for i in reversed(range(L)):
            self._wait(handle, i % 2)
            handle = self._stream_in(i - 1) if i > 0 else None
            template = self.templates[i % 2]
            with self._timed("recompute_backward"):
                h_in = self._fetch(ckpts[i]).requires_grad_(True)
                led.hold("hidden", [h_in])
                with saved_activations(led):
                    out = template(h_in, attention_mask=mask, position_ids=positions, position_embeddings=rope)
                led.hold("hidden", [h_in, out])
                grads = torch.autograd.grad(out, [h_in, *template.parameters()], grad_outputs=g)
                led.hold("layer_grads", grads[1:])
                del out
                led.drop("saved")
                g = grads[0]
                led.hold("grad_hidden", [g])
            self._release(i % 2)
            self._offload_grads(self.layer_stages[i], grads[1:])
            led.drop("layer_grads", "hidden", f"checkpoints:{i + 1}")
            self.host_ledger.drop(f"checkpoints:{i + 1}")
            del grads, h_in
            self._submit_step(self.layer_stages[i], pending, update)

        # ---- embedding (its tied weight already holds the head's gradient)
        with self._timed("recompute_backward"):
            weight = self.embed.weight
            emb = F.embedding(x, weight)
            (grad_w,) = torch.autograd.grad(emb, [weight], grad_outputs=g)
            led.hold("layer_grads", [grad_w])
        self._offload_grads(self.embed_stage, [grad_w])
        led.drop("layer_grads", "grad_hidden", "checkpoints:0", "rope")
        self.host_ledger.drop("checkpoints:0")
        del grad_w, g, emb
        self._submit_step(self.embed_stage, pending, update)
        if update:
            self._finish_steps(pending)
        self.host_ledger.hold("optimizer", self._optimizer_tensors())
        return float(loss.detach())

    def close(self) -> None:
        for pool in (self._copier, self._stepper):
            if pool is not None:
                pool.shutdown()


# ----------------------------------------------------------------------------- baselines
def standard_device_bytes(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> dict[str, int]:
    """The standard autograd trainer's device state for one step of ``model`` (where it lives),
    counted tensor by tensor: parameters, their gradients, AdamW's moments and the activations
    autograd saves for backward (weights it saves are the parameters: not counted twice).
    Runs one real step of ``model`` (its weights change)."""
    ledger = ByteLedger()
    params = list(model.parameters())
    ledger.hold("params", params)
    optimizer = trainer._adamw(model, cfg, str(x.device))
    with saved_activations(ledger) as saved:
        loss = trainer.training_loss(model, x, y)
    activations = sum(storages(saved).values()) - sum(
        v for k, v in storages(saved).items() if k in storages(params))  # fmt: skip
    loss.backward()
    optimizer.step()
    moments = [t for st in optimizer.state.values() for k, t in st.items() if k in ("exp_avg", "exp_avg_sq")]
    return {
        "params": sum(storages(params).values()),
        "grads": sum(storages(p.grad for p in params).values()),
        "optimizer": sum(storages(moments).values()),
        "activations": activations,
    }


class OffloadTrainer:
    """ZeRO-Offload-style training: parameters and the autograd graph on the device, gradients
    offloaded to the host after backward, AdamW state and step on the host (the standard
    trainer's AdamW), updated parameters copied back. Sequential (no overlap)."""

    def __init__(self, model, cfg: TrainConfig, *, device: str = "cpu"):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.replica = copy.deepcopy(model).to(self.device)  # on a CPU: a second copy, as a GPU would hold
        self.host_params = list(model.parameters())
        self.device_params = list(self.replica.parameters())
        self.optimizer = trainer._adamw(model, cfg, "cpu")
        self.times: dict[str, float] = defaultdict(float)

    def _timed(self, phase: str):
        return timed(self.times, phase)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
        _set_lr(self.optimizer, self.cfg.lr * trainer.lr_multiplier(step, self.cfg))
        x, y = x.to(self.device), y.to(self.device)
        with self._timed("forward_backward"):
            loss = trainer.training_loss(self.replica, x, y)
            loss.backward()
        with self._timed("offload"):
            for h, d in zip(self.host_params, self.device_params):
                h.grad = d.grad.to("cpu", copy=True)
                d.grad = None
        with self._timed("optimizer"):
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.host_params, self.cfg.grad_clip, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        with self._timed("stream_in"), torch.no_grad():  # H2D: the updated parameters back to the device
            for h, d in zip(self.host_params, self.device_params):
                d.copy_(h)
        return float(loss.detach())


def run_steps(trainer_obj, batches, steps: int) -> list[float]:
    """Losses of ``steps`` steps of an engine/trainer on ``batches[0..steps-1]``."""
    return [trainer_obj.step(*batches[s], s) for s in range(steps)]
