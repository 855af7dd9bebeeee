"""Train the verifier's keyword probe (spotter/probe.py) on the recipe's synthetic sentences.

    python -m training.probe --config training/configs/calls.toml --out models/default.probe.npz

1. Crops (build_crops): one per cached sentence of the recipe's train- and val-split voices (every engine): at the
   keyword's end (its class), at a near miss's end and at a random point of keyword-free speech (none), and for
   40 % of keyword sentences one more away from the keyword (none); a third each clean, through the wideband and
   through the telephone channel (the recipe's training noise). Each is encoded once by Whisper base, as the
   verifier encodes its first crop, and stored (--crops, default <work_dir>/probe_crops.npz; ~15,000 crops, about
   8 minutes on one core).
2. The probe (train_net): a small network over the crop's encoder frames, 12 epochs of AdamW; the crops of
   `without_engine` (a leave-one-engine-out fold) are left out. About 4 minutes on two cores.
3. Its weights and the keyword set's keyword list go to one .npz file (spotter.probe.KeywordProbe).

Test-split voices are never in the crops, so the held-out voices' calls (training.verify_eval --cascade) and each
fold's engine (--fold E trains its probe without E) measure voices the probe never heard.
"""
from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np

from spotter import config
from spotter.audio import load_audio
from spotter.probe import KeywordProbe, crop_frames, LEAD_S

SR = config.SAMPLE_RATE
SETS = ("train", "val", "train_gen", "val_gen", "eval_kw", "eval_kw_gen", "loeo_neg", "eval_kw_kokoro")
SPLITS = ("train", "val")               # voices whose sentences the probe trains on (never "test")
CHANNELS = ("clean", "wide", "tel")
AWAY_SHARE = 0.4                        # keyword sentences that also give a crop away from the keyword
WIDTH = 128
EPOCHS = 12
BATCH = 128
LR = 2e-3


def other() -> int:
    """Class index of "no keyword ends here" (after the active keyword set's keywords)."""
    return len(config.KEYWORDS)


def near_miss_owner() -> dict[str, str]:
    """Near-miss word -> the keyword it imitates (kept with the crops as the keyword a near-miss crop claims). The
    French set: texts.NEAR_MISSES, grouped under one comment per keyword; the English wake-word set lists alexa's 18
    near misses first, then computer's; any other set: the keyword whose spelling is closest (difflib)."""
    from difflib import SequenceMatcher
    from training.verify_eval import near_miss_owner as french
    kws = list(config.KEYWORDS)
    owner = french()
    if set(owner.values()) <= set(kws):
        return owner
    words = config.KEYWORD_SET.near_misses
    if kws == ["alexa", "computer"]:
        return {w: ("alexa" if i < 18 else "computer") for i, w in enumerate(words)}
    return {w: max(kws, key=lambda k: SequenceMatcher(None, w.lower(), k.lower()).ratio()) for w in words}


def crop_items(sents: list[dict], seed: int, owner: dict[str, str]) -> list[dict]:
    """(sentence, crop end, class, claimed keyword, kind) for every sentence (see the module doc)."""
    rng = random.Random(seed)
    kws, none = list(config.KEYWORDS), other()
    words = sorted(owner, key=len, reverse=True)
    items = []
    for s in sents:
        dur = s["seconds"]
        if s["keyword"]:
            if not s["spans"]:
                continue
            a, b = s["spans"][0]
            items.append({"s": s, "end": b + rng.uniform(-0.08, 0.12), "y": kws.index(s["keyword"]),
                          "claim": s["keyword"], "kind": "positive"})
            if rng.random() < AWAY_SHARE:
                away = [t for t in np.arange(0.5, dur + 0.01, 0.1) if t < a + 0.15 or t > b + 0.6]
                if away:
                    items.append({"s": s, "end": float(rng.choice(away)), "y": none, "claim": rng.choice(kws),
                                  "kind": "away"})
            continue
        low = s["text"].lower()
        hit = next((w for w in words if re.search(r"\b" + re.escape(w.lower()) + r"\b", low)), None)
        if hit:
            frac = (low.find(hit.lower()) + len(hit)) / len(s["text"])
            items.append({"s": s, "end": frac * dur + rng.uniform(-0.1, 0.15), "y": none, "claim": owner[hit],
                          "kind": "near-miss"})
        else:
            items.append({"s": s, "end": rng.uniform(min(0.6, dur), dur), "y": none, "claim": rng.choice(kws),
                          "kind": "speech"})
    return items


