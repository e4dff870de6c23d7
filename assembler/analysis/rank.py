"""Rank candidate networks, and their layers, for transfer to the task of a probe set.

For every candidate and every chosen layer one pass over the probes (`features.stream`)
gives the layer's features and, for DEPARA, its attribution maps; then
- DEPARA compares the layer's graph with the target model's graph at its encoder layer
  (s_V + lambda * s_E, eqs. 3-5); layer selection is the argmax over layers (eq. 6);
- LogME scores the layer's features against the probe labels;
- LEEP scores the candidate's own classifier (its first output) against the probe labels,
  once per candidate: it has no notion of layers.

Model selection follows the paper (eq. 5): a candidate's score is the score of its encoder
layer, the last feature layer before its output (for LEEP, its LEEP); only when that layer is
not among those scored (`layers` names others) is it the best scored layer's. Layer selection
is the best layer per method (eq. 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import DataError, Diagnostic, SpecError, did_you_mean
from .depara import RankedEdges, Similarity, edges
from .features import MAX_DIM, SCALARS, Probe, stream
from .leep import leep
from .logme import logme
from .models import Model

__all__ = ["METHODS", "Settings", "LayerScore", "CandidateScore", "Ranking", "rank", "TargetGraph", "target_graph"]

METHODS = ("depara", "logme", "leep")
LAYERED = ("depara", "logme")  # methods that score each layer


@dataclass(frozen=True)
class Settings:
    """How to rank; the defaults are the command line's."""

    methods: tuple[str, ...] = METHODS  # in order of precedence: the first sorts the results
    layers: str | tuple[str, ...] = "auto"  # "auto" (every feature layer), "encoder", or binding names
    lam: float = 1.0  # DEPARA's weight of the edge term: s = s_V + lam * s_E
    scalar: str = "norm"  # s(F) of DEPARA's nodes: "norm" (paper, eq. 3) or "mean" (reference code)
    target_layer: str | None = None  # the target's layer DEPARA compares with (default: its encoder)
    batch: int = 100  # probes per forward pass
    max_dim: int = MAX_DIM  # features kept per probe and layer (larger maps are average-pooled)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(self.methods)}")
        if self.scalar not in SCALARS:
            raise ValueError(f"scalar must be one of {', '.join(SCALARS)}, got '{self.scalar}'")
        if self.lam < 0 or self.batch < 1 or self.max_dim < 1:
            raise ValueError("lam must be >= 0, batch and max_dim >= 1")

    @property
    def primary(self) -> str:
        return self.methods[0]


@dataclass
class LayerScore:
    """One candidate layer's scores."""

    layer: str
    shape: tuple[int, ...]
    dims: int  # length of the feature vector the scores saw (after pooling)
    scores: dict[str, float] = field(default_factory=dict)  # "depara", "logme"
    depara: Similarity | None = None  # s_V and s_E behind the DEPARA score


@dataclass
class CandidateScore:
    """One candidate's layers and its model-level scores."""

    label: str
    network: str
    encoder: str  # the layer the paper's model selection compares
    layers: list[LayerScore]
    leep: float | None = None
    notes: list[str] = field(default_factory=list)

    def best(self, method: str) -> LayerScore | None:
        """The layer a per-layer method selects (eq. 6); None for LEEP."""
        rows = [r for r in self.layers if method in r.scores]
        return max(rows, key=lambda r: r.scores[method]) if rows else None

    def model_layer(self, method: str) -> LayerScore | None:
        """The layer whose score ranks the candidate: its encoder when scored, else the best."""
        at_encoder = [r for r in self.layers if r.layer == self.encoder and method in r.scores]
        return at_encoder[0] if at_encoder else self.best(method)

    def score(self, method: str) -> float | None:
        """The model-selection score: the encoder layer's (eq. 5), or LEEP."""
        if method == "leep":
            return self.leep
        row = self.model_layer(method)
        return row.scores[method] if row else None


@dataclass
class TargetGraph:
    """The target model's DEPARA at one layer: its attribution maps and ranked edges."""

    label: str
    layer: str
    nodes: torch.Tensor  # [n, C, H, W] attribution maps of the probes
    edges: RankedEdges


@dataclass
class Ranking:
    """The result: candidates best first by the primary method."""

    candidates: list[CandidateScore]
    settings: Settings
    probe: Probe
    target: TargetGraph | None


