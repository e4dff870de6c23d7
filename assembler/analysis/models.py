"""The networks `rank` compares: candidates and the target, each named on the command line as
a spec file or a checkpoint directory, optionally `:NETWORK`.

A spec with `train` sections is trained on demand and cached, exactly as `use` does
(`assembler.train.run.ensure_trained`); a spec without any is compiled with seed 0 and
ranked as it is (an untrained network, noted as such). Layers are bindings whose value is a
feature map [C, H, W] or a vector [D].
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import fx

from ..errors import DataError, Diagnostic, SpecError, did_you_mean

__all__ = ["Model", "load_model", "feature_layers", "encoder_layer", "from_assembly"]


@dataclass
class Model:
    """One network of a compiled Assembly, as rank sees it."""

    label: str  # as the user named it: `source.net`, `runs/cnn`, `categories.net:three`
    asm: object  # assembler.Assembly
    network: str
    notes: list[str] = field(default_factory=list)  # e.g. "untrained"

    @property
    def checked(self):
        return self.asm.checked.networks[self.network]

    def layers(self) -> list[str]:
        return feature_layers(self.asm.checked, self.network)

    def encoder(self) -> str:
        return encoder_layer(self.asm.checked, self.network)

    def shape(self, layer: str) -> tuple[int, ...]:
        return tuple(self.checked.shape(layer))

    def tapped(self, layers) -> fx.GraphModule:
        return self.asm.network(self.network, taps=tuple(layers))


def from_assembly(asm, network: str | None = None, label: str | None = None) -> Model:
    """A Model of an Assembly already in memory (for scripts and tests)."""
    name = network or asm.names[0]
    if name not in asm.checked.networks:
        raise KeyError(f"no network '{name}'; networks: {', '.join(asm.names)}")
    return Model(label or name, asm, name)


def feature_layers(checked, network: str) -> list[str]:
    """Bindings whose value is a feature map or a vector, in the network's order."""
    net = checked.networks[network]
    position = {n.name: i for i, n in enumerate(net.nodes)}
    names = [b for b in net.bindings if b not in net.inputs and len(net.shape(b)) in (1, 3)]
    return sorted(names, key=lambda b: position[net.bindings[b]])


def encoder_layer(checked, network: str) -> str:
    """The layer DEPARA's paper calls the encoder's output: the last feature binding that is
    not an output of the network (the last one when every one is)."""
    net = checked.networks[network]
    layers = feature_layers(checked, network)
    if not layers:
        raise SpecError(Diagnostic(f"network '{network}' has no binding with a feature map or vector to rank",
                                   checked.filename))
    inner = [b for b in layers if b not in net.outputs]
    return (inner or layers)[-1]


def split_reference(ref: str) -> tuple[Path, str | None]:
    """`path` or `path:network` (the path wins when a file or folder of that name exists)."""
    if Path(ref).exists() or ":" not in ref:
        return Path(ref), None
    path, _, network = ref.rpartition(":")
    return Path(path), network or None


def load_model(ref: str, flag: str, *, quiet: bool = False) -> Model:
    """Load `ref` (named by command-line `flag`): a checkpoint directory or a spec file,
    trained on demand when it has train sections."""
    from ..checkpoint import is_checkpoint, restore
    path, network = split_reference(ref)
    if not path.exists():
        raise SpecError(Diagnostic(f"{flag} {ref}: no such spec file or checkpoint directory", flag,
                                   hint="give a .net file or a checkpoint directory, optionally :NETWORK"))
    notes: list[str] = []
    if path.is_dir():
        if not is_checkpoint(path):
            raise SpecError(Diagnostic(f"{flag} {ref}: the folder is not a checkpoint (no meta.json and spec.net)",
                                       str(path), hint="give a checkpoint written by 'assembler train'"))
        asm = restore(path)
        default = (asm.meta.get("train", {}).get("networks") or asm.names)[0]
    else:
        asm, default, notes = _from_spec(path, quiet)
    name = network or default
    if name not in asm.checked.networks:
        raise SpecError(Diagnostic(f"{flag} {ref}: no network '{name}'", str(path),
                                   hint=did_you_mean(name, asm.checked.networks) or
                                   f"networks: {', '.join(asm.checked.networks)}"))
    if len(asm.checked.networks[name].inputs) != 1:
        raise SpecError(Diagnostic(f"{flag} {ref}: network '{name}' takes {len(asm.checked.networks[name].inputs)} "
                                   "inputs; rank probes networks with one input", str(path)))
    label = ref if network or len(asm.checked.networks) == 1 else f"{ref}:{name}"
    return Model(label, asm, name, notes + list(asm.warnings))


def _from_spec(path: Path, quiet: bool):
    from ..assemble import compile as compile_spec  # imported blocks get their trained weights
    from ..checkpoint import restore
    from ..resolve import check, read
    from ..train.run import ensure_trained
    spec = read(path)
    check(spec)  # a bad spec is reported before anything trains
    trained = ensure_trained(path, quiet=quiet)  # trains its imports first, then itself
    if trained is not None:
        asm = restore(trained)
        return asm, (asm.meta.get("train", {}).get("networks") or asm.names)[0], []
    asm = compile_spec(spec, seed=0)
    note = [] if spec.uses else [f"{os.path.relpath(path)} has no train section: ranked with its initial "
                                 "weights (seed 0)"]
    return asm, asm.names[0], note


def check_fits(model: Model, probe, flag: str) -> None:
    """Raise a DataError (at --probe) unless the probe images fit the model's input."""
    net = model.checked
    (name, shape), = net.inputs.items()
    if tuple(probe.x.shape[1:]) != tuple(shape):
        raise DataError(Diagnostic(f"--probe {probe.name} gives images of shape {list(probe.x.shape[1:])} but "
                                   f"{model.label} ({flag}) takes {name}: {list(shape)}", "--probe",
                                   hint="probe with data of the candidates' input shape"))
