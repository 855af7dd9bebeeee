"""A keyword set is data: the keywords, their spoken forms, the service each maps to, the language and voices.

A set is a TOML file (the French emergency set, `keywordsets/fr_emergency.toml`, is the default):

    name = "fr-emergency"
    language = "fr"                           # espeak-ng language of the synthesis voices
    espeak_dialects = ["fr", "fr-be", "fr-ch"]
    mbrola_voices = ["fr1", "ca1"]
    near_misses = ["Marseille", ...]          # words that sound close to a keyword (negatives)

    [services.15]                             # optional: a wake-word set has no services
    name = "SAMU"
    short = "SAMU"

    [keywords.malaise]                        # keywords in model-class order
    service = "15"                            # optional
    ascii = "malaise"                         # folder name of its recordings (default: the keyword)
    forms = ["malaise", "malaises"]           # written forms that count as the keyword (default: itself)

    [sentences]                               # optional caller sentences for synthesis ({K}/{k}: the keyword,
    frames = ["{K}, turn the lights on."]     #  capitalised or not; {N}/{n}: a near-miss word)
    clauses = ["I am at home."]
    near_miss_frames = ["I met {n} today."]

The model's classes are the keywords in file order, then "other" and "noise". A trained artifact stores its set
(`to_dict`), so a model carries the labels it was trained with.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SpotterError

OTHER = "other"
NOISE = "noise"
DEFAULT_PATH = Path(__file__).with_name("keywordsets") / "fr_emergency.toml"
_TOP_KEYS = {"name", "language", "espeak_dialects", "mbrola_voices", "near_misses", "services", "keywords",
             "sentences"}
_KEYWORD_KEYS = {"service", "ascii", "forms"}
_SERVICE_KEYS = {"name", "short"}
_SENTENCE_KEYS = {"frames", "clauses", "near_miss_frames"}
_ASCII_RE = re.compile(r"^[a-z0-9_-]+$")


@dataclass(frozen=True)
class KeywordSet:
    """Keywords (model-class order), their services and spoken forms, and what synthesis needs to say them."""
    name: str
    language: str
    keywords: tuple[str, ...]
    service: dict = field(default_factory=dict)        # keyword -> service id ('15'), keywords without one absent
    services: dict = field(default_factory=dict)       # service id -> full name ('SAMU')
    service_short: dict = field(default_factory=dict)  # service id -> short name
    ascii: dict = field(default_factory=dict)          # keyword -> ASCII folder name
    forms: dict = field(default_factory=dict)          # keyword -> tuple of written forms
    espeak_dialects: tuple[str, ...] = ()
    mbrola_voices: tuple[str, ...] = ()
    near_misses: tuple[str, ...] = ()
    frames: tuple[str, ...] = ()
    clauses: tuple[str, ...] = ()
    near_miss_frames: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's classes: the keywords, then other speech and noise."""
        return self.keywords + (OTHER, NOISE)

    @property
    def has_services(self) -> bool:
        return bool(self.services)

    def to_dict(self) -> dict:
        """Plain data (as the TOML file), stored inside a trained artifact."""
        d = {"name": self.name, "language": self.language, "espeak_dialects": list(self.espeak_dialects),
             "mbrola_voices": list(self.mbrola_voices), "near_misses": list(self.near_misses),
             "services": {s: {"name": n, "short": self.service_short.get(s, n)} for s, n in self.services.items()},
             "keywords": {k: {**({"service": self.service[k]} if k in self.service else {}),
                              "ascii": self.ascii[k], "forms": list(self.forms[k])} for k in self.keywords}}
        if self.frames or self.clauses or self.near_miss_frames:
            d["sentences"] = {"frames": list(self.frames), "clauses": list(self.clauses),
                              "near_miss_frames": list(self.near_miss_frames)}
        return d

    @classmethod
    def from_dict(cls, d, where: str = "keyword set") -> "KeywordSet":
        """Build and check; SpotterError('<where>: <problem>') for the first problem found."""
        def fail(problem: str):
            raise SpotterError(f"{where}: {problem}")

        def strings(v, name: str) -> tuple[str, ...]:
            if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
                fail(f"{name}: expected a list of non-empty strings")
            return tuple(v)

        if not isinstance(d, dict):
            fail("expected a table")
        unknown = sorted(set(d) - _TOP_KEYS)
        if unknown:
            fail(f"unknown key(s) {unknown} (known: {sorted(_TOP_KEYS)})")
        for key in ("name", "language"):
            if not isinstance(d.get(key), str) or not d[key].strip():
                fail(f"{key}: expected a non-empty string")
        services, short = {}, {}
        for sid, s in (d.get("services") or {}).items():
            if not isinstance(s, dict) or not isinstance(s.get("name"), str) or set(s) - _SERVICE_KEYS:
                fail(f"services.{sid}: expected a table with 'name' (and optional 'short')")
            services[str(sid)] = s["name"]
            short[str(sid)] = str(s.get("short", s["name"]))
        kws = d.get("keywords")
        if not isinstance(kws, dict) or not kws:
            fail("keywords: expected at least one [keywords.<word>] table")
        service, ascii_, forms = {}, {}, {}
        for k, spec in kws.items():
            if k in (OTHER, NOISE):
                fail(f"keywords.{k}: '{k}' is a reserved class name")
            spec = spec or {}
            if not isinstance(spec, dict):
                fail(f"keywords.{k}: expected a table")
            bad = sorted(set(spec) - _KEYWORD_KEYS)
            if bad:
                fail(f"keywords.{k}: unknown key(s) {bad} (known: {sorted(_KEYWORD_KEYS)})")
            if "service" in spec:
                if str(spec["service"]) not in services:
                    fail(f"keywords.{k}.service: {spec['service']!r} is not one of the [services] {sorted(services)}")
                service[k] = str(spec["service"])
            elif services:
                fail(f"keywords.{k}: no service, but the set defines services (every keyword needs one)")
            a = spec.get("ascii", k)
            if not isinstance(a, str) or not _ASCII_RE.match(a):
                fail(f"keywords.{k}.ascii: {a!r} is not a lower-case ASCII folder name")
            ascii_[k] = a
            forms[k] = strings(spec["forms"], f"keywords.{k}.forms") if "forms" in spec else (k,)
        if len(set(ascii_.values())) != len(ascii_):
            fail("keywords: two keywords share one ascii folder name")
        sent = d.get("sentences") or {}
        if not isinstance(sent, dict) or set(sent) - _SENTENCE_KEYS:
            fail(f"sentences: expected a table with {sorted(_SENTENCE_KEYS)}")
        opt = {key: strings(d[key], key) if key in d else () for key in ("espeak_dialects", "mbrola_voices",
                                                                           "near_misses")}
        sentences = {key: strings(sent[key], f"sentences.{key}") if key in sent else () for key in _SENTENCE_KEYS}
        for f in sentences["frames"]:
            if "{K}" not in f and "{k}" not in f:
                fail(f"sentences.frames: {f!r} has no {{K}} or {{k}} for the keyword")
        return cls(name=d["name"], language=d["language"], keywords=tuple(kws), service=service, services=services,
                   service_short=short, ascii=ascii_, forms=forms, **opt, **sentences)


def load(path) -> KeywordSet:
    """Read a keyword-set TOML file; SpotterError('<path>: <problem>') when it cannot be used."""
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpotterError(f"{p}: keyword set file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpotterError(f"{p}: cannot read keyword set ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpotterError(f"{p}: not valid TOML ({e})") from None
    return KeywordSet.from_dict(d, str(p))


def default() -> KeywordSet:
    """The French emergency keyword set shipped with the spotter."""
    return load(DEFAULT_PATH)
