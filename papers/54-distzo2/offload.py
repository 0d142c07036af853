"""ZO2: MeZO with the transformer blocks offloaded to host memory and streamed through a small device pool.

Parameters of every decoder layer live in one flat host buffer per layer (pinned on CUDA); the
embedding, final norm and LM head stay resident on the device. A step runs the two perturbed
forwards *together, block by block* (the "dual forward"): block b is uploaded once, gets the
previous step's deferred update (-η g_{t-1} z_{t-1}), then +εz -> h+ = f_b(h+), -2εz ->
h- = f_b(h-), +εz (restored), and goes back to the host, so each block crosses the link once per
direction per step. The device holds ``pool`` block buffers: while block b computes, block b+1
(up to b+pool-2) is uploading and block b-1 writing back.

The link: on CPU, a "device" buffer is ordinary memory and the copies are memcpy's run by two
background threads (upload, write-back); a copy does not complete before the emulated link of
the given bandwidth would have moved it (one copy at a time per direction, like one PCIe link;
the compute thread keeps working meanwhile). On CUDA
the copies are real host<->device copies on their own streams (no shaping), ordered by events.

Per tensor the sequence of in-place additions is mezo.SEQUENCE, as in serial MeZO; only the
tied embedding/head (used at both ends of the dual forward) gets one extra restore/perturb pair,
so the parameters match serial MeZO to float rounding (tests), not bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paper54 import mezo


def _causal_inputs(model, h: torch.Tensor):
    """Position ids, rotary embeddings and the causal mask a Llama decoder layer needs for ``h``."""
    from transformers.masking_utils import create_causal_mask

    pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    mask = create_causal_mask(config=model.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=pos)
    return pos, model.model.rotary_emb(h, position_ids=pos), mask


def _head_loss(model, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model.lm_head(model.model.norm(h))
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").double().mean()


def blockwise_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mezo.lm_loss computed layer by layer (the decomposition the offloaded step uses)."""
    h = model.model.embed_tokens(x)
    pos, rope, mask = _causal_inputs(model, h)
    for layer in model.model.layers:
        h = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
    return _head_loss(model, h, y)


@dataclass
class _Copy:
    """A copy in flight on the emulated link: the real memcpy (a future) and when the link would finish it."""

    future: Future
    deadline: float


class _Link:
    """Copies between host and device buffers.

    CPU: each direction is one engine; a copy occupies its engine from ``max(issue, engine free,
    the copy it must follow)`` for ``nbytes / bandwidth`` s (inf: no shaping), while a background
    thread does the real memcpy; waiting on it returns once both are done. (The link's clock is
    kept by arithmetic, as shared.distributed.Link does for collectives, so a copy thread waiting
    for the GIL behind the compute thread does not slow the emulated link.)
    CUDA: real copies on an upload and a download stream, ordered by events."""

    def __init__(self, device: torch.device, bandwidth: float):
        self.cuda = device.type == "cuda"
        self.bandwidth = bandwidth
        if self.cuda:
            self.up_stream, self.down_stream = torch.cuda.Stream(device), torch.cuda.Stream(device)
        else:
            self.up_pool, self.down_pool = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
            self.free = {"up": 0.0, "down": 0.0}

    @staticmethod
    def _copy(dst, src, after: _Copy | None) -> None:
        if after is not None:
            after.future.result()  # the slot's write-back has read it
        dst.copy_(src)

    def _issue(self, engine: str, dst, src, after: _Copy | None) -> _Copy:
        seconds = src.numel() * src.element_size() / self.bandwidth if math.isfinite(self.bandwidth) else 0.0
        start = max(time.perf_counter(), self.free[engine], after.deadline if after is not None else 0.0)
        self.free[engine] = deadline = start + seconds
        pool = self.up_pool if engine == "up" else self.down_pool
        return _Copy(pool.submit(self._copy, dst, src, after), deadline)

    def upload(self, dst, src, after=None):
        if self.cuda:
            return _stream_copy(self.up_stream, dst, src, after)
        return self._issue("up", dst, src, after)

    def download(self, dst, src):
        if self.cuda:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream())  # the compute on src has finished
            return _stream_copy(self.down_stream, dst, src, done)
        return self._issue("down", dst, src, None)

    def wait(self, handle) -> None:
        if handle is None:
            return
        if isinstance(handle, _Copy):
            handle.future.result()
            remaining = handle.deadline - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
        else:
            torch.cuda.current_stream().wait_event(handle)

    def close(self):
        if self.cuda:
            torch.cuda.synchronize()
        else:
            self.up_pool.shutdown()
            self.down_pool.shutdown()


