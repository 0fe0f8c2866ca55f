"""The adapters a server was started with (``python app.py --adapter DIR[:WEIGHT]``) and the mix of
them a request asks for. The page's weight sliders and the API send a mix as text,
``"name:weight, name:weight"``: adapters it does not name are off (weight 0), ``"none"`` (or an
empty text) is the plain model, and no mix at all (None) means the weights the server started with.
"""

from __future__ import annotations

from dataclasses import dataclass

from presto_core.adapters import WEIGHT_RANGE, Adapter, check_weight, load_adapter
from presto_core.errors import PrestoError, shown

PLAIN = "none"


@dataclass(frozen=True)
class AdapterMix:
    """Loaded adapters (unique names) and their start-up weights, in the order given."""

    adapters: tuple[Adapter, ...] = ()
    defaults: tuple[float, ...] = ()

    @classmethod
    def load(cls, entries: list[tuple[str, float]] | None) -> "AdapterMix":
        """Read and verify each (adapter folder, weight); PrestoError for a bad folder or weight, or
        two adapters with the same name (the mix names them)."""
        adapters, weights, seen = [], [], {}
        for path, weight in entries or []:
            a = load_adapter(path)
            if a.name in seen:
                raise PrestoError(f"two adapters are both named {a.name!r} ({seen[a.name]} and {a.path}); "
                                  "rename one in its adapter.json")
            seen[a.name] = a.path
            adapters.append(a)
            weights.append(check_weight(weight, a.path))
        return cls(tuple(adapters), tuple(weights))

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.adapters]

    @property
    def plain(self) -> tuple[float, ...]:
        return (0.0,) * len(self.adapters)

    def parse(self, text) -> tuple[float, ...]:
        """A request's mix -> one weight per adapter. ``text``: None (the start-up weights), ``"none"``
        or ``""`` (plain), or ``"name:weight, ..."`` (a bare name means weight 1). PrestoError naming the
        adapters served and the weight range."""
        if text is None:
            return self.defaults
        if not isinstance(text, str):
            raise PrestoError(f"adapters must be text like 'name:weight, name:weight' or '{PLAIN}', "
                              f"got {shown(text)}")
        weights = dict.fromkeys(self.names, 0.0)
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items in ([], [PLAIN]):
            return self.plain
        named = set()
        for item in items:
            name, _, w = item.rpartition(":") if ":" in item else (item, "", "1")
            name = name.strip()
            if name not in weights:
                have = ", ".join(repr(n) for n in self.names) if self.names else "none (start the app with " \
                                                                                 "--adapter DIR[:WEIGHT])"
                raise PrestoError(f"unknown adapter {name!r}; this server's adapters: {have}")
            if name in named:
                raise PrestoError(f"adapter {name!r} is named twice in {text!r}")
            named.add(name)
            weights[name] = check_weight(w.strip(), f"adapter {name!r}")
        return tuple(weights[n] for n in self.names)

    def format(self, weights: tuple[float, ...]) -> str:
        """The text form of ``weights`` (what :meth:`parse` reads back); ``"none"`` when all are 0."""
        on = [f"{n}:{w:g}" for n, w in zip(self.names, weights) if w > 0]
        return ", ".join(on) if on else PLAIN

    def pairs(self, weights: tuple[float, ...]) -> list[tuple[Adapter, float]]:
        """(adapter, weight) for the adapters switched on, for PrestoPipeline.set_adapters."""
        return [(a, w) for a, w in zip(self.adapters, weights) if w > 0]

    def describe(self, weights: tuple[float, ...]) -> str:
        """Words for a page title: 'calypso 0.8 + rock 1' or 'plain'."""
        on = [f"{n} {w:g}" for n, w in zip(self.names, weights) if w > 0]
        return " + ".join(on) if on else "plain"


SLIDER_RANGE = WEIGHT_RANGE