def encoded(ver, audio: np.ndarray, end_s: float) -> np.ndarray:
    """The probe's input for a crop ending tail_s after end_s: (43, 512) float16."""
    enc, _ = ver.encode(np.asarray(audio, np.float32), end_s, LEAD_S)
    return crop_frames(enc).astype(np.float16)


def speed_factor(rng: np.random.Generator, speed: float) -> float:
    """A speed perturbation factor in [1 - speed, 1 + speed] at least speed / 3 away from 1 (1.0 for speed 0)."""
    if speed <= 0:
        return 1.0
    f = 1 + rng.choice([-1, 1]) * rng.uniform(speed / 3, speed)
    return round(f * 160) / 160                     # a whole number of 100 Hz steps at 16 kHz (exact resampling)


def perturb_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """The audio played `factor` times faster (tempo, pitch and formants together, as a shorter or longer vocal
    tract): read at factor x 16 kHz and resampled to 16 kHz."""
    if factor == 1.0:
        return audio
    from math import gcd
    from scipy.signal import resample_poly
    up, down = SR, int(round(SR * factor))
    g = gcd(up, down)
    return resample_poly(audio, up // g, down // g).astype(np.float32)


def recording_items(dirs) -> list[dict]:
    """Real recordings DIR/<keyword>/*.wav|flac (the console's recording layout) as positive crops, one per channel
    of CHANNELS: the clip between a LEAD_S lead and a 0.6 s tail of silence, the crop ending at its speech's end."""
    from evaluation.realeval import keyword_recordings
    kws = list(config.KEYWORDS)
    items = []
    for d in dirs:
        for kw, path in keyword_recordings(Path(d)):
            s = {"path": str(path), "engine": "real", "voice": str(path), "split": "train", "lead": LEAD_S}
            items += [{"s": s, "end": None, "y": kws.index(kw), "claim": kw, "kind": "recording", "channel": ch}
                      for ch in CHANNELS]
    return items


def item_audio(it: dict) -> tuple[np.ndarray, float]:
    """An item's audio and its crop end (s): a cached sentence as synthesised; a recording (its "lead") between
    silence, its crop end at the end of its speech."""
    a = load_audio(it["s"]["path"])
    if "lead" not in it["s"]:
        return a, it["end"]
    from evaluation.realeval import speech_span
    _, end = speech_span(a)
    lead = it["s"]["lead"]
    return np.concatenate([np.zeros(int(lead * SR), np.float32), a, np.zeros(int(0.6 * SR), np.float32)]), lead + end


def sentences_for(recipe) -> list[dict]:
    """The recipe's cached sentences of train- and val-split voices (recipe: a CallsRecipe or a name under
    training/configs/)."""
    from training.verify_eval import cached_sentences, calls_recipe
    recipe = calls_recipe(recipe) if isinstance(recipe, str) else recipe
    return [s for s in cached_sentences(recipe.calls.cache_dir, SETS, recipe) if s["split"] in SPLITS]


def fingerprint(items: list[dict], seed: int, speed: float, channels) -> str:
    """What a crops file was built from: its items' files and crop ends, the seed, speed and channels. A cached
    sentence's file name is its content's hash; a recording counts by its size and modification time too, so a
    clip re-recorded under the same name rebuilds the crops."""
    import hashlib
    h = hashlib.sha256(repr((seed, speed, tuple(channels))).encode())
    for it in items:
        p = it["s"]["path"]
        st = Path(p).stat() if "lead" in it["s"] else None
        h.update(f"{p}|{it['end']}|{it['y']}{f'|{st.st_size}|{st.st_mtime_ns}' if st else ''}".encode())
    return h.hexdigest()[:16]


def plan_items(recipe, seed: int, limit: int | None = None, recordings=()) -> list[dict]:
    """The crops to encode: the recipe's sentences' (crop_items; `limit`: a random subset) and its recordings'."""
    items = crop_items(sentences_for(recipe), seed, near_miss_owner())
    if limit:
        items = random.Random(seed).sample(items, min(limit, len(items)))
    return items + recording_items(recordings)


def build_crops(recipe, out: Path, seed: int = 0, limit: int | None = None, speed: float = 0.0,
                channels: tuple[str, ...] = CHANNELS, recordings=(), items: list[dict] | None = None) -> Path:
    """Encode the recipe's train/val sentences (recipe: a CallsRecipe or a name under training/configs/) as probe
    crops (see the module doc) into `out` (.npz); speed > 0: each sentence played faster or slower first
    (perturb_speed, a factor drawn by speed_factor); `channels`: the channels the crops take in turn (of CHANNELS);
    `recordings`: folders of real recordings, their crops added (recording_items); `items`: plan_items's, if
    already made."""
    from spotter.verify import Verifier, VerifierConfig
    from training.calls import Call, Channel
    from training.recipe import real_audio_files
    from training.verify_eval import calls_recipe
    recipe = calls_recipe(recipe) if isinstance(recipe, str) else recipe
    items = items if items is not None else plan_items(recipe, seed, limit, recordings)
    print(f"{len(items)} crops of {'/'.join(SPLITS)} voices' sentences"
          f"{' and real recordings' if recordings else ''}", flush=True)
    ch = Channel(real_audio_files(recipe.data)["noise_train"], seed)
    rng = np.random.default_rng(seed)
    ver = Verifier(VerifierConfig(language=config.KEYWORD_SET.language[:2] if config.KEYWORD_SET else "fr"))
    feats = None
    kinds = []
    t0 = time.time()
    for i, it in enumerate(items):
        a, end = item_audio(it)
        sf = speed_factor(rng, speed)
        a = perturb_speed(a, sf)
        kind = it.get("channel") or channels[i % len(channels)]
        if kind != "clean":
            a = ch(Call(a, [], [(0.0, a.size / SR)], it["s"]["voice"], it["s"]["engine"], "clean"), kind, rng).audio
        f = encoded(ver, a, end / sf)
        if feats is None:
            feats = np.zeros((len(items), *f.shape), np.float16)
        feats[i] = f
        kinds.append(kind)
        if i % 2000 == 1999:
            print(f"  {i + 1} crops, {time.time() - t0:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, feats=feats, y=np.array([it["y"] for it in items]), claim=np.array([it["claim"] for it in items]),
             kind=np.array([it["kind"] for it in items]), engine=np.array([it["s"]["engine"] for it in items]),
             voice=np.array([it["s"]["voice"] for it in items]), split=np.array([it["s"]["split"] for it in items]),
             channel=np.array(kinds), keywords=np.array(list(config.KEYWORDS)),
             fingerprint=np.array(fingerprint(items, seed, speed, channels)))
    print(f"wrote {out} ({len(items)} crops, {time.time() - t0:.0f} s)", flush=True)
    return out


def stored_fingerprint(path: Path) -> str | None:
    """The fingerprint a crops file was built with (None: missing, unreadable or built before fingerprints)."""
    try:
        with np.load(path) as z:
            return str(z["fingerprint"]) if "fingerprint" in z.files else None
    except (OSError, ValueError):
        return None


def train_beside(recipe, model_path: Path) -> dict:
    """`spotter train`'s last step: the keyword probe of the model at `model_path`, written beside it
    (spotter.probe.probe_path), trained on the recipe's crops and its real recordings' crops. The crops are kept in
    <work_dir>/probe_crops.npz and rebuilt when what they were built from changes (fingerprint). Returns what the
    model card says of it: the file, crops and seconds, or why no probe was trained."""
    from spotter import verify
    from spotter.probe import probe_path
    if not recipe.train.probe:
        return {"skipped": "[train] probe = false"}
    if not verify.status()[0]:
        return {"skipped": "the verify extra is not installed (pip install '.[verify]')"}
    seed, recordings = recipe.calls.seed, list(recipe.data.recordings)
    crops = Path(recipe.work_dir) / "probe_crops.npz"
    items = plan_items(recipe, seed, recordings=recordings)
    t0 = time.time()
    built = stored_fingerprint(crops) != fingerprint(items, seed, 0.0, CHANNELS)
    if built:
        build_crops(recipe, crops, seed, recordings=recordings, items=items)
    t1 = time.time()
    out = probe_path(model_path)
    train_probe(crops, out, seed=recipe.seed)
    return {"file": out.name, "crops": len(items), "recording_crops": sum(it["kind"] == "recording" for it in items),
            "crops_s": round(t1 - t0, 1) if built else None, "train_s": round(time.time() - t1, 1),
            "seed": recipe.seed}


def make_net(width: int = WIDTH):
    """The probe as a torch module (spotter.probe.KeywordProbe runs the same network in numpy)."""
    import torch.nn as nn

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(512)
            self.proj = nn.Sequential(nn.Linear(512, width), nn.GELU(approximate="tanh"), nn.Dropout(0.2))
            self.conv = nn.Sequential(nn.Conv1d(width, width, 5, padding=2), nn.GELU(approximate="tanh"))
            self.att = nn.Linear(width, 1)
            self.out = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, other() + 1))

        def forward(self, x):
            h = self.proj(self.norm(x))
            h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
            w = self.att(h).softmax(1)
            return self.out((w * h).sum(1))

    return Probe()


