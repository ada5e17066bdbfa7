"""A K-member MLP ensemble held as batched weight tensors and trained in one vectorised pass.

Layer ``i`` holds ``W [K, in, out]`` and ``b [K, out]``; a forward pass is a batched matmul over
the member axis, so K members cost one kernel launch per layer instead of K. Each member sees its
own bootstrap resample (its own index tensor, shuffled by its own generator) and starts from its
own initialisation; the loss is the sum of the members' mean cross-entropies, so each member's
gradient (and, with Adam, its update) is exactly what it would get when trained alone.
:func:`fit_ensemble_sequential` trains the same members one after another for the benchmark.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.errors import UsageError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Optimizer = Literal["adam", "sgd"]


@dataclass(frozen=True)
class EnsembleConfig:
    """Architecture and optimisation settings of the ensemble."""

    members: int = 8
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: Optimizer = "adam"
    #: Epochs without validation improvement before a member stops; 0 disables early stopping.
    patience: int = 20
    #: Relative drop in validation loss that counts as improvement for ``patience``. Without it
    #: an overfitting member creeps down by 1e-5 an epoch forever, its logits grow without
    #: bound, and float32 rounding in the exported graph starts to show (ONNX parity).
    min_improvement: float = 1e-3
    seed: int = 0
    device: Device = "auto"
    #: Show a tqdm bar (None: only when stderr is a terminal).
    progress: bool | None = None


@dataclass
class TrainingHistory:
    """Per-epoch losses: ``train[e]`` mean over active members, ``validation[e]`` per member."""

    train: list[float] = field(default_factory=list)
    validation: list[list[float]] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class TrainedEnsemble:
    """Best weights of every member as numpy arrays, plus how training went."""

    layers: list[tuple[NDArray[np.float32], NDArray[np.float32]]]
    history: TrainingHistory

    @property
    def members(self) -> int:
        """Number of members K."""
        return int(self.layers[0][0].shape[0])


class BatchedMLP(nn.Module):
    """K independent MLPs stored as [K, in, out] tensors; ReLU between layers, logits out."""

    def __init__(self, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w) for w, _ in weights])
        self.biases = nn.ParameterList([nn.Parameter(b) for _, b in weights])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [N, in] (shared rows) or [K, N, in] (per-member rows) -> logits [K, N, C]."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if h.dim() == 3:
                # [K, N, in] @ [K, in, out] + b: one fused batched kernel for all members.
                h = torch.baddbmm(b[:, None, :], h, w)
            else:
                # Shared rows: [N, in] @ [K, in, out] broadcasts to [K, N, out].
                h = torch.matmul(h, w) + b[:, None, :]
            if i < last:
                h = torch.relu(h)
        return h


def resolve_device(device: Device) -> torch.device:
    """Map ``auto|cpu|cuda`` to a torch device; cuda without a GPU is a UsageError."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda was asked but PyTorch sees no CUDA device: use --device "
            "cpu or auto, or install a CUDA build of torch"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def member_seed(seed: int, member: int) -> int:
    """Seed of one member's initialisation, bootstrap and shuffles (same in both training modes)."""
    return seed * 10_007 + member