def _stream_copy(stream, dst, src, after) -> "torch.cuda.Event":
    """CUDA: ``dst.copy_(src)`` on ``stream`` once the event ``after`` has happened; the event of its end."""
    with torch.cuda.stream(stream):
        if after is not None:
            stream.wait_event(after)
        dst.copy_(src, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record(stream)
    return ev


class ZO2:
    """Offloaded MeZO-SGD on a transformers Llama model (``model`` stays usable: its layers' parameters
    become views of the host buffers). ``offload=False``: the same dual forward with every layer
    resident on the device (the no-offload baseline)."""

    def __init__(self, model, cfg: mezo.ZOConfig, device: str = "cpu", offload: bool = True, pool: int = 3,
                 bandwidth: float = math.inf):
        if pool < 2:
            raise ValueError(f"pool: a device pool needs >= 2 block buffers, got {pool}")
        if not bandwidth > 0:
            raise ValueError(f"bandwidth: must be > 0 bytes/s (inf: unshaped), got {bandwidth}")
        self.model, self.cfg, self.offload = model, cfg, offload
        self.device = torch.device(device)
        index = {id(p): i for i, p in enumerate(model.parameters())}
        layers = list(model.model.layers)
        self.layer_index = [[index[id(p)] for p in layer.parameters()] for layer in layers]
        in_layers = {i for idx in self.layer_index for i in idx}
        model.model.embed_tokens.to(self.device)
        model.model.norm.to(self.device)
        model.lm_head.to(self.device)
        model.model.rotary_emb.to(self.device)
        self.resident = [(i, p.data) for i, p in enumerate(model.parameters()) if i not in in_layers]
        self.pending: tuple[int, float] | None = None  # (step, g) of the update not yet applied to the layers
        self.block_s: list[float] = []  # compute seconds per block (the last step; CPU)
        self.embed_s = self.head_s = 0.0  # compute seconds of the dual embedding / dual head (the last step; CPU)
        if not offload:
            for layer in layers:
                layer.to(self.device)
            self.compute = layers
            return
        self.pool = min(pool, len(layers))
        pin = self.device.type == "cuda"
        self.host = []
        for layer in layers:  # one flat host buffer per layer; the layer's parameters become views of it
            flat = torch.cat([p.detach().flatten() for p in layer.parameters()]).cpu()
            flat = flat.pin_memory() if pin else flat.clone()
            _repoint(layer, flat)
            self.host.append(flat)
        size = self.host[0].numel()
        if any(h.numel() != size for h in self.host):
            raise ValueError("offload: every decoder layer must have the same parameter count (one template)")
        self.slots = [torch.empty(size, dtype=self.host[0].dtype, device=self.device) for _ in range(self.pool)]
        self.compute = []
        for s in range(self.pool):  # a device copy of the layer template, its parameters views of slot s
            tmpl = copy.deepcopy(layers[0]).to(self.device)
            _repoint(tmpl, self.slots[s])
            self.compute.append(tmpl)
        self.block_bytes = [h.numel() * h.element_size() for h in self.host]
        self.link = _Link(self.device, bandwidth)

    def device_bytes(self) -> int:
        """Parameter bytes on the device: the resident tensors plus the pool (offload) or every layer."""
        resident = sum(t.numel() * t.element_size() for _, t in self.resident)
        if not self.offload:
            return resident + sum(p.numel() * p.element_size() for layer in self.compute for p in layer.parameters())
        return resident + sum(s.numel() * s.element_size() for s in self.slots)

    def _block_params(self, b: int, module) -> list[tuple[int, torch.Tensor]]:
        return list(zip(self.layer_index[b], (p.data for p in module.parameters())))

    def _block(self, b, module, hp, hm, pos, rope, mask, step):
        cfg = self.cfg
        started = time.perf_counter()
        params = self._block_params(b, module)
        if self.pending is not None:
            mezo.apply(params, cfg.seed, self.pending[0], [-cfg.lr * self.pending[1]])
        mezo.apply(params, cfg.seed, step, [cfg.eps])
        hp = module(hp, attention_mask=mask, position_embeddings=rope, position_ids=pos)
        mezo.apply(params, cfg.seed, step, [-2 * cfg.eps])
        hm = module(hm, attention_mask=mask, position_embeddings=rope, position_ids=pos)
        mezo.apply(params, cfg.seed, step, [cfg.eps])
        self.block_s.append(time.perf_counter() - started)
        return hp, hm

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[float, float, float]:
        """One ZO2 step on (x, y); returns (L+, L-, g). Layer updates of this step are deferred to the next."""
        cfg, model = self.cfg, self.model
        self.block_s = []
        x, y = x.to(self.device), y.to(self.device)
        n = len(self.layer_index)
        if self.offload:  # start streaming before the embedding runs
            up = {b: self.link.upload(self.slots[b % self.pool], self.host[b]) for b in range(min(self.pool - 1, n))}
            down = {}
        started = time.perf_counter()
        mezo.apply(self.resident, cfg.seed, step, [cfg.eps])
        hp = model.model.embed_tokens(x)
        mezo.apply(self.resident, cfg.seed, step, [-2 * cfg.eps])
        hm = model.model.embed_tokens(x)
        mezo.apply(self.resident, cfg.seed, step, [cfg.eps])
        pos, rope, mask = _causal_inputs(model, hp)
        self.embed_s = time.perf_counter() - started
        for b in range(n):
            if not self.offload:
                hp, hm = self._block(b, self.compute[b], hp, hm, pos, rope, mask, step)
                continue
            self.link.wait(up.pop(b))
            hp, hm = self._block(b, self.compute[b % self.pool], hp, hm, pos, rope, mask, step)
            down[b] = self.link.download(self.host[b], self.slots[b % self.pool])
            nb = b + self.pool - 1  # its slot is the one block b-1 is being written back from
            if nb < n:
                up[nb] = self.link.upload(self.slots[nb % self.pool], self.host[nb], down.get(nb - self.pool))
        started = time.perf_counter()
        mezo.apply(self.resident, cfg.seed, step, [cfg.eps])
        lp = float(_head_loss(model, hp, y))
        mezo.apply(self.resident, cfg.seed, step, [-2 * cfg.eps])
        lm = float(_head_loss(model, hm, y))
        g = mezo.zo_grad([lp], [lm], cfg.eps)
        mezo.apply(self.resident, cfg.seed, step, [cfg.eps, -cfg.lr * g])
        self.head_s = time.perf_counter() - started
        if self.offload:
            for h in down.values():
                self.link.wait(h)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        self.pending = (step, g)
        return lp, lm, g

    @torch.no_grad()
    def finish(self) -> None:
        """Apply the deferred update of the last step to every layer (then ``model`` is the trained θ)."""
        if self.pending is None:
            return
        for b in range(len(self.layer_index)):
            if self.offload:
                slot = self.slots[b % self.pool]
                slot[: self.host[b].numel()].copy_(self.host[b])
                mezo.apply(self._block_params(b, self.compute[b % self.pool]), self.cfg.seed, self.pending[0],
                           [-self.cfg.lr * self.pending[1]])
                self.host[b].copy_(slot[: self.host[b].numel()])
            else:
                mezo.apply(self._block_params(b, self.compute[b]), self.cfg.seed, self.pending[0],
                           [-self.cfg.lr * self.pending[1]])
        self.pending = None
        if self.offload:
            self.link.close()


def _repoint(module, flat: torch.Tensor) -> None:
    """Make ``module``'s parameters views into ``flat`` (in ``parameters()`` order; values are ``flat``'s)."""
    offset = 0
    for p in module.parameters():
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def schedule_seconds(t_embed: float, t_block: float, t_head: float, t_copy: float, n_blocks: int, pool: int) -> float:
    """The step time the schedule of :meth:`ZO2.step` implies (a discrete-event model): one upload
    engine and one write-back engine, each copy ``t_copy`` seconds, uploads issued as in ``step``
    (``pool - 1`` prefetched, then block b + pool - 1 after block b computes, once its slot is written back)."""
    up_free, down_free, up_done, down_done = 0.0, 0.0, {}, {}
    for b in range(min(pool - 1, n_blocks)):
        up_done[b] = up_free = up_free + t_copy
    t = t_embed
    for b in range(n_blocks):
        t = max(t, up_done[b]) + t_block
        down_done[b] = down_free = max(t, down_free) + t_copy
        nb = b + pool - 1
        if nb < n_blocks:
            up_done[nb] = up_free = max(up_free, t, down_done.get(nb - pool, 0.0)) + t_copy
    return max(t + t_head, down_free)