def train_net(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = EPOCHS):
    """The probe trained on crops x (N, T, 512) with classes y: AdamW, one-cycle learning rate, label smoothing,
    a little Gaussian noise on the frames."""
    import torch
    torch.manual_seed(seed)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.05)
    X = torch.from_numpy(x)
    Y = torch.from_numpy(y.astype(np.int64))
    n = len(Y)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=epochs * ((n + BATCH - 1) // BATCH))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            b = perm[i:i + BATCH]
            xb = X[b].float()
            xb = xb + 0.05 * torch.randn_like(xb) * xb.std()
            loss = torch.nn.functional.cross_entropy(net(xb), Y[b], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def to_probe(net) -> KeywordProbe:
    """The trained torch network as a KeywordProbe (numpy weights, the active keyword list)."""
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    w = {"norm_w": sd["norm.weight"], "norm_b": sd["norm.bias"], "proj_w": sd["proj.0.weight"],
         "proj_b": sd["proj.0.bias"], "conv_w": sd["conv.0.weight"], "conv_b": sd["conv.0.bias"],
         "att_w": sd["att.weight"], "att_b": sd["att.bias"], "out_w": sd["out.1.weight"], "out_b": sd["out.1.bias"]}
    return KeywordProbe(w, list(config.KEYWORDS))


def load_crops(crops) -> dict[str, np.ndarray]:
    """One crops file, or several (a list of paths) concatenated: feats, y and engine."""
    paths = [Path(c) for c in (crops if isinstance(crops, (list, tuple)) else [crops])]
    parts = []
    for c in paths:
        z = np.load(c)
        if [str(k) for k in z["keywords"]] != list(config.KEYWORDS):
            raise SystemExit(f"error: {c}: crops of another keyword set ({', '.join(map(str, z['keywords']))})")
        parts.append({k: z[k] for k in ("feats", "y", "engine")})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def train_probe(crops, out: Path, without_engine: str | None = None, seed: int = 0,
                epochs: int = EPOCHS) -> KeywordProbe:
    """Train on the stored crops (one file or a list, load_crops; those of `without_engine` left out) and save the
    probe to `out`."""
    z = load_crops(crops)
    keep = np.ones(len(z["y"]), bool) if without_engine is None else z["engine"] != without_engine
    t0 = time.time()
    probe = to_probe(train_net(z["feats"][keep], z["y"][keep], seed, epochs))
    out.parent.mkdir(parents=True, exist_ok=True)
    probe.save(out)
    print(f"probe{' without ' + without_engine if without_engine else ''}: {int(keep.sum())} crops, "
          f"{time.time() - t0:.0f} s -> {out}", flush=True)
    return probe


def main(argv=None) -> int:
    from training.recipe import use_recipe_keywords
    from training.recipes import load_recipe
    ap = argparse.ArgumentParser(description="Train the verifier's keyword probe (spotter/probe.py).")
    ap.add_argument("--config", type=Path, default=Path("training/configs/calls.toml"))
    ap.add_argument("--out", type=Path, required=True, help="the probe file, e.g. models/default.probe.npz")
    ap.add_argument("--crops", type=Path, help="stored crops (built when missing; default <work_dir>/probe_crops.npz)")
    ap.add_argument("--without-engine", help="leave this engine's crops out (a leave-one-engine-out fold)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    a = ap.parse_args(argv)
    recipe = load_recipe(a.config)
    use_recipe_keywords(recipe)
    crops = a.crops or Path(recipe.work_dir) / "probe_crops.npz"
    if not crops.is_file():
        build_crops(recipe, crops, a.seed)
    train_probe(crops, a.out, a.without_engine, a.seed, a.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
