"""The runtime model: the exported keyword model run by onnxruntime with numpy, no torch.

`spotter export` (training/export.py) writes one ONNX graph that serves live streaming, batch replay and
batched multi-stream steps alike:

    inputs   mel       (B, T, 32)   log-mel frames, T = 76 + 8 (N - 1): N embedding windows, step 8
             emb_prev  (B, 15, 96)  the 15 embeddings before the first new one
    outputs  posteriors (B, N, 14)  head posteriors of the N windows of 16 embeddings ending at each new one
             emb_last  (B, 15, 96)  the last 15 embeddings (the next call's emb_prev)

The speech_embedding backbone runs fully convolutionally inside the graph. The live step uses a second graph,
stored in the metadata (key "spotter.step"): 8 new mel frames + the backbone's conv caches + the last 15 embeddings
-> posteriors, new caches, embeddings (only the new frames are convolved; batched over streams by MultiSpotter). Its weights are not in the file:
the graph takes them as inputs `bb.<i>.w` / `bb.<i>.b`, and load_onnx_model() reads them from the installed
openwakeword 0.5.1's embedding_model.onnx (spotter/protobuf.py, without the `onnx` package) and splices them
into the model as constant initializers before onnxruntime sees it. A model whose backbone was fine-tuned
carries its own weights instead (metadata backbone = "embedded").

The artifact's configuration (labels, front end, services, thresholds, meta) travels in the ONNX metadata
under the key "spotter" (JSON) and is validated like the torch artifact's.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from . import config, protobuf
from .artifact import _meta_problem, _same, _short, activate_keyword_set, file_sha256, keeping_keyword_set_on_error
from .errors import SpotterError
from .frontend import MEL_FLOOR, MelStream

ONNX_FORMAT = "spotter-kws-onnx/1"
METADATA_KEY = "spotter"
STEP_GRAPH_KEY = "spotter.step"      # the incremental live step (conv caches as state), a serialized ONNX model
OPENWAKEWORD_BACKBONE = "openwakeword-0.5.1:embedding_model.onnx"
EMBEDDED_BACKBONE = "embedded"
N_CONVS = 20
PREV = config.HEAD_FRAMES - 1                      # 15 embeddings of state


def backbone_input_names() -> list[str]:
    """Graph input names of the backbone weights, in conv order (the last conv has no bias)."""
    names = []
    for i in range(N_CONVS):
        names.append(f"bb.{i}.w")
        if i < N_CONVS - 1:
            names.append(f"bb.{i}.b")
    return names


def read_onnx_convs(path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias) of the Conv nodes of an ONNX file (embedding_model.onnx), in graph order, without `onnx`."""
    try:
        data = Path(path).read_bytes()
        nodes, tensors = protobuf.read_graph(data)
        convs = [inputs for op, inputs in nodes if op == "Conv"]
        out = [(tensors[i[1]], tensors[i[2]] if len(i) > 2 and i[2] else None) for i in convs]
    except (OSError, protobuf.ProtobufError, KeyError, ValueError) as exc:
        raise SpotterError(f"{path}: cannot read ONNX model ({type(exc).__name__}: {exc})") from None
    if len(out) != N_CONVS:
        raise SpotterError(f"{path}: expected {N_CONVS} Conv nodes, found {len(out)}")
    return out


def backbone_tensors(convs) -> dict[str, np.ndarray]:
    out = {}
    for i, (w, b) in enumerate(convs):
        out[f"bb.{i}.w"] = np.asarray(w, np.float32)
        if i < N_CONVS - 1:
            if b is None:
                raise SpotterError(f"backbone conv {i}: bias missing")
            out[f"bb.{i}.b"] = np.asarray(b, np.float32)
    return out


OPENWAKEWORD_VERSION = "0.5.1"
EMBEDDING_MODEL = "embedding_model.onnx"


