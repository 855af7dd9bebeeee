"""Head training on precomputed embeddings (frozen backbone), and an optional end-to-end fine-tuning phase."""
from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch import nn

from spotter import config

log = logging.getLogger("training")


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Share of the loss each group of classes carries, whatever the window counts. False alarms on other speech
# are what a dispatcher suffers most, so the two negative classes carry half of it.
LOSS_SHARE = {"keywords": 0.5, config.OTHER: 0.35, config.NOISE: 0.15}


def class_weights(y: torch.Tensor, n: int | None = None) -> torch.Tensor:
    n = len(config.LABELS) if n is None else n
    counts = torch.bincount(y, minlength=n).float()
    kw_present = [i for i, l in enumerate(config.LABELS) if l in config.KEYWORDS and counts[i] > 0]
    share = torch.zeros(n)
    for i in kw_present:
        share[i] = LOSS_SHARE["keywords"] / len(kw_present)
    for lab in (config.OTHER, config.NOISE):
        share[config.LABELS.index(lab)] = LOSS_SHARE[lab]
    w = torch.where(counts > 0, share / counts.clamp(min=1), torch.zeros_like(counts))
    return w / (w * counts).sum() * counts.sum()          # mean weight per window = 1


def normalised_logits(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """LogitNorm (Wei et al. 2022): the logit vector scaled to norm 1 / tau, so that the loss cannot fall by making
    every logit larger: the head learns the direction, not an ever-growing confidence."""
    return logits / (tau * (logits.norm(dim=1, keepdim=True) + 1e-7))


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean Jensen-Shannon divergence (nats) between the softmax posteriors of two batches of logits."""
    la, lb = torch.log_softmax(logits_a, dim=1), torch.log_softmax(logits_b, dim=1)
    lm = torch.logsumexp(torch.stack([la, lb]), dim=0) - math.log(2.0)
    kl = lambda lp: (lp.exp() * (lp - lm)).sum(dim=1)
    return 0.5 * (kl(la) + kl(lb)).mean()


@torch.no_grad()
def pooled_windows(head: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Indices of the windows a max-pooling loss trains on: every window of group -1 (not a keyword occurrence),
    and of each occurrence (windows with the same group id) the one where the head gives its label the highest
    posterior."""
    head.eval()
    idx = torch.nonzero(groups >= 0)[:, 0]
    if not len(idx):
        return torch.arange(len(y))
    score = torch.cat([torch.log_softmax(head(x[idx[i:i + 4096]].float()), 1)
                       .gather(1, y[idx[i:i + 4096], None])[:, 0] for i in range(0, len(idx), 4096)])
    g = groups[idx]
    best = torch.full((int(g.max()) + 1,), -float("inf")).scatter_reduce(0, g, score, "amax")
    keep = idx[score >= best[g]]
    first = torch.zeros(int(g.max()) + 1, dtype=torch.bool)
    chosen = []
    for i in keep.tolist():                # one window per occurrence, even where two tie
        if not first[groups[i]]:
            first[groups[i]] = True
            chosen.append(i)
    return torch.sort(torch.cat([torch.nonzero(groups < 0)[:, 0], torch.tensor(chosen, dtype=torch.long)]))[0]


@torch.no_grad()
def evaluate_head(head: nn.Module, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                  logit_norm: float = 0.0) -> dict:
    head.eval()
    logits = torch.cat([head(x[i:i + 1024].float()) for i in range(0, len(x), 1024)])
    if logit_norm:
        logits = normalised_logits(logits, logit_norm)
    loss = nn.functional.cross_entropy(logits, y, weight=weights).item()
    pred = logits.argmax(1)
    present = torch.unique(y)
    recalls = torch.stack([(pred[y == c] == c).float().mean() for c in present])
    return {"loss": loss, "balanced_acc": recalls.mean().item(), "acc": (pred == y).float().mean().item()}


def train_head(head: nn.Module, train: tuple, val: tuple, epochs: int = 40, batch: int = 256, lr: float = 2e-3,
               weight_decay: float = 5e-2, patience: int = 6, seed: int = 0, label_smoothing: float = 0.05,
               progress: bool = True, noise: float = 0.05, dim_dropout: float = 0.0,
               mixup: float = 0.0, logit_norm: float = 0.0, pairs: torch.Tensor | None = None,
               consistency: float = 0.0, average_from: int = 0, groups: tuple | None = None,
               max_pool: int = 0, dense: torch.Tensor | None = None, dense_weight: float = 0.0
               ) -> tuple[nn.Module, list[dict]]:
    """Class-weighted cross-entropy with AdamW and cosine decay; early stopping on validation loss
    (voice-disjoint validation set). Returns the best head and the per-epoch history. noise: Gaussian noise
    added to the inputs, times their standard deviation. dim_dropout: share of the input's last dimension
    (the embedding's) zeroed in each training window, the same dimensions at every time step. mixup: > 0 mixes each
    batch with a shuffled copy of itself, weight drawn from Beta(mixup, mixup), and the loss likewise. logit_norm:
    > 0 trains (and early-stops) on normalised_logits(logits, logit_norm); the saved head is unchanged. pairs /
    consistency: pairs[i] is another rendering of window i (the same call and step through another channel); the
    loss adds consistency x the Jensen-Shannon divergence between the two windows' posteriors. average_from: > 0
    returns the mean of the weights after every step from that epoch (1-based) until training stops, BatchNorm
    statistics recomputed on the training windows (dense weight averaging, as SWAD); 0 returns the weights of
    the epoch with the best validation loss. groups / max_pool: groups = (train's, val's) occurrence id of every
    window (-1: not a keyword occurrence); from epoch max_pool on (1-based; 0: never), each occurrence trains and is
    validated on its best window only (pooled_windows, chosen again every epoch), the class weights re-counted on
    the windows kept. dense / dense_weight: dense[i] is a label (or -1, none) for each of window i's positions; the
    loss adds dense_weight x the cross-entropy of the head's per-position logits (`head.last_dense`, set by a
    training forward: calltrain.training_head(dense=True)) against them."""
    seed_everything(seed)
    xtr, ytr = train
    xva, yva = val
    w = class_weights(ytr)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss(weight=w, label_smoothing=label_smoothing)
    gen = torch.Generator().manual_seed(seed)

    def perturb(x):
        # embedding-level noise: a cheap regulariser against over-fitting synthetic voices
        if noise:
            x = x + noise * x.std() * torch.randn(x.shape, generator=gen)
        if dim_dropout:
            x = x * (torch.rand((len(x), 1, x.shape[-1]), generator=gen) >= dim_dropout)
        return x

    best, best_state, history, bad = float("inf"), None, [], 0
    mean = None                                  # with average_from: the running mean of the weights
    active, val_active = torch.arange(len(ytr)), None
    for epoch in range(epochs):
        pooling = bool(max_pool) and groups is not None and epoch + 1 >= max_pool
        if pooling:
            active = pooled_windows(head, xtr, ytr, torch.as_tensor(groups[0]))
            w = class_weights(ytr[active])
            loss_fn = nn.CrossEntropyLoss(weight=w, label_smoothing=label_smoothing)
        head.train()
        perm = active[torch.randperm(len(active), generator=gen)]
        total = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            xb = perturb(xtr[idx].float())
            lam = float(torch.distributions.Beta(mixup, mixup).sample()) if mixup else 1.0
            other = torch.randperm(len(xb), generator=gen) if mixup else None
            out = head(lam * xb + (1 - lam) * xb[other] if mixup else xb)
            if logit_norm:
                out = normalised_logits(out, logit_norm)
            loss = loss_fn(out, ytr[idx])
            if dense_weight and dense is not None and bool((dense[idx] >= 0).any()):    # (none: no term, not NaN)
                dl = head.last_dense                                   # (B, classes, positions)
                loss = loss + dense_weight * nn.functional.cross_entropy(   # class weights: for the head's classes
                    dl, dense[idx][:, -dl.shape[2]:], weight=w if dl.shape[1] == len(w) else None, ignore_index=-1,
                    label_smoothing=label_smoothing)
            if mixup:
                loss = lam * loss + (1 - lam) * loss_fn(out, ytr[idx][other])
            if consistency and pairs is not None:
                loss = loss + consistency * js_divergence(out, head(perturb(pairs[idx].float())))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            if average_from and epoch + 1 >= average_from:
                if mean is None:
                    mean = torch.optim.swa_utils.AveragedModel(head)
                mean.update_parameters(head)
        sched.step()
        if pooling:
            val_active = pooled_windows(head, xva, yva, torch.as_tensor(groups[1]))
            if best < float("inf") and epoch + 1 == max_pool:
                best = float("inf")            # the pooled loss is another measure than the one before it
        m = evaluate_head(head, *((xva, yva) if val_active is None else (xva[val_active], yva[val_active])), w,
                          logit_norm)
        m.update(epoch=epoch + 1, train_loss=total / len(perm))
        history.append(m)
        if progress:
            log.info("epoch %2d  train %.3f  val %.3f  val bal.acc %.3f", epoch + 1, m["train_loss"], m["loss"],
                     m["balanced_acc"])
        if m["loss"] < best - 1e-4:
            best, best_state, bad = m["loss"], copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    if mean is not None:
        head.load_state_dict(mean.module.state_dict())
        torch.optim.swa_utils.update_bn((xtr[i:i + batch].float() for i in range(0, len(xtr), batch)), head)
        steps = int(mean.n_averaged)
        history.append({**evaluate_head(head, xva, yva, w, logit_norm), "averaged_steps": steps})
        if progress:
            log.info("weights averaged over %d steps: val %.3f  val bal.acc %.3f", steps, history[-1]["loss"],
                     history[-1]["balanced_acc"])
    elif best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return head, history


def finetune(model, maker, steps: int, blocks: int, batch: int = 32, lr: float = 1e-4, seed: int = 0,
             spec_augment=None) -> list[float]:
    """End-to-end fine-tuning: unfreeze the last `blocks` backbone blocks and train them with the head on fresh
    augmented windows (mel computed on the fly). Slow on CPU; off in the default configuration."""
    from spotter.features import log_mel
    seed_everything(seed)
    model.backbone.unfreeze_last(blocks)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-3)
    items_all = maker.plan(n_per_keyword=max(1, steps * batch // 24), n_negative=steps * batch // 2)
    rng = np.random.default_rng(seed)
    losses = []
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        pick = rng.choice(len(items_all), size=batch, replace=False)
        wins, labs = zip(*(maker.make(*items_all[j]) for j in pick))
        mel = log_mel(torch.from_numpy(np.stack(wins)))
        if spec_augment is not None:
            mel = spec_augment(mel, gen)
        y = torch.tensor([config.LABELS.index(l) for l in labs])
        loss = nn.functional.cross_entropy(model.logits_from_mel(mel), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.meta["backbone_finetuned"] = {"blocks": blocks, "steps": steps}
    return losses