def rank(candidates: Sequence[Model], probe: Probe, target: Model | None = None,
         settings: Settings = Settings()) -> Ranking:
    """Score every candidate's layers on the probe set and sort the candidates."""
    if "depara" in settings.methods and target is None:
        raise ValueError("DEPARA needs a target model trained on the probe task")
    labelled = [m for m in settings.methods if m != "depara"]
    if labelled and probe.y.unique().numel() < 2:
        need = f"{' and '.join(labelled)} {'needs' if len(labelled) == 1 else 'need'} at least two classes"
        raise DataError(Diagnostic(f"--probe {probe.name}: every probe has the same label; {need}", "--probe",
                                   hint="probe with images of the target task's classes"))
    graph = target_graph(target, probe, settings) if "depara" in settings.methods else None
    results = [score_candidate(c, probe, graph, settings) for c in candidates]
    order = sorted(range(len(results)), key=lambda i: _sort_key(results[i], settings.primary, i))
    return Ranking([results[i] for i in order], settings, probe, graph)


def _sort_key(c: CandidateScore, method: str, index: int):
    value = c.score(method)
    return (value is None, -(value if value is not None else 0.0), index)  # missing scores last


def target_graph(target: Model, probe: Probe, settings: Settings) -> TargetGraph:
    """Attribution maps and edges of the target at its encoder layer (or `target_layer`)."""
    layer = settings.target_layer or target.encoder()
    if layer not in target.layers():
        raise SpecError(Diagnostic(f"--target-layer {layer}: the target {target.label} has no feature layer "
                                   f"'{layer}'", "--target-layer",
                                   hint=did_you_mean(layer, target.layers()) or
                                   f"its layers: {', '.join(target.layers())}"))
    s = stream(target.tapped([layer]), probe, [layer], batch=settings.batch, scalar=settings.scalar,
               keep_nodes=[layer], max_dim=settings.max_dim)
    return TargetGraph(target.label, layer, s.nodes[layer], RankedEdges(edges(s.features[layer])))


def score_candidate(model: Model, probe: Probe, graph: TargetGraph | None, settings: Settings) -> CandidateScore:
    """One pass over the probes for every chosen layer of a candidate, then each method."""
    layers = chosen_layers(model, settings.layers)
    s = stream(model.tapped(layers), probe, layers, batch=settings.batch,
               scalar=settings.scalar if graph is not None else None,
               reference=graph.nodes if graph is not None else None, max_dim=settings.max_dim)
    labels = probe.y.numpy()
    rows = []
    for k in layers:
        if not torch.isfinite(s.features[k]).all():
            raise SpecError(Diagnostic(f"{model.label}: layer '{k}' of network '{model.network}' gives NaN or "
                                       "infinite values on the probes", model.label,
                                       hint="the weights have diverged: retrain the network"))
        row = LayerScore(k, model.shape(k), int(s.features[k].shape[1]))
        if graph is not None:
            row.depara = Similarity(float(s.node_cosines[k].mean()), graph.edges.spearman(
                RankedEdges(edges(s.features[k]))))
            row.scores["depara"] = row.depara.score(settings.lam)
        if "logme" in settings.methods:
            row.scores["logme"] = logme(s.features[k].numpy(), labels)
        rows.append(row)
    result = CandidateScore(model.label, model.network, model.encoder(), rows, notes=list(model.notes))
    if "leep" in settings.methods:
        if s.probabilities is None:
            result.notes.append("no LEEP: its first output is not a vector of class scores")
        else:
            result.leep = leep(s.probabilities.numpy(), labels)
    return result


def chosen_layers(model: Model, layers: str | tuple[str, ...]) -> list[str]:
    """The candidate's layers to score: all feature layers, its encoder, or the named ones."""
    if layers == "auto":
        return model.layers()
    if layers == "encoder":
        return [model.encoder()]
    have = model.layers()
    for k in layers:
        if k not in have:
            what = (f"has no binding '{k}'" if k not in model.checked.bindings else
                    f"binding '{k}' is not a feature map or vector")
            raise SpecError(Diagnostic(f"--layers: {model.label} {what}", "--layers",
                                       hint=did_you_mean(k, have) or f"its layers: {', '.join(have)}"))
    return list(layers)