def _init_member(sizes: Sequence[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # nn.Linear's default weight range, U(+-1/sqrt(fan_in)), from the member's own generator
    # (so the same member starts identically in both training modes); zero biases.
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        w = (torch.rand(fan_in, fan_out, generator=gen) * 2.0 - 1.0) * bound
        layers.append((w, torch.zeros(fan_out)))
    return layers


def _bootstrap(rows: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, rows, (rows,), generator=gen)


@contextmanager
def _deterministic() -> Iterator[None]:
    # Same seed -> same weights -> same ONNX bytes; the process-wide switch is put back after,
    # so code that shares the process (tests, a notebook) keeps its own setting.
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@_deterministic()
def fit_ensemble(
    x_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    x_val: NDArray[np.float32],
    y_val: NDArray[np.int64],
    classes: int,
    config: EnsembleConfig,
    *,
    members: Sequence[int] | None = None,
) -> TrainedEnsemble:
    """Train the members (all of them, or the listed member numbers) together.

    Early stopping is per member on the validation loss: once a member's loss has not improved
    for ``patience`` epochs its loss is masked out of the sum (no more gradient), its best
    weights are the ones returned, and training ends when every member has stopped (or after
    ``epochs``). All randomness comes from per-member ``torch.Generator`` objects seeded from
    ``config.seed``, never from the global RNG, so the same seed gives the same weights.
    """
    device = resolve_device(config.device)
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic batched matmuls; it is read when the
        # first cuBLAS handle is created, so set it before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ids = list(range(config.members)) if members is None else list(members)
    k = len(ids)
    sizes = [x_train.shape[1], *config.hidden, classes]
    inits = [_init_member(sizes, member_seed(config.seed, m)) for m in ids]
    stacked = [
        (
            torch.stack([m[i][0] for m in inits]).to(device),
            torch.stack([m[i][1] for m in inits]).to(device),
        )
        for i in range(len(sizes) - 1)
    ]
    model = BatchedMLP(stacked)
    optimiser: torch.optim.Optimizer
    if config.optimizer == "adam":
        # AdamW: decoupled weight decay, so the decay does not depend on the gradient scale.
        optimiser = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimiser = torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=0.9,
            weight_decay=config.weight_decay,
        )

    xt = torch.from_numpy(np.ascontiguousarray(x_train)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y_train)).to(device)
    xv = torch.from_numpy(np.ascontiguousarray(x_val)).to(device)
    yv = torch.from_numpy(np.ascontiguousarray(y_val)).to(device)
    n = xt.shape[0]
    boot = torch.stack([_bootstrap(n, member_seed(config.seed, m)) for m in ids]).to(device)
    shuffles = [torch.Generator().manual_seed(member_seed(config.seed, m) + 2) for m in ids]
    batch = max(1, min(config.batch_size, n))

    best_loss = torch.full((k,), math.inf)
    best = [(w.detach().clone(), b.detach().clone()) for w, b in stacked]
    waited = torch.zeros(k, dtype=torch.int64)
    active = torch.ones(k, dtype=torch.bool)
    history = TrainingHistory(best_epoch=[0] * k)
    started = time.perf_counter()
    bar = _progress(config, k)
    for epoch in range(config.epochs):
        model.train()
        order = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
        rows = torch.gather(boot, 1, order)  # [K, n]: each member's resample, shuffled
        mask = active.to(device=device, dtype=xt.dtype)
        total, steps = torch.zeros((), device=device), 0
        for start in range(0, n, batch):
            idx = rows[:, start : start + batch]
            logits = model(xt[idx])  # [K, B, C]
            per_member = (
                nn.functional.cross_entropy(
                    logits.reshape(-1, classes), yt[idx].reshape(-1), reduction="none"
                )
                .reshape(k, -1)
                .mean(dim=1)
            )
            # Stopped members get no gradient; their best weights are restored at the end.
            loss = (per_member * mask).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += (per_member.detach() * mask).sum() / mask.sum().clamp(min=1.0)
            steps += 1
        val = _validation_loss(model, xv, yv, classes).cpu()
        history.train.append(float(total) / max(steps, 1))
        history.validation.append(val.tolist())
        improved = (val < best_loss) & active
        significant = (val < best_loss * (1.0 - config.min_improvement)) & active
        for i in torch.nonzero(improved).flatten().tolist():
            best_loss[i] = val[i]
            history.best_epoch[i] = epoch
            for (bw, bb), w, b in zip(best, model.weights, model.biases, strict=True):
                bw[i] = w.detach()[i]
                bb[i] = b.detach()[i]
        waited = torch.where(significant, torch.zeros_like(waited), waited + 1)
        if config.patience > 0:
            active &= waited < config.patience
        _report(bar, epoch, config.epochs, history, int(active.sum()))
        if not bool(active.any()):
            break
    if bar is not None:
        bar.close()
    if config.patience <= 0:
        # Without early stopping the final weights are the result, not the best epoch's.
        best = [
            (w.detach().clone(), b.detach().clone())
            for w, b in zip(model.weights, model.biases, strict=True)
        ]
        history.best_epoch = [len(history.train) - 1] * k
    history.seconds = time.perf_counter() - started
    layers = [
        (w.cpu().numpy().astype(np.float32), b.cpu().numpy().astype(np.float32)) for w, b in best
    ]
    return TrainedEnsemble(layers, history)


def fit_ensemble_sequential(
    x_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    x_val: NDArray[np.float32],
    y_val: NDArray[np.int64],
    classes: int,
    config: EnsembleConfig,
) -> TrainedEnsemble:
    """Train the same K members one after another (K runs of one member) and stack them.

    Same initialisations, resamples and shuffles as :func:`fit_ensemble`: only the batching over
    members differs. The benchmark compares the two.
    """
    single = replace(config, progress=False)
    runs = [
        fit_ensemble(x_train, y_train, x_val, y_val, classes, single, members=[m])
        for m in range(config.members)
    ]
    layers = [
        (
            np.concatenate([r.layers[i][0] for r in runs]),
            np.concatenate([r.layers[i][1] for r in runs]),
        )
        for i in range(len(runs[0].layers))
    ]
    history = TrainingHistory(
        train=[float(np.mean(v)) for v in zip(*[r.history.train for r in runs], strict=False)],
        validation=[
            [
                r.history.validation[e][0] if e < len(r.history.validation) else math.nan
                for r in runs
            ]
            for e in range(max(len(r.history.validation) for r in runs))
        ],
        best_epoch=[r.history.best_epoch[0] for r in runs],
        seconds=sum(r.history.seconds for r in runs),
    )
    return TrainedEnsemble(layers, history)


def _validation_loss(
    model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, classes: int
) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(x)  # [K, N, C]
        k = logits.shape[0]
        return (
            nn.functional.cross_entropy(logits.reshape(-1, classes), y.repeat(k), reduction="none")
            .reshape(k, -1)
            .mean(dim=1)
        )


def member_logits(
    layers: Sequence[tuple[NDArray[np.float32], NDArray[np.float32]]], x: NDArray[np.float32]
) -> NDArray[np.float32]:
    """PyTorch forward pass of stored weights: encoded rows [N, in] -> logits [N, K, C]."""
    model = BatchedMLP([(torch.from_numpy(w), torch.from_numpy(b)) for w, b in layers])
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return np.ascontiguousarray(out.permute(1, 0, 2).numpy())


def _progress(config: EnsembleConfig, members: int) -> Any:
    show = sys.stderr.isatty() if config.progress is None else config.progress
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(
        total=config.epochs,
        desc=f"training {members} members",
        unit="epoch",
        file=sys.stderr,
        leave=False,
    )


def _report(bar: Any, epoch: int, epochs: int, history: TrainingHistory, active: int) -> None:
    val = float(np.mean(history.validation[-1]))
    if bar is not None:
        bar.update(1)
        bar.set_postfix(
            loss=f"{history.train[-1]:.4f}",
            val_loss=f"{val:.4f}",
            active=active,
        )
    elif epoch % 10 == 0 or epoch == epochs - 1 or active == 0:
        log.info(
            "epoch %d/%d loss %.4f val_loss %.4f active members %d",
            epoch + 1,
            epochs,
            history.train[-1],
            val,
            active,
        )