def openwakeword_model_path(name: str) -> Path:
    """Path of a model file shipped with the installed openwakeword 0.5.1 (e.g. 'embedding_model.onnx'),
    found without importing openwakeword (whose import loads its own runtime) nor importlib.metadata (slow to
    import: the runtime's cold start): the package's folder and its dist-info folder beside it."""
    import importlib.util
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise SpotterError(f"openwakeword {OPENWAKEWORD_VERSION} is not installed (needed for {name})")
    pkg = Path(list(spec.submodule_search_locations)[0])
    infos = sorted(pkg.parent.glob("openwakeword-*.dist-info"))
    versions = [d.name[len("openwakeword-"):-len(".dist-info")] for d in infos]
    if OPENWAKEWORD_VERSION not in versions:
        found = ", ".join(versions) or "an unknown version"
        raise SpotterError(f"openwakeword {found} is installed, {OPENWAKEWORD_VERSION} is required (for {name})")
    path = pkg / "resources" / "models" / name
    if not path.is_file():
        raise SpotterError(f"{path}: model file missing from the openwakeword package")
    return path


def openwakeword_backbone() -> dict[str, np.ndarray]:
    return backbone_tensors(read_onnx_convs(openwakeword_model_path(EMBEDDING_MODEL)))


def threads_default() -> int:
    raw = os.environ.get("SPOTTER_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


class OnnxKeywordModel:
    """An exported keyword model, ready to run (same attributes as the torch KeywordModel that the runtime uses:
    name, meta, detector, labels, artifact_sha256)."""

    kind = "onnx"

    def __init__(self, path: Path, make_session, info: dict, sha256: str, step_session=None):
        self.path = Path(path)
        self._make_session = make_session          # the whole-window graph, built on first use (batch replay,
        self._session = None                       # explanations): a live stream never needs it
        self.step_session = step_session          # None: every live step runs the whole 76-frame window
        self.info = info
        self.labels = config.LABELS
        self.meta = dict(info.get("meta") or {})
        self.detector = config.DetectorConfig.from_dict(info["detector"])
        self.name = self.meta.get("name", self.path.stem)
        self.artifact_sha256 = sha256
        self.source_sha256 = info.get("source_sha256")
        self._silence = None

    def eval(self) -> "OnnxKeywordModel":
        return self

    @property
    def session(self):
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def run(self, mel: np.ndarray, emb_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mel (B, 76 + 8 (N-1), 32), emb_prev (B, 15, 96) -> posteriors (B, N, 14), emb_last (B, 15, 96)."""
        post, emb = self.session.run(None, {"mel": np.ascontiguousarray(mel, np.float32),
                                            "emb_prev": np.ascontiguousarray(emb_prev, np.float32)})
        return post, emb

    def run_step(self, mel_new: np.ndarray, emb_prev: np.ndarray, caches: list[np.ndarray]):
        """The incremental step: mel_new (B, 8, 32), emb_prev (B, 15, 96), the conv caches -> (posteriors (B, 14),
        emb_last (B, 15, 96), caches')."""
        feed = {"mel_new": np.ascontiguousarray(mel_new, np.float32),
                "emb_prev": np.ascontiguousarray(emb_prev, np.float32)}
        feed.update({f"cache.{j}": c for j, c in enumerate(caches)})
        out = self.step_session.run(None, feed)
        return out[0], out[1], out[2:]

    def silence_caches(self) -> list[np.ndarray] | None:
        """The conv caches after a stream of digital silence (None without the incremental step graph)."""
        if self.step_session is None:
            return None
        self.silence_state()
        return [c.copy() for c in self._silence_caches]

    def silence_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(mel window (76, 32), emb_prev (15, 96)) as after config.PRIME_STEPS steps of digital silence: the state
        every stream starts from (the torch KeywordSpotter's priming). With the step graph it is run on silent frames
        until the caches and the new embedding stop changing: every later step then gives that embedding again, so
        the 15 embeddings of any longer silence are 15 copies of it. Loading a model never builds the whole-window
        graph."""
        if self._silence is None:
            ms = MelStream()
            frames = np.concatenate([ms.push(np.zeros(config.STEP_SAMPLES, np.float32))
                                     for _ in range(config.PRIME_STEPS)])
            mel = frames[-config.EMBED_WINDOW:].copy()
            if self.step_session is None:
                _, emb = self.run(mel[None], np.zeros((1, PREV, config.EMBED_DIM), np.float32))
                emb = np.repeat(emb[0, -1][None], PREV, axis=0)
            else:
                emb = np.zeros((1, PREV, config.EMBED_DIM), np.float32)
                caches = [np.zeros((1, *shape), np.float32) for shape in self.info["step_caches"]]
                silent = mel[-config.EMBED_STEP:][None]
                for _ in range(4 * config.PRIME_STEPS):       # a bound; the state settles within PRIME_STEPS
                    _, new_emb, new_caches = self.run_step(silent, emb, caches)
                    settled = (np.array_equal(new_emb[0, -1], emb[0, -1])
                               and all(map(np.array_equal, new_caches, caches)))
                    emb, caches = new_emb, new_caches
                    if settled:
                        break
                else:
                    raise SpotterError(f"{self.path}: the step graph's state does not settle on silence")
                self._silence_caches = [c[0] for c in caches]
                emb = np.repeat(emb[0, -1][None], PREV, axis=0)
            self._silence = (mel, emb)
        mel, emb = self._silence
        return mel.copy(), emb.copy()

    def new_stream(self) -> "OnnxStream":
        return OnnxStream(self)

    def posteriors_from_mel(self, mel_windows: np.ndarray) -> np.ndarray:
        """(B, 196, 32) log-mel windows behind B head decisions -> their posteriors (B, 14) (occlusion maps)."""
        mel = np.asarray(mel_windows, np.float32)
        post, _ = self.run(mel, np.zeros((mel.shape[0], PREV, config.EMBED_DIM), np.float32))
        return post[:, -1]


class OnnxStream:
    """One stream's state for KeywordSpotter: numpy log-mel, the 76-frame mel window, the last 15 embeddings."""

    def __init__(self, model: OnnxKeywordModel):
        self.model = model
        self.mel_stream = MelStream()
        self.reset()

    def reset(self) -> None:
        self.mel_stream.reset()
        self.window, self.emb = self.model.silence_state()
        self.caches = self.model.silence_caches()     # None: no incremental graph, or stale after steps()

    def step(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One 80 ms step -> (its 8 mel frames, posteriors (14,)): the incremental graph when its caches are valid,
        else the whole-window graph (same posteriors)."""
        new = self.mel_stream.push(chunk)
        self.window = np.concatenate([self.window[len(new):], new])
        if self.caches is not None:
            post, emb, caches = self.model.run_step(new[None], self.emb[None], [c[None] for c in self.caches])
            self.caches = [c[0] for c in caches]
            self.emb = emb[0]
            return new, post[0]
        post, emb = self.model.run(self.window[None], self.emb[None])
        self.emb = emb[0]
        return new, post[0, -1]

    def steps(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k whole steps at once (the offline path: one graph run over the k windows) -> (8k mel frames,
        posteriors (k, 14)); the state afterwards is the same as after k step() calls."""
        new = self.mel_stream.push_many(samples)
        k = len(new) // config.EMBED_STEP
        if k == 0:
            return new, np.zeros((0, len(config.LABELS)), np.float32)
        mel = np.concatenate([self.window[config.EMBED_STEP:], new])        # 68 + 8k = 76 + 8 (k - 1) frames
        post, emb = self.model.run(mel[None], self.emb[None])
        self.window = mel[-config.EMBED_WINDOW:].copy()
        self.emb = emb[0]
        self.caches = None                 # the conv caches were not kept: later steps use the whole window
        return new, post[0]


def _problem(info) -> str | None:
    if not isinstance(info, dict):
        return f"{METADATA_KEY} metadata: expected a table, got {_short(info)}"
    if info.get("format") != ONNX_FORMAT:
        return f"not a spotter ONNX model (expected format {ONNX_FORMAT})"
    labels = info.get("labels")
    if not (isinstance(labels, list) and _same(tuple(labels), config.LABELS)):
        return f"label list {_short(labels)} does not match this spotter's {len(config.LABELS)} labels"
    if not _same(info.get("frontend"), config.FrontEnd().to_dict()):
        return "front-end parameters do not match this spotter's log-mel front end"
    if not _same(info.get("services"), config.KEYWORD_SERVICE):
        return "keyword-to-service mapping does not match this spotter's configuration"
    if "detector" not in info:
        return "detector: missing"
    try:
        config.DetectorConfig.from_dict(info["detector"])
    except (ValueError, TypeError) as exc:
        return f"detector{': ' if str(exc).startswith('expected') else '.'}{exc}"
    if info.get("backbone") not in (OPENWAKEWORD_BACKBONE, EMBEDDED_BACKBONE):
        return f"backbone: unknown source {_short(info.get('backbone'))}"
    return _meta_problem(info.get("meta"))


def session_options(threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or threads_default()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


@keeping_keyword_set_on_error
def load_onnx_model(path, threads: int | None = None) -> OnnxKeywordModel:
    """Load and validate an exported model; any problem is a one-line SpotterError naming the file and field."""
    import onnxruntime as ort
    path = Path(path)
    if not path.exists():
        raise SpotterError(f"{path}: model file not found")
    if not path.is_file():
        raise SpotterError(f"{path}: is a directory, not a model file")
    data = path.read_bytes()
    try:
        raw = protobuf.read_metadata(data).get(METADATA_KEY)
        protobuf.graph_bytes(data)
    except protobuf.ProtobufError as exc:
        raise SpotterError(f"{path}: not a readable ONNX model ({exc})") from None
    if raw is None:
        raise SpotterError(f"{path}: not a spotter ONNX model (no '{METADATA_KEY}' metadata; export it with "
                           f"`spotter export`)")
    try:
        info = json.loads(raw)
    except ValueError:
        raise SpotterError(f"{path}: {METADATA_KEY} metadata is not valid JSON") from None
    if isinstance(info, dict):
        activate_keyword_set(info.get("keyword_set"), path)
    problem = _problem(info)
    if problem:
        raise SpotterError(f"{path}: {problem}")
    step = protobuf.read_metadata(data).get(STEP_GRAPH_KEY)
    try:
        step = base64.b64decode(step, validate=True) if step else None
    except ValueError:
        raise SpotterError(f"{path}: {STEP_GRAPH_KEY} metadata is not base64") from None
    weights = openwakeword_backbone() if info["backbone"] == OPENWAKEWORD_BACKBONE else None

    def make_session(graph: bytes, inputs: set[str] | None = None):
        """A session of one graph, openwakeword's backbone weights spliced in as constants."""
        if weights is not None:
            graph = protobuf.with_initializers(graph, weights)
        try:
            session = ort.InferenceSession(graph, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            raise SpotterError(f"{path}: onnxruntime cannot load the model ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]})") from None
        names = {i.name for i in session.get_inputs()}
        if inputs is not None and names != inputs:
            raise SpotterError(f"{path}: graph inputs {sorted(names)} are not ({', '.join(sorted(inputs))})")
        return session

    step_session = make_session(step) if step is not None else None
    model = OnnxKeywordModel(path, lambda: make_session(data, {"emb_prev", "mel"}), info, file_sha256(path),
                             step_session)
    if step_session is None:
        model.session                             # noqa: B018 - built now: the live path runs it at once
    return model


def torch_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def load_any(path, threads: int | None = None):
    """An .onnx export (onnxruntime, no torch) or a torch artifact (.pt; needs the `train` extra)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return load_onnx_model(path, threads)
    if not torch_available():
        raise SpotterError(f"{path}: a torch model artifact needs torch (pip install '.[train]'); the runtime runs "
                           f"its ONNX export: spotter export --model {path} --out {path.with_suffix('.onnx')}")
    import torch
    from .model import load_model
    torch.set_num_threads(threads or threads_default())
    return load_model(path)
